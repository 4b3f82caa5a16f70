"""Secrets never leak: passphrases, passwords and tokens stay out of stdout, stderr, error
messages and tracebacks, whether the command fails or succeeds; private keys are 0600.

Every command runs as a user runs it (``python -m bundler.cli.main`` in a fresh process with a
private Docker config), and every byte it prints is searched for each secret, in the clear and
in the encodings it travels in (base64 ``user:password`` of a Docker config, a Basic header).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from copy_support import API_REF
from harness.registry import RegistryServer

PASSPHRASE = "pass-Phrase-7f3a91c2"
WRONG_PASSPHRASE = "wrong-Phrase-0d9e44b1"
WRONG_PASSWORD = "wrong-Passw0rd-c81f2e"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _encodings(secret: str, user: str | None = None) -> list[str]:
    forms = [secret, base64.b64encode(secret.encode()).decode()]
    if user is not None:
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


class Bundler:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.config_dir = home / "docker-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        scrubbed = {
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_CACHE_HOME",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
        }
        self.env = {k: v for k, v in os.environ.items() if k not in scrubbed}
        self.env.update(
            DOCKER_CONFIG=str(self.config_dir), XDG_CACHE_HOME=str(home / "cache"), NO_COLOR="1"
        )

    def __call__(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        env: dict[str, str] | None = None,
        code: str | None = None,
    ) -> Run:
        head = ["-c", code] if code is not None else ["-m", "bundler.cli.main"]
        proc = subprocess.run(
            [sys.executable, *head, *(str(a) for a in args)],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_clean(run: Run, *secrets: str) -> None:
    """No secret in any form, no traceback, at most one error line."""
    for secret in secrets:
        assert secret not in run.output, f"secret leaked:\n{run.output}"
    assert "Traceback" not in run.output, run.output
    assert 'File "' not in run.stderr, run.stderr
    assert "Bearer " not in run.output and "Basic " not in run.output, run.output
    assert len([line for line in run.stderr.splitlines() if line.strip()]) <= 1, run.stderr


@pytest.fixture
def bundler(tmp_path: Path) -> Bundler:
    return Bundler(tmp_path / "user")


@pytest.fixture
def key_pair(bundler: Bundler, tmp_path: Path) -> Path:
    prefix = tmp_path / "keys" / "signer"
    prefix.parent.mkdir()
    run = bundler(
        "keys",
        "generate",
        prefix,
        "--passphrase-env",
        "SIGNER_PASS",
        env={"SIGNER_PASS": PASSPHRASE},
    )
    assert run.code == 0, run.output
    assert_clean(run, *_encodings(PASSPHRASE))
    return prefix


# ------------------------------------------------------------------ keys
def test_generated_private_key_is_0600_and_public_key_0644(key_pair: Path) -> None:
    key = key_pair.with_name("signer.key")
    pub = key_pair.with_name("signer.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert PASSPHRASE.encode() not in key.read_bytes()


def test_generated_key_is_0600_even_under_a_permissive_umask(
    bundler: Bundler, tmp_path: Path
) -> None:
    code = "import os; os.umask(0); from bundler.cli.main import run; run()"
    run = bundler(
        "keys",
        "generate",
        tmp_path / "loose",
        "--passphrase-env",
        "P",
        env={"P": PASSPHRASE},
        code=code,
    )
    assert run.code == 0, run.output
    assert stat.S_IMODE((tmp_path / "loose.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("how", ["env", "file"])
def test_wrong_passphrase_for_keys_inspect_names_no_secret(
    how: str, bundler: Bundler, key_pair: Path, tmp_path: Path
) -> None:
    key = key_pair.with_name("signer.key")
    if how == "env":
        run = bundler(
            "keys",
            "inspect",
            key,
            "--passphrase-env",
            "SIGNER_PASS",
            env={"SIGNER_PASS": WRONG_PASSPHRASE},
        )
    else:
        secret_file = tmp_path / "pass.txt"
        secret_file.write_text(WRONG_PASSPHRASE + "\nsecond line\n")
        run = bundler("keys", "inspect", key, "--passphrase-file", secret_file)
    assert run.code == 13, run.output
    assert run.stderr.startswith("error: ")
    assert_clean(run, *_encodings(WRONG_PASSPHRASE), *_encodings(PASSPHRASE))


def test_right_passphrase_for_keys_inspect_prints_no_secret(
    bundler: Bundler, key_pair: Path
) -> None:
    run = bundler(
        "keys",
        "inspect",
        key_pair.with_name("signer.key"),
        "-o",
        "json",
        "--passphrase-env",
        "SIGNER_PASS",
        env={"SIGNER_PASS": PASSPHRASE},
    )
    assert run.code == 0, run.output
    assert_clean(run, *_encodings(PASSPHRASE))


@pytest.mark.parametrize("how", ["env", "file"])
def test_wrong_passphrase_for_sign_names_no_secret(
    how: str, bundler: Bundler, key_pair: Path, example_layout_copy: Path, tmp_path: Path
) -> None:
    key = key_pair.with_name("signer.key")
    source = f"oci:{example_layout_copy}:{API_REF}"
    if how == "env":
        run = bundler(
            "sign",
            source,
            "--key",
            key,
            "--passphrase-env",
            "SIGNER_PASS",
            env={"SIGNER_PASS": WRONG_PASSPHRASE},
        )
    else:
        secret_file = tmp_path / "pass.txt"
        secret_file.write_text(WRONG_PASSPHRASE + "\n")
        run = bundler("sign", source, "--key", key, "--passphrase-file", secret_file)
    assert run.code == 13, run.output
    assert_clean(run, *_encodings(WRONG_PASSPHRASE), *_encodings(PASSPHRASE))


def test_internal_error_while_the_passphrase_is_in_scope_prints_one_line_no_locals(
    bundler: Bundler, key_pair: Path
) -> None:
    # A bug deep inside key decryption (simulated): the CLI's last-resort handler must report
    # it in one line, without a traceback whose frames hold the passphrase.
    code = (
        "import sys; import bundler.adapters.crypto as c\n"
        "def boom(passphrase, salt, n, r, p): raise RuntimeError('simulated bug')\n"
        "c._scrypt = boom\n"
        "from bundler.cli.main import run; run()\n"
    )
    run = bundler(
        "keys",
        "inspect",
        key_pair.with_name("signer.key"),
        "--passphrase-env",
        "SIGNER_PASS",
        env={"SIGNER_PASS": PASSPHRASE},
        code=code,
    )
    assert run.code == 1, run.output
    assert run.stderr.startswith("internal error: RuntimeError: simulated bug")
    assert_clean(run, *_encodings(PASSPHRASE))


# ------------------------------------------------------------------ registries
def test_login_with_a_wrong_password_names_no_password(
    bundler: Bundler, tls_registry: RegistryServer
) -> None:
    assert tls_registry.ca_path is not None
    run = bundler(
        "login",
        tls_registry.host,
        "-u",
        "tester",
        "--password-stdin",
        "--ca-file",
        tls_registry.ca_path,
        "--registry-config",
        bundler.config_dir,
        input=WRONG_PASSWORD + "\n",
    )
    assert run.code == 4, run.output
    assert_clean(run, *_encodings(WRONG_PASSWORD, "tester"))
    config = bundler.config_dir / "config.json"
    assert not config.exists() or WRONG_PASSWORD not in config.read_text()


def test_login_with_the_right_password_prints_no_password(
    bundler: Bundler, tls_registry: RegistryServer
) -> None:
    assert tls_registry.ca_path is not None and tls_registry.password is not None
    run = bundler(
        "login",
        tls_registry.host,
        "-u",
        "tester",
        "--password-stdin",
        "--ca-file",
        tls_registry.ca_path,
        "--registry-config",
        bundler.config_dir,
        input=tls_registry.password + "\n",
    )
    assert run.code == 0, run.output
    assert_clean(run, *_encodings(tls_registry.password, "tester"))
    config = bundler.config_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def _docker_config(bundler: Bundler, registry: RegistryServer, password: str) -> None:
    auth = base64.b64encode(f"tester:{password}".encode()).decode()
    (bundler.config_dir / "config.json").write_text(
        json.dumps({"auths": {registry.host: {"auth": auth}}})
    )


def test_copy_to_the_token_registry_with_bad_credentials_names_no_secret(
    bundler: Bundler, token_registry: RegistryServer, example_layout: Path
) -> None:
    _docker_config(bundler, token_registry, WRONG_PASSWORD)
    run = bundler(
        "copy",
        "--from",
        f"oci:{example_layout}:{API_REF}",
        "--to",
        token_registry.ref("secrets/api:1"),
        "-o",
        "json",
    )
    assert run.code == 4, run.output
    assert "tester" in run.stderr  # the user is named; the password is not
    assert_clean(run, *_encodings(WRONG_PASSWORD, "tester"))


def test_successful_copy_through_the_token_registry_prints_no_secret(
    bundler: Bundler, token_registry: RegistryServer, example_layout: Path, tmp_path: Path
) -> None:
    assert token_registry.password is not None
    _docker_config(bundler, token_registry, token_registry.password)
    ref = token_registry.ref("secrets/ok:1")
    run = bundler("copy", "--from", f"oci:{example_layout}:{API_REF}", "--to", ref, "-o", "json")
    assert run.code == 0, run.output
    back = bundler("copy", "--from", ref, "--to", f"oci:{tmp_path / 'back'}:x")
    assert back.code == 0, back.output
    for result in (run, back):
        assert_clean(result, *_encodings(token_registry.password, "tester"))
