#!/usr/bin/env bash
# Set-up command 2: the whole test suite, in the same .venv as the demo. Extra args go to pytest.
REQUIREMENTS=requirements-dev.txt source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pytest -q "$@"
