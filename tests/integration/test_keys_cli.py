"""`bundler keys` as a user runs it: files, modes, exit codes, and no passphrase in output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

PASSPHRASE = "correct-horse-battery-staple-4711"


def bundler(
    *args: str | Path, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUNDLER_KEY_PASS": PASSPHRASE, **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert PASSPHRASE not in proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_generate_writes_both_files_with_their_modes(tmp_path: Path, key_type: str) -> None:
    proc = bundler(
        "keys",
        "generate",
        tmp_path / "vendor",
        "--type",
        key_type,
        "--passphrase-env",
        "BUNDLER_KEY_PASS",
    )
    assert proc.returncode == 0, proc.stderr
    key_path, pub_path = tmp_path / "vendor.key", tmp_path / "vendor.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert str(key_path) in proc.stdout and str(pub_path) in proc.stdout
    assert "key id: sha256:" in proc.stdout
    assert key_type in proc.stdout


def test_generate_and_inspect_json_agree_on_the_key_id(tmp_path: Path) -> None:
    made = bundler(
        "keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS", "-o", "json"
    )
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["algorithm"] == "ecdsa-p256"
    assert result["privateKey"] == str(tmp_path / "k.key")
    assert result["publicKey"] == str(tmp_path / "k.pub")

    public = bundler("keys", "inspect", tmp_path / "k.pub", "-o", "json")
    assert public.returncode == 0, public.stderr
    assert json.loads(public.stdout) == {
        "kind": "public",
        "algorithm": "ecdsa-p256",
        "keyId": result["keyId"],
    }

    private = bundler(
        "keys", "inspect", tmp_path / "k.key", "--passphrase-env", "BUNDLER_KEY_PASS", "-o", "json"
    )
    assert private.returncode == 0, private.stderr
    assert json.loads(private.stdout)["keyId"] == result["keyId"]


def test_passphrase_file_works_too(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    made = bundler("keys", "generate", tmp_path / "k", "--passphrase-file", tmp_path / "pass")
    assert made.returncode == 0, made.stderr
    shown = bundler("keys", "inspect", tmp_path / "k.key", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert shown.returncode == 0, shown.stderr
    assert "kind: private" in shown.stdout


def test_generate_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    (tmp_path / "k.key").write_text("precious")
    proc = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert proc.returncode == 2
    assert "already exists" in proc.stderr
    assert (tmp_path / "k.key").read_text() == "precious"
    assert not (tmp_path / "k.pub").exists()


def test_inspect_with_the_wrong_passphrase_exits_13(tmp_path: Path) -> None:
    assert (
        bundler(
            "keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS"
        ).returncode
        == 0
    )
    proc = bundler(
        "keys",
        "inspect",
        tmp_path / "k.key",
        "--passphrase-env",
        "WRONG_PASS",
        env_extra={"WRONG_PASS": "not-" + PASSPHRASE},
    )
    assert proc.returncode == 13
    assert "passphrase does not decrypt it" in proc.stderr
    assert proc.stdout == ""


def test_passphrase_env_that_is_not_set_is_a_usage_error(tmp_path: Path) -> None:
    proc = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "NO_SUCH_VAR_4711")
    assert proc.returncode == 2
    assert "NO_SUCH_VAR_4711 is not set" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_two_passphrase_sources_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text(PASSPHRASE)
    proc = bundler(
        "keys",
        "generate",
        tmp_path / "k",
        "--passphrase-env",
        "BUNDLER_KEY_PASS",
        "--passphrase-file",
        tmp_path / "pass",
    )
    assert proc.returncode == 2
    assert not (tmp_path / "k.key").exists()


def test_unknown_key_type_is_a_usage_error(tmp_path: Path) -> None:
    proc = bundler(
        "keys", "generate", tmp_path / "k", "--type", "rsa", "--passphrase-env", "BUNDLER_KEY_PASS"
    )
    assert proc.returncode == 2
    assert not (tmp_path / "k.key").exists()


def test_inspect_a_missing_file_exits_3(tmp_path: Path) -> None:
    proc = bundler("keys", "inspect", tmp_path / "nope.pub")
    assert proc.returncode == 3


def test_inspect_an_unencrypted_private_key_exits_13(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "plain.key").write_bytes(pem)
    proc = bundler(
        "keys", "inspect", tmp_path / "plain.key", "--passphrase-env", "BUNDLER_KEY_PASS"
    )
    assert proc.returncode == 13
    assert "encrypted at rest" in proc.stderr


def test_inspect_reads_cosigns_own_keys(tmp_path: Path, cosign_vectors: Path) -> None:
    vectors = cosign_vectors
    public = bundler("keys", "inspect", vectors / "containers-image" / "cosign.pub")
    assert public.returncode == 0, public.stderr
    assert "algorithm: ecdsa-p256" in public.stdout
    private = bundler(
        "keys",
        "inspect",
        vectors / "cosign" / "pemsigstorekey.pem",
        "--passphrase-env",
        "COSIGN_PASS",
        env_extra={"COSIGN_PASS": "hello"},
    )
    assert private.returncode == 0, private.stderr


def _signable(tmp_path: Path, synth: ModuleType) -> str:
    layout = tmp_path / "layout"
    synth.write_image(layout, "app:1", [synth.LayerSpec(seed="sign-me", size=64)])
    return f"oci:{layout}:app:1"


def test_sign_without_a_terminal_or_a_passphrase_source_says_how_to_give_one(
    tmp_path: Path, synth: ModuleType
) -> None:
    generated = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert generated.returncode == 0, generated.stderr
    sign = ["sign", _signable(tmp_path, synth), "--key", str(tmp_path / "k.key")]
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", *sign],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()  # no Python warning, no "Aborted!"
    assert "--passphrase-file" in line and "--passphrase-env" in line
    assert "COSIGN_PASSWORD" in line


def test_cosign_password_is_honoured_as_cosign_does(tmp_path: Path, synth: ModuleType) -> None:
    generated = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert generated.returncode == 0, generated.stderr
    signed = bundler(
        "sign",
        _signable(tmp_path, synth),
        "--key",
        tmp_path / "k.key",
        env_extra={"COSIGN_PASSWORD": PASSPHRASE},
    )
    assert signed.returncode == 0, signed.stderr
    assert "signed" in signed.stdout + signed.stderr


def test_verify_key_checks_a_plain_image_sign_signed_as_cosign_verify_does(
    tmp_path: Path, synth: ModuleType
) -> None:
    generated = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert generated.returncode == 0, generated.stderr
    image = _signable(tmp_path, synth)
    pub = tmp_path / "k.pub"
    unsigned = bundler("verify", image, "--key", pub)
    assert unsigned.returncode == 12, unsigned.stderr
    assert "step 2" in unsigned.stderr and "not a bundle" not in unsigned.stderr
    signed = bundler(
        "sign", image, "--key", tmp_path / "k.key", "--passphrase-env", "BUNDLER_KEY_PASS"
    )
    assert signed.returncode == 0, signed.stderr
    verified = bundler("verify", image, "--key", pub)
    assert verified.returncode == 0, verified.stderr
    assert "verified: a signed image, not a bundle; signed by k.pub (signer)" in verified.stdout
    doc = json.loads(bundler("verify", image, "--key", pub, "-o", "json").stdout)
    assert (doc["kind"], doc["verified"]) == ("image", True)
    assert [s["status"] for s in doc["steps"]] == [
        "not applicable", "passed", "not applicable", "passed", "passed", "not applicable"
    ]  # fmt: skip
    # A command that takes only bundles still refuses it, at step 1, and writes nothing.
    imported = bundler("import", image, "--to", f"oci:{tmp_path / 'in'}", "--key", pub)
    assert imported.returncode == 12, imported.stderr
    assert "step 1" in imported.stderr and "not a bundle" in imported.stderr
    assert not (tmp_path / "in" / "index.json").exists()


def test_the_passphrase_is_asked_for_on_the_terminal_without_echo(
    tmp_path: Path, synth: ModuleType
) -> None:
    """With a terminal and no passphrase source, sign asks on /dev/tty: nothing on stdout, no
    echo, and the key opens."""
    from harness.terminal import answer_prompt

    generated = bundler("keys", "generate", tmp_path / "k", "--passphrase-env", "BUNDLER_KEY_PASS")
    assert generated.returncode == 0, generated.stderr
    image = _signable(tmp_path, synth)
    env = {k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"}
    argv = [
        sys.executable,
        "-m",
        "bundler.cli.main",
        "sign",
        image,
        "--key",
        str(tmp_path / "k.key"),
    ]
    res = answer_prompt([*argv, "-o", "json"], env, b"Passphrase for ", PASSPHRASE.encode())
    assert res.returncode == 0, res.stderr.decode()
    assert PASSPHRASE.encode() not in res.terminal + res.stdout + res.stderr  # no echo, not printed
    assert json.loads(res.stdout)["signed"]  # stdout holds the JSON document alone
