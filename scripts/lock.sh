#!/usr/bin/env bash
# Regenerate the dependency lock (ADR 0008) from pyproject.toml:
#
#   requirements/run.txt   [project] dependencies and the [pkcs11] extra (token keys)
#   requirements/test.txt  the same pins plus the [test] extra
#   requirements/uv.txt    the lock tool itself (uv), from requirements/uv.in
#
# Every pin carries the sha256 of every file of that release (sdist and all wheels), so one
# lock serves Python 3.11+ on Linux x86_64 and aarch64 alike (`--universal`). Choices that are
# the lock's and not the code's (e.g. typer<0.29) live in requirements/constraints.in.
#
#   scripts/lock.sh                              keep current pins where pyproject still allows
#   scripts/lock.sh --upgrade                    newest allowed version of everything
#   scripts/lock.sh --upgrade-package cryptography   just that one (repeatable)
#
# Extra arguments go to `uv pip compile` for run.txt and test.txt. Then run
# `bash scripts/setup.sh test` to bring .venv to the new lock, and commit requirements/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-python3}"
UV_VENV="${REPO_ROOT}/.tools/uv"
UV="${UV_VENV}/bin/uv"

log() { printf '==> %s\n' "$*" >&2; }

want_uv="$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.in)"
if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$want_uv" ]; then
    log "installing uv ${want_uv} into ${UV_VENV#"$REPO_ROOT"/}"
    [ -x "${UV_VENV}/bin/python" ] || "$PYTHON" -m venv "$UV_VENV"
    if [ -f requirements/uv.txt ] && grep -q "^uv==${want_uv} " requirements/uv.txt; then
        "${UV_VENV}/bin/python" -m pip install -q --disable-pip-version-check \
            --require-hashes --no-deps -r requirements/uv.txt
    else  # uv.in was bumped: take that version once, uv.txt is rewritten below
        "${UV_VENV}/bin/python" -m pip install -q --disable-pip-version-check "uv==${want_uv}"
    fi
fi

common=(--universal --python-version 3.11 --generate-hashes --quiet
    --custom-compile-command "scripts/lock.sh")

log "requirements/uv.txt"
"$UV" pip compile "${common[@]}" requirements/uv.in -o requirements/uv.txt
log "requirements/run.txt"
"$UV" pip compile "${common[@]}" -c requirements/constraints.in "$@" \
    pyproject.toml --extra pkcs11 -o requirements/run.txt
# test.txt is constrained by run.txt: the packages both install are pinned identically.
log "requirements/test.txt"
"$UV" pip compile "${common[@]}" -c requirements/constraints.in -c requirements/run.txt "$@" \
    pyproject.toml --extra pkcs11 --extra test -o requirements/test.txt
log "done; now: bash scripts/setup.sh test"
