#!/usr/bin/env bash
# Train on a PBS cluster (PBS Pro, OpenPBS): one torchrun per node, joined by c10d rendezvous on the first
# node of $PBS_NODEFILE. Rerunnable (-r y): a rerun job finds out_dir's checkpoint and resumes from it.
#   qsub -l select=4:ngpus=8 -v CONFIG=config/finetune_1b_fsdp.py,OUT_DIR=out-1b,ARGS="--init_from=models/llama-3.2-1b" scripts/pbs.sh
# Environment (all optional): CONFIG, ARGS (more train.py options), OUT_DIR, GPUS_PER_NODE, PORT, PYTHON,
# LAUNCHER (how to start one process per node: PBS Pro's mpiexec by default; OpenMPI: "mpirun -np N --npernode 1").
# ARGS and LAUNCHER are split on spaces into words, and nothing more: no quotes, no globbing, never run as shell
# code (a value with a space goes in a config file, CONFIG).
#PBS -N pubmed-gpt
#PBS -l select=2:ngpus=8
#PBS -l walltime=24:00:00
#PBS -r y
#PBS -j oe
set -euo pipefail
set -f  # ARGS's and LAUNCHER's words are never globbed: '*' or '[1]' in a value reaches train.py as it is
cd "${PBS_O_WORKDIR:-.}"
CONFIG=${CONFIG:-config/finetune_1b_fsdp.py}
OUT_DIR=${OUT_DIR:-out-pbs}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -s "${PBS_NODEFILE:-}" ]; then
  echo "error: \$PBS_NODEFILE (${PBS_NODEFILE:-unset}) names no nodes: submit this script with qsub" >&2
  exit 2
fi
NNODES=$(sort -u "$PBS_NODEFILE" | wc -l)
HEAD=$(head -n 1 "$PBS_NODEFILE")
LAUNCHER=${LAUNCHER:-mpiexec -n $NNODES --ppn 1}
RESUME=""
if [ -e "$OUT_DIR/ckpt.pt" ] || [ -e "$OUT_DIR/ckpt.dcp" ]; then RESUME="--init_from=resume"; fi

# shellcheck disable=SC2086  # LAUNCHER and ARGS are lists of words
$LAUNCHER "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="${PBS_JOBID%%.*}" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:$PORT" \
    train.py "$CONFIG" ${ARGS:-} --out_dir="$OUT_DIR" $RESUME
