#!/usr/bin/env bash
# The test suite (without the tests marked slow): set up the environment if needed, then run pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/python -m pytest "$@"
