#!/usr/bin/env bash
# Install everything the tests need (Debian packages, Helm v4, the locked .venv), then run the
# test suite, ruff and mypy. This is exactly what CI runs (.ci/run).
#
# All three checks always run, whatever the others found; the script exits non-zero if any of
# them failed and says which. Arguments go to pytest (e.g. `scripts/test.sh tests/unit -x`).
#
#   BUNDLER_TEST_WORKERS=N   pytest-xdist workers (default: 2; 0 runs in one process)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
bash scripts/setup.sh test || { echo "setup failed: nothing was tested" >&2; exit 1; }
export PATH="$PWD/.tools/bin:$PATH"

workers="${BUNDLER_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != 0 ]; then
    parallel=(-n "$workers")
fi

failed=()
started=$SECONDS
.venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@" || failed+=(pytest)
pytest_seconds=$((SECONDS - started))

.venv/bin/ruff format --check bundler tests bench examples || failed+=("ruff format")
.venv/bin/ruff check bundler tests bench examples || failed+=("ruff check")
# mypy strict: the package, then the tests. Test modules import each other by file name (as
# pytest puts their folders on sys.path), and there are two conftest.py files, so the
# integration folder is checked on its own.
.venv/bin/mypy || failed+=("mypy bundler")
MYPYPATH=tests:tests/unit:tests/integration .venv/bin/mypy --strict --explicit-package-bases \
    tests/conftest.py tests/harness tests/unit || failed+=("mypy tests/unit")
MYPYPATH=tests:tests/unit:tests/integration .venv/bin/mypy --strict --explicit-package-bases \
    tests/integration || failed+=("mypy tests/integration")

printf 'test suite: %d s wall on %s cores (%s), %d s in all\n' \
    "$pytest_seconds" "$(nproc)" "${parallel[*]:-one process}" "$SECONDS"
if [ "${#failed[@]}" -ne 0 ]; then
    printf 'FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
echo "all checks passed: pytest, ruff format, ruff check, mypy"
