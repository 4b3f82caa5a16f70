#!/usr/bin/env bash
# Install everything the tests need (Debian packages, Helm v4, .venv), then run the test suite,
# ruff and mypy. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
export PATH="$PWD/.tools/bin:$PATH"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
.venv/bin/ruff check bundler tests bench examples
.venv/bin/mypy
echo "lint: ruff and mypy clean"
