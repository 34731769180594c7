#!/usr/bin/env bash
# Set-up command 1, the demo: venv + requirements, a small slice of PubMed, a few minutes of CPU
# training, val loss / bits per byte, two samples.
#   PUBMED_INPUT=DIR   prepare local .xml/.xml.gz files instead of downloading (no network)
#   DEMO_FILES=N       baseline files to download when PUBMED_INPUT is unset (default 1)
#   DEMO_SECONDS=S     training budget in seconds (default 240)
#   DEMO_DIR=DIR       where data and checkpoints go (default demo/)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
demo="${DEMO_DIR:-demo}" files="${DEMO_FILES:-1}" seconds="${DEMO_SECONDS:-240}"
if [ -n "${PUBMED_INPUT:-}" ]; then
  source_args=(--input="$PUBMED_INPUT")
else
  source_args=(--max_files="$files" --raw_dir="$demo/raw")
fi
echo "== 1/3 prepare: ${PUBMED_INPUT:-first $files NCBI baseline file(s) (offline: PUBMED_INPUT=DIR of .xml/.xml.gz files)} -> $demo/data"
python data/pubmed/prepare.py "${source_args[@]}" --out_dir="$demo/data" --vocab_size=8192
echo "== 2/3 train config/train_pubmed_cpu.py for $seconds s -> $demo/out (a re-run of the demo replaces its last run)"
python train.py config/train_pubmed_cpu.py --data_dir="$demo/data" --out_dir="$demo/out" --overwrite=True \
  --max_seconds="$seconds"
echo "== 3/3 sample two abstracts"
python sample.py --out_dir="$demo/out" --num_samples=2 --max_new_tokens=120 --seed=1 \
  --prompt="Metformin is"
