"""PKCS#11 keys through the CLI, on real SoftHSM2 tokens made fresh for each test.

The example bundle is packed once (images from the synthetic layout); each test signs its own
copy with keys that `bundler keys generate --pkcs11` made on the token, and the exported public
keys verify it through the same code as key files. No PIN may appear in any output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from copy_support import BUNDLER, Cli, Result
from harness.registry import RegistryServer
from harness.softhsm import SoftHsm
from harness.terminal import answer_prompt
from pack_support import DEMO_CHART, layout_source, pack_cli, pack_ok

VENDOR_PIN = "vendor-Pin-73519"
SECOPS_PIN = "secops-Pin-28406"
PROMOTER_PIN = "promoter-Pin-61182"
PINS = (VENDOR_PIN, SECOPS_PIN, PROMOTER_PIN)
PIN_VAR = "BUNDLER_TEST_TOKEN_PIN"


@dataclass
class Tokens:
    """Fresh tokens ``release`` and ``secops`` and the CLI that sees exactly them."""

    hsm: SoftHsm
    cli: Cli
    keys: Path

    def run(self, *args: str | Path, pin: str | None = None, **env: str) -> Result:
        self.cli.env.pop(PIN_VAR, None)
        if pin is not None:
            self.cli.env[PIN_VAR] = pin
        saved = {name: self.cli.env.get(name) for name in env}
        self.cli.env.update(env)
        try:
            res = self.cli(*args)
        finally:
            for name, value in saved.items():
                if value is None:
                    self.cli.env.pop(name, None)
                else:
                    self.cli.env[name] = value
        for secret in PINS:
            assert secret not in res.stdout + res.stderr, res.describe()
        return res

    def generate(self, name: str, uri: str, pin: str, *flags: str) -> dict[str, str]:
        res = self.run(
            "keys",
            "generate",
            self.keys / name,
            "--pkcs11",
            uri,
            "--pin-env",
            PIN_VAR,
            "-o",
            "json",
            *flags,
            pin=pin,
        )
        assert res.returncode == 0, res.describe()
        doc: dict[str, str] = res.json
        return doc


@pytest.fixture(scope="module")
def unsigned_bundle(
    helm: str, example_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    home = tmp_path_factory.mktemp("pkcs11-bundle")
    archive = home / "unsigned.tar"
    cli = pack_cli(home / "user", helm)
    pack_ok(
        cli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", f"archive:{archive}"
    )
    return archive


@pytest.fixture
def tokens(helm: str, tmp_path: Path) -> Iterator[Tokens]:
    hsm = SoftHsm.make(tmp_path / "softhsm")
    if hsm is None:
        pytest.skip("softhsm2 is not installed (run scripts/setup.sh test as root)")
    hsm.init_token("release", VENDOR_PIN)
    hsm.init_token("secops", SECOPS_PIN)
    cli = pack_cli(tmp_path / "user", helm)
    for name in ("COSIGN_PKCS11_PIN", "COSIGN_PASSWORD", "COSIGN_PKCS11_MODULE_PATH"):
        cli.env.pop(name, None)
    cli.env.update(hsm.env)
    keys = tmp_path / "keys"
    keys.mkdir()
    yield Tokens(hsm, cli, keys)


@pytest.fixture
def bundle(unsigned_bundle: Path, tmp_path: Path) -> Path:
    path = tmp_path / "bundle.tar"
    shutil.copyfile(unsigned_bundle, path)
    return path


def write_policy(path: Path, vendor_pub: str, secops_pub: str) -> Path:
    path.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor-hsm\n    role: vendor\n    path: {vendor_pub}\n"
        f"  - name: secops-hsm\n    role: approval\n    path: {secops_pub}\n"
        "bundles:\n  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n"
        "      - role: vendor\n      - role: approval\n"
    )
    return path


def one_error_line(res: Result, code: int, *named: str) -> str:
    assert res.returncode == code, res.describe()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.describe()
    assert "Traceback" not in res.stderr
    for word in named:
        assert word in lines[0], res.describe()
    return lines[0]


VENDOR_URI = "pkcs11:token=release;object=vendor"
SECOPS_URI = "pkcs11:token=secops;object=approver"


def signed_and_approved(tokens: Tokens, bundle: Path, approver_type: str) -> Path:
    vendor = tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    secops = tokens.generate("secops", SECOPS_URI, SECOPS_PIN, "--type", approver_type)
    assert (vendor["algorithm"], secops["algorithm"]) == ("ecdsa-p256", approver_type)
    policy = write_policy(tokens.keys / "policy.yaml", vendor["publicKey"], secops["publicKey"])
    signed = tokens.run(
        "sign", f"archive:{bundle}", "--key", VENDOR_URI, "--pin-env", PIN_VAR, pin=VENDOR_PIN
    )
    assert signed.returncode == 0, signed.describe()
    assert vendor["keyId"] in signed.stdout
    approved = tokens.run(
        "approve",
        f"archive:{bundle}",
        "--key",
        SECOPS_URI,
        "--policy",
        policy,
        "--pin-env",
        PIN_VAR,
        "-o",
        "json",
        pin=SECOPS_PIN,
    )
    assert approved.returncode == 0, approved.describe()
    assert approved.json["policyMet"] is True
    return policy


# ---------------------------------------------------------------------------------- flow
@pytest.mark.parametrize("approver_type", ["ecdsa-p256", "ed25519"])
def test_token_signed_and_token_approved_bundle_meets_the_policy_of_the_exported_keys(
    tokens: Tokens, bundle: Path, approver_type: str
) -> None:
    policy = signed_and_approved(tokens, bundle, approver_type)
    verified = tokens.run("verify", f"archive:{bundle}", "--policy", policy, "-o", "json")
    assert verified.returncode == 0, verified.describe()
    report = verified.json
    assert {(s["key"], s["role"]) for s in report["bundle"]["signers"]} == {
        ("vendor-hsm", "vendor"),
        ("secops-hsm", "approval"),
    }, report
    # The vendor's exported key alone verifies the vendor signature, as a file key's would.
    alone = tokens.run("verify", f"archive:{bundle}", "--key", tokens.keys / "vendor.pub")
    assert alone.returncode == 0, alone.describe()


def test_a_policy_without_the_token_key_refuses_the_bundle(
    tokens: Tokens, bundle: Path, tmp_path: Path
) -> None:
    tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    other = tokens.generate("other", "pkcs11:token=release;object=other", VENDOR_PIN)
    signed = tokens.run(
        "sign", f"archive:{bundle}", "--key", VENDOR_URI, "--pin-env", PIN_VAR, pin=VENDOR_PIN
    )
    assert signed.returncode == 0, signed.describe()
    refused = tokens.run("verify", f"archive:{bundle}", "--key", other["publicKey"])
    assert refused.returncode == 12, refused.describe()


def test_pin_in_the_uri_or_a_pin_file_or_cosigns_variable_signs(
    tokens: Tokens, bundle: Path, tmp_path: Path
) -> None:
    made = tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    pin_file = tmp_path / "pin.txt"
    pin_file.write_text(VENDOR_PIN + "\n")
    for identity, flags, env in (
        ("one", ["--key", f"{VENDOR_URI}?pin-value={VENDOR_PIN}"], {}),
        ("two", ["--key", f"{VENDOR_URI}?pin-source=file:{pin_file}"], {}),
        ("three", ["--key", VENDOR_URI, "--pin-file", str(pin_file)], {}),
        ("four", ["--key", VENDOR_URI], {"COSIGN_PKCS11_PIN": VENDOR_PIN}),
    ):
        res = tokens.run("sign", f"archive:{bundle}", *flags, "--identity", identity, **env)
        assert res.returncode == 0, res.describe()
        assert made["keyId"] in res.stdout
    verified = tokens.run("verify", f"archive:{bundle}", "--key", made["publicKey"])
    assert verified.returncode == 0, verified.describe()


# ------------------------------------------------------------------------------ refusals
def test_a_wrong_pin_is_exit_13_in_one_line_and_writes_nothing(
    tokens: Tokens, bundle: Path
) -> None:
    tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    before = bundle.read_bytes()
    res = tokens.run(
        "sign", f"archive:{bundle}", "--key", VENDOR_URI, "--pin-env", PIN_VAR, pin=SECOPS_PIN
    )
    line = one_error_line(res, 13, "PIN", "release", "wrong")
    assert SECOPS_PIN not in line
    in_uri = tokens.run(
        "sign", f"archive:{bundle}", "--key", f"{VENDOR_URI}?pin-value={SECOPS_PIN}"
    )
    one_error_line(in_uri, 13, "PIN", "wrong")
    assert bundle.read_bytes() == before


def test_a_missing_module_is_exit_3_naming_it(tokens: Tokens, bundle: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-pkcs11.so"
    res = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        VENDOR_URI,
        "--pkcs11-module",
        missing,
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(res, 3, str(missing), "--pkcs11-module")
    not_a_module = tmp_path / "not-a-module.so"
    not_a_module.write_text("not a shared object\n")
    res = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        f"{VENDOR_URI}?module-path={not_a_module}",
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
        COSIGN_PKCS11_MODULE_PATH="",
    )
    one_error_line(res, 13, str(not_a_module), "cannot load")
    nothing = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        VENDOR_URI,
        pin=VENDOR_PIN,
        COSIGN_PKCS11_MODULE_PATH="",
    )
    one_error_line(nothing, 2, "--pkcs11-module", "COSIGN_PKCS11_MODULE_PATH")


def test_unknown_token_or_key_and_no_pin_are_clear(tokens: Tokens, bundle: Path) -> None:
    tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    res = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        "pkcs11:token=nope;object=vendor",
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(res, 13, "no token matches", "'release'", "'secops'")
    res = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        "pkcs11:token=release;object=absent",
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(res, 13, "no private key", "object=absent")
    no_pin = tokens.run("sign", f"archive:{bundle}", "--key", VENDOR_URI)  # stdin: no terminal
    one_error_line(no_pin, 2, "--pin-file", "COSIGN_PKCS11_PIN")
    both = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        f"{VENDOR_URI}?pin-value={VENDOR_PIN}",
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(both, 2, "one way")
    typo = tokens.run(
        "sign",
        f"archive:{bundle}",
        "--key",
        f"pkcs11:token=release;objekt=vendor?pin-value={VENDOR_PIN}",
    )
    one_error_line(typo, 2, "'objekt'")


def test_keys_generate_pkcs11_refuses_to_overwrite_and_leaves_the_token_as_it_was(
    tokens: Tokens,
) -> None:
    made = tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    assert made["keyUri"].startswith("pkcs11:token=release;object=vendor;id=%")
    assert Path(made["publicKey"]).read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    inspected = tokens.run("keys", "inspect", made["publicKey"], "-o", "json")
    assert inspected.json["keyId"] == made["keyId"]
    # The same label again: refused, and PREFIX.pub is not written.
    again = tokens.run(
        "keys",
        "generate",
        tokens.keys / "twice",
        "--pkcs11",
        VENDOR_URI,
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(again, 2, "already holds")
    assert not (tokens.keys / "twice.pub").exists()
    # An existing PREFIX.pub: refused before the token is touched, so the label stays free.
    (tokens.keys / "taken.pub").write_text("someone's key\n")
    taken = tokens.run(
        "keys",
        "generate",
        tokens.keys / "taken",
        "--pkcs11",
        "pkcs11:token=release;object=new",
        "--pin-env",
        PIN_VAR,
        pin=VENDOR_PIN,
    )
    one_error_line(taken, 2, "taken.pub", "already exists")
    assert (tokens.keys / "taken.pub").read_text() == "someone's key\n"
    tokens.generate("fresh", "pkcs11:token=release;object=new", VENDOR_PIN)
    # The key made under the explicit id is found by that id alone.
    by_id = tokens.generate("byid", "pkcs11:token=secops;object=k;id=%01%02", SECOPS_PIN)
    assert by_id["keyUri"] == "pkcs11:token=secops;object=k;id=%01%02"


# ------------------------------------------------------------------------------ promote
def test_promote_signs_the_record_with_a_token_key(
    tokens: Tokens, bundle: Path, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    policy = signed_and_approved(tokens, bundle, "ecdsa-p256")
    promoter = tokens.generate("promoter", "pkcs11:token=secops;object=promoter", SECOPS_PIN)
    prefix = f"pkcs11-{tmp_path.name[-12:].lower().replace('_', '-')}"
    to = plain_registry.ref(prefix)
    res = tokens.run(
        "promote",
        f"archive:{bundle}",
        "--to",
        to,
        "--policy",
        policy,
        "--key",
        "pkcs11:token=secops;object=promoter",
        "--pin-env",
        PIN_VAR,
        "--plain-http",
        "-o",
        "json",
        pin=SECOPS_PIN,
    )
    assert res.returncode == 0, res.describe()
    chart = plain_registry.ref(f"{prefix}/demo:1.0.0")
    record = tokens.run(
        "verify", chart, "--promotion", "--key", promoter["publicKey"], "--plain-http", "-o", "json"
    )
    assert record.returncode == 0, record.describe()
    assert json.loads(record.stdout)["kind"] == "BundlePromotion"
    stranger = tokens.run(
        "verify", chart, "--promotion", "--key", tokens.keys / "vendor.pub", "--plain-http"
    )
    assert stranger.returncode != 0, stranger.describe()


def test_the_pin_is_asked_for_on_the_terminal_without_echo(tokens: Tokens, bundle: Path) -> None:
    made = tokens.generate("vendor", VENDOR_URI, VENDOR_PIN)
    argv = [*BUNDLER, "sign", f"archive:{bundle}", "--key", VENDOR_URI]
    res = answer_prompt(argv, tokens.cli.env, b"PIN for token release: ", VENDOR_PIN.encode())
    assert res.returncode == 0, res.stderr.decode()
    assert VENDOR_PIN.encode() not in res.terminal + res.stdout + res.stderr  # not echoed
    assert b"PIN for token" not in res.stdout
    assert made["keyId"].encode() in res.stdout
