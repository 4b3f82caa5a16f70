"""Signing with a corporate PKI certificate, verified against a policy that trusts only the CA
and an identity: through the command line, on a bundle packed from the example."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from copy_support import Cli
from harness.certs import CodeSigningPki, generate_code_signing_pki
from test_cli_json import check

REPO_ROOT = Path(__file__).resolve().parents[2]
PASS_VAR = "BUNDLER_TEST_KEY_PASS"
POLICY = """apiVersion: bundler.dev/v1
kind: TrustPolicy
authorities:
  - name: corp
    role: vendor
    roots: {root}
    identities:
      - email: {email}
bundles:
  - name: demo
    require:
      - role: vendor
"""


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, synth: ModuleType, helm: str
) -> tuple[Cli, Path, CodeSigningPki]:
    """An unsigned example bundle (oci:bundle), a key pair, and a two-level PKI."""
    home = tmp_path_factory.mktemp("certified")
    shutil.copytree(REPO_ROOT / "examples", home / "examples")
    synth.example_set(home / "out" / "images")
    cli = Cli(home / "user")
    cli.env["PATH"] = os.pathsep.join([str(Path(helm).parent), cli.env["PATH"]])
    cli.env[PASS_VAR] = "release passphrase"
    packed = cli("pack", home / "examples" / "bundle.yaml", "--to", f"oci:{home / 'bundle'}")
    assert packed.returncode == 0, packed.describe()
    keys = cli("keys", "generate", home / "release", "--passphrase-env", PASS_VAR)
    assert keys.returncode == 0, keys.describe()
    return cli, home, generate_code_signing_pki(home / "pki")


def _copy(home: Path, name: str) -> str:
    shutil.copytree(home / "bundle", home / name)
    return f"oci:{home / name}"


def _sign(cli: Cli, home: Path, bundle: str, *flags: str | Path) -> None:
    res = cli("sign", bundle, "--key", home / "release.key", "--passphrase-env", PASS_VAR, *flags)
    assert res.returncode == 0, res.describe()


def _policy(home: Path, pki: CodeSigningPki, email: str, name: str) -> Path:
    path = home / f"{name}.yaml"
    path.write_text(POLICY.format(root=pki.root, email=email))
    return path


def test_a_bundle_signed_with_a_pki_certificate_passes_a_policy_trusting_only_the_ca(
    home: tuple[Cli, Path, CodeSigningPki],
) -> None:
    cli, root, pki = home
    bundle = _copy(root, "signed-pki")
    leaf = pki.certify(root / "release.pub", "release@vendor.example", root / "release.crt")
    _sign(cli, root, bundle, "--certificate", leaf, "--certificate-chain", pki.intermediate)
    policy = _policy(root, pki, "release@vendor.example", "pki-policy")
    verified = cli("verify", bundle, "--policy", policy)
    assert verified.returncode == 0, verified.describe()
    assert "verified: demo 1.0.0" in verified.stdout
    assert "corp:release@vendor.example (vendor)" in verified.stdout
    shown = cli("inspect", bundle)
    assert "certificate release@vendor.example issued by " in shown.stdout, shown.describe()
    described = check("keys-inspect-result.schema.json", cli("keys", "inspect", leaf, "-o", "json"))
    assert described["kind"] == "certificate" and described["emails"] == ["release@vendor.example"]
    assert "signing intermediate" in described["issuer"]
    other = cli("verify", bundle, "--policy", _policy(root, pki, "else@vendor.example", "other"))
    assert other.returncode == 12, other.describe()
    assert "step 2" in other.error_line and "not one trusted" in other.error_line


def test_without_its_chain_the_certificate_reaches_no_trusted_root(
    home: tuple[Cli, Path, CodeSigningPki],
) -> None:
    cli, root, pki = home
    bundle = _copy(root, "signed-no-chain")
    leaf = pki.certify(root / "release.pub", "release@vendor.example", root / "nochain.crt")
    _sign(cli, root, bundle, "--certificate", leaf)
    res = cli("verify", bundle, "--policy", _policy(root, pki, "release@vendor.example", "p2"))
    assert res.returncode == 12, res.describe()
    assert "no trusted root or intermediate issued" in res.error_line


def test_a_certificate_not_for_code_signing_does_not_count(
    home: tuple[Cli, Path, CodeSigningPki],
) -> None:
    cli, root, pki = home
    bundle = _copy(root, "signed-tls-cert")
    leaf = pki.certify(
        root / "release.pub", "release@vendor.example", root / "tls.crt", code_signing=False
    )
    _sign(cli, root, bundle, "--certificate", leaf, "--certificate-chain", pki.intermediate)
    res = cli("verify", bundle, "--policy", _policy(root, pki, "release@vendor.example", "p3"))
    assert res.returncode == 12, res.describe()
    assert "not for code signing" in res.error_line


def test_a_certificate_for_another_key_is_refused_before_signing(
    home: tuple[Cli, Path, CodeSigningPki], tmp_path: Path
) -> None:
    cli, root, pki = home
    bundle = _copy(root, "signed-wrong-cert")
    other = cli("keys", "generate", tmp_path / "other", "--passphrase-env", PASS_VAR)
    assert other.returncode == 0, other.describe()
    leaf = pki.certify(tmp_path / "other.pub", "release@vendor.example", tmp_path / "other.crt")
    res = cli(
        "sign", bundle, "--key", root / "release.key", "--passphrase-env", PASS_VAR,
        "--certificate", leaf,
    )  # fmt: skip
    assert res.returncode == 13, res.describe()
    assert "not the signing key" in res.error_line
    assert not any((root / "signed-wrong-cert").rglob("*.sig"))
    listed = cli("inspect", bundle)
    assert "no signatures found" in listed.stdout, listed.describe()
