#!/usr/bin/env bash
# Set-up command 2: the whole test suite on every core, in the same .venv as the demo. Extra args go to pytest
# (the quick loop: bash scripts/test.sh -m "not slow"; one process: -n 0).
REQUIREMENTS=requirements-dev.txt source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pytest -q -n auto --dist worksteal "$@"
