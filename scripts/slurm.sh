#!/usr/bin/env bash
# Train on a SLURM cluster: one torchrun per node, joined by c10d rendezvous on the first node. The job is
# requeued 5 minutes before its time limit; each start finds out_dir's checkpoint and resumes from it.
#   CONFIG=config/finetune_1b_fsdp.py ARGS="--init_from=models/llama-3.2-1b --data_dir=data/pubmed-llama" \
#       OUT_DIR=out-1b sbatch --nodes=4 scripts/slurm.sh
# Environment (all optional): CONFIG, ARGS (more train.py options), OUT_DIR, GPUS_PER_NODE, PORT, PYTHON.
# ARGS is split on spaces into train.py's arguments, and nothing more: no quotes, no globbing, never run as shell
# code (a value with a space goes in a config file, CONFIG).
#SBATCH --job-name=pubmed-gpt
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output=slurm-%j.out
set -euo pipefail
set -f  # ARGS's words are never globbed: '*' or '[1]' in a value reaches train.py as it is
cd "${SLURM_SUBMIT_DIR:-.}"
CONFIG=${CONFIG:-config/finetune_1b_fsdp.py}
OUT_DIR=${OUT_DIR:-out-slurm}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-.venv/bin/python}
if [ -z "${SLURM_JOB_NODELIST:-}" ] || [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "error: no SLURM job here (\$SLURM_JOB_NODELIST or \$SLURM_JOB_ID unset): submit this script with sbatch" >&2
  exit 2
fi
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # sed reads it all: no SIGPIPE
RESUME=""
if [ -e "$OUT_DIR/ckpt.pt" ] || [ -e "$OUT_DIR/ckpt.dcp" ]; then RESUME="--init_from=resume"; fi

# near the time limit SLURM signals this script (not the training): requeue. SLURM then sends SIGTERM to the
# job's processes: train.py finishes its step, evaluates, writes its checkpoint and exits, if that fits in
# SLURM's KillWait (30 s by default; else the last periodic checkpoint counts); the job starts again from it
trap 'echo "time limit near: requeueing job $SLURM_JOB_ID"; scontrol requeue "$SLURM_JOB_ID"' USR1

# shellcheck disable=SC2086  # ARGS is a list of options, split on spaces
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc_per_node="$GPUS_PER_NODE" --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:$PORT" \
    train.py "$CONFIG" ${ARGS:-} --out_dir="$OUT_DIR" $RESUME &
TRAINING=$!
wait $TRAINING || wait $TRAINING  # the trap interrupts the first wait
