# Sourced by demo.sh and test.sh: create .venv (once) and install the requirements into it.
# PYTHON picks the interpreter (default python3, 3.10+). Set TORCH_SPEC to pin torch,
# e.g. TORCH_SPEC="torch==2.13.0" for a CPU wheel already on disk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# one resolver pass: TORCH_SPEC (if set) is installed with the requirements, so pip never picks another torch
.venv/bin/python -m pip install -q --disable-pip-version-check ${TORCH_SPEC:+"$TORCH_SPEC"} -r "${REQUIREMENTS:-requirements.txt}"
export PATH="$PWD/.venv/bin:$PATH"
