"""``bundler sign``, ``verify`` and ``approve`` against real bundles, one test per attack.

The example chart is packed once (images from the synthetic layout, never from the network),
signed with a generated vendor key, and carried to the three places a bundle lives: an
``archive:``, an ``oci:`` layout directory and a registry. Each attack works on a private copy
and must end in exit 12 with ``error: verification step N failed: ...`` naming what is wrong
(the blob, the manifest, the key's failure, the rule). Step numbers are the ones of
docs/verification.md. The signature manifests are judged independently too: cosign's media
types and payload, and the ECDSA signature checked with ``cryptography`` alone.
"""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from copy_support import (
    API_REF,
    WEB_REF,
    Cli,
    Judge,
    Result,
    layout_entry,
    layout_index,
    layout_json,
    registry_blob_file,
    sha256_digest,
    unique,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from harness.registry import RegistryServer
from pack_support import (
    DEMO_CHART,
    OCI_MANIFEST,
    archive_json,
    bundle_index_of,
    image_entries,
    layout_source,
    pack_cli,
    pack_ok,
)

from bundler.adapters.crypto import generate_key, write_key_pair

PASS_VAR = "BUNDLER_TEST_KEY_PASS"
PASSPHRASE = "attack-tests-passphrase-0815"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
REF_NAME = "org.opencontainers.image.ref.name"
TARGETS = ("archive", "oci", "registry")


# ------------------------------------------------------------------------------ fixtures
@dataclass(frozen=True)
class Keys:
    directory: Path

    def private(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def public(self, name: str) -> Path:
        return self.directory / f"{name}.pub"


@dataclass(frozen=True)
class Signed:
    """The example bundle, unsigned and vendor-signed, in each of its three homes."""

    digest: str
    unsigned_archive: Path
    archive: Path
    oci: Path
    registry: RegistryServer
    repo: str  # the vendor-signed bundle in the registry, tag 1.0.0
    unsigned_repo: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Throw-away key pairs: the vendor, a second vendor, an approver, a stranger."""
    directory = tmp_path_factory.mktemp("keys")
    for name, algorithm in (
        ("vendor", "ecdsa-p256"),
        ("vendor2", "ed25519"),
        ("approver", "ecdsa-p256"),
        ("stranger", "ecdsa-p256"),
    ):
        write_key_pair(directory / name, generate_key(algorithm), PASSPHRASE.encode())
    return Keys(directory)


@pytest.fixture(scope="module")
def bcli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = pack_cli(tmp_path_factory.mktemp("verify-attacks") / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


@pytest.fixture(scope="module")
def signed(
    bcli: Cli,
    keys: Keys,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Signed:
    home = tmp_path_factory.mktemp("signed-bundle")
    unsigned = home / "unsigned.tar"
    digest = pack_ok(
        bcli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", f"archive:{unsigned}"
    )["digest"]
    archive = home / "signed.tar"
    shutil.copyfile(unsigned, archive)
    sign_ok(bcli, f"archive:{archive}", keys.private("vendor"))
    oci = home / "oci"
    bcli.copy_ok(f"archive:{archive}", f"oci:{oci}")
    repo = f"{unique('verify')}/demo"
    bcli.copy_ok(f"archive:{archive}", plain_registry.ref(f"{repo}:1.0.0"))
    unsigned_repo = f"{unique('unsigned')}/demo"
    bcli.copy_ok(f"archive:{unsigned}", plain_registry.ref(f"{unsigned_repo}:1.0.0"))
    return Signed(digest, unsigned, archive, oci, plain_registry, repo, unsigned_repo)


def private_copy(signed: Signed, target: str, tmp_path: Path, *, unsigned: bool = False) -> str:
    """A location of this test's own copy of the (vendor-signed or unsigned) bundle."""
    if target == "archive":
        path = tmp_path / "bundle.tar"
        shutil.copyfile(signed.unsigned_archive if unsigned else signed.archive, path)
        return f"archive:{path}"
    if target == "oci":
        path = tmp_path / "oci"
        if unsigned:  # an archive is a tar of a layout
            path.mkdir()
            with tarfile.open(signed.unsigned_archive) as tar:
                tar.extractall(path, filter="data")
        else:
            shutil.copytree(signed.oci, path)
        return f"oci:{path}"
    repo = signed.unsigned_repo if unsigned else signed.repo
    return signed.registry.ref(f"{repo}:1.0.0")


# ------------------------------------------------------------------------------- helpers
def sign_ok(cli: Cli, location: str, key: Path, *flags: str) -> dict[str, Any]:
    res = cli("sign", location, "--key", key, "--passphrase-env", PASS_VAR, "-o", "json", *flags)
    assert res.returncode == 0, res.describe()
    doc: dict[str, Any] = res.json
    return doc


def verify(cli: Cli, location: str, *trust: str | Path) -> Result:
    return cli("verify", location, *trust)


def verified(cli: Cli, location: str, *trust: str | Path) -> str:
    res = verify(cli, location, *trust)
    assert res.returncode == 0, res.describe()
    assert " verified: demo 1.0.0, 4 images, signed by " in res.stdout
    return res.stdout


def refused(res: Result, step: int, *names: str) -> str:
    """Exit 12, one error line naming ``step`` and every one of ``names``."""
    assert res.returncode == 12, res.describe()
    line = res.error_line
    assert line.startswith(f"error: verification step {step} failed: "), res.describe()
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    assert res.stdout == ""
    return line


def write_policy(directory: Path, keys: Keys, rule: str, *key_names: str) -> Path:
    """A trust policy: the named keys (vendor* -> role vendor, else approval) and one rule."""
    lines = ["apiVersion: bundler.dev/v1", "kind: TrustPolicy", "keys:"]
    for name in key_names:
        role = "vendor" if name.startswith("vendor") else "approval"
        lines += [f"  - name: {name}", f"    role: {role}", f"    path: {keys.public(name)}"]
    lines += ["bundles:", rule]
    path = directory / "trust-policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


VENDOR_ONLY = "  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n      - role: vendor"
VENDOR_AND_APPROVAL = (
    "  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n      - role: vendor\n"
    "      - role: approval"
)


def api_layer(signed: Signed) -> dict[str, Any]:
    """The first layer of the api image (a real gzip tar layer) as the archive describes it."""
    api = image_entries(bundle_index_of(signed.archive))[API_REF]
    layer: dict[str, Any] = archive_json(signed.archive, api["digest"])["layers"][0]
    return layer


def flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def flip_archive_member(path: Path, name: str) -> None:
    """Rewrite one member of a tar in place: same length, one byte different."""
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
        offset, size = member.offset_data, member.size
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(size)
        f.seek(offset)
        f.write(flip_middle_byte(data))


def add_to_layout_index(layout: Path, entry: dict[str, Any]) -> None:
    index = layout_index(layout)
    index["manifests"].append(entry)
    (layout / "index.json").write_text(json.dumps(index, indent=2))


def registry_blob(reg: RegistryServer, repo: str, digest: str) -> bytes:
    """A blob as the registry serves it, fetched with plain HTTP (no bundler code)."""
    resp = requests.get(
        f"{reg.url}/v2/{repo}/blobs/{digest}",
        timeout=30,
        verify=reg.verify,
        headers=reg.auth_headers([f"repository:{repo}:pull"]),
    )
    assert resp.status_code == 200, resp.text
    return resp.content


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


# ---------------------------------------------------------------- the good case, everywhere
@pytest.mark.parametrize("target", TARGETS)
def test_signed_bundle_verifies_with_key_and_policy(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, target, tmp_path)
    out = verified(bcli, location, "--key", keys.public("vendor"))
    assert out.startswith(signed.digest)
    policy = write_policy(tmp_path, keys, VENDOR_ONLY, "vendor", "approver")
    assert "signed by vendor (vendor)" in verified(bcli, location, "--policy", policy)


# ----------------------------------------------------------------- step 2: signatures
@pytest.mark.parametrize("target", TARGETS)
def test_step2_unsigned_bundle_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, target, tmp_path, unsigned=True)
    refused(verify(bcli, location, "--key", keys.public("vendor")), 2, signed.digest, "not signed")


@pytest.mark.parametrize("target", TARGETS)
def test_step2_signature_by_untrusted_key_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, target, tmp_path, unsigned=True)
    if target == "registry":  # the shared unsigned repository stays unsigned
        location = signed.registry.ref(f"{unique('stranger')}/demo:1.0.0")
        bcli.copy_ok(f"archive:{signed.unsigned_archive}", location)
    sign_ok(bcli, location, keys.private("stranger"))
    assert verified(bcli, location, "--key", keys.public("stranger"))
    refused(
        verify(bcli, location, "--key", keys.public("vendor")),
        2,
        signed.digest,
        "no trusted key made it",
    )


@pytest.fixture(scope="module")
def other_bundle(
    bcli: Cli,
    keys: Keys,
    example_layout: Path,
    signed: Signed,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str, str]:
    """A second vendor-signed bundle (version 1.0.1): (layout, digest, registry repo)."""
    layout = tmp_path_factory.mktemp("other-bundle") / "oci"
    digest = pack_ok(
        bcli,
        "--chart",
        DEMO_CHART,
        "--version",
        "1.0.1",
        *layout_source(example_layout),
        "--to",
        f"oci:{layout}",
    )["digest"]
    assert digest != signed.digest
    sign_ok(bcli, f"oci:{layout}", keys.private("vendor"), "--no-recursive")
    repo = f"{unique('other')}/demo"
    bcli.copy_ok(f"oci:{layout}:demo:1.0.1", signed.registry.ref(f"{repo}:1.0.1"))
    return layout, digest, repo


def test_step2_signature_copied_from_another_bundle_is_refused_in_a_layout(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    other_bundle: tuple[Path, str, str],
    tmp_path: Path,
) -> None:
    other_layout, other_digest, _ = other_bundle
    location = private_copy(signed, "oci", tmp_path, unsigned=True)
    layout = Path(location.removeprefix("oci:"))
    moved = layout_entry(other_layout, signature_tag(other_digest))
    sig = layout_json(other_layout, moved["digest"])
    for descriptor in [moved, sig["config"], *sig["layers"]]:
        hexpart = descriptor["digest"].split(":", 1)[1]
        shutil.copyfile(
            other_layout / "blobs" / "sha256" / hexpart, layout / "blobs" / "sha256" / hexpart
        )
    add_to_layout_index(layout, {**moved, "annotations": {REF_NAME: signature_tag(signed.digest)}})
    refused(
        verify(bcli, location, "--key", keys.public("vendor")),
        2,
        signed.digest,
        "payload for another digest",
    )


def test_step2_signature_copied_from_another_bundle_is_refused_in_a_registry(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    other_bundle: tuple[Path, str, str],
    judge: Judge,
) -> None:
    _, other_digest, other_repo = other_bundle
    reg = signed.registry
    repo = f"{unique('moved')}/demo"
    bcli.copy_ok(f"archive:{signed.unsigned_archive}", reg.ref(f"{repo}:1.0.0"))
    judge.skopeo_run(
        "copy",
        "--preserve-digests",
        "--quiet",
        *reg.skopeo_args(src=True),
        *reg.skopeo_args(dest=True),
        reg.docker_ref(f"{other_repo}:{signature_tag(other_digest)}"),
        reg.docker_ref(f"{repo}:{signature_tag(signed.digest)}"),
    )
    refused(
        verify(bcli, reg.ref(f"{repo}:1.0.0"), "--key", keys.public("vendor")),
        2,
        signed.digest,
        "payload for another digest",
    )


# ------------------------------------------------------------------ step 4: the policy
@pytest.mark.parametrize("target", TARGETS)
def test_step4_required_approval_missing_until_approved(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, target, tmp_path)
    if target == "registry":  # approving writes: work on a repository of our own
        location = signed.registry.ref(f"{unique('approve')}/demo:1.0.0")
        bcli.copy_ok(f"archive:{signed.archive}", location)
    policy = write_policy(tmp_path, keys, VENDOR_AND_APPROVAL, "vendor", "approver")
    refused(
        verify(bcli, location, "--policy", policy),
        4,
        "rule 'demo'",
        "'approval'",
        "valid ones: none",
    )
    res = bcli(
        "approve",
        location,
        "--key",
        keys.private("approver"),
        "--passphrase-env",
        PASS_VAR,
        "--policy",
        policy,
    )
    assert res.returncode == 0, res.describe()
    assert "approved by approver (approval)" in res.stdout
    out = verified(bcli, location, "--policy", policy)
    assert "vendor (vendor)" in out and "approver (approval)" in out


def test_step4_version_outside_the_rule_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    rule = "  - name: demo\n    versions: '>=2.0.0'\n    require:\n      - role: vendor"
    policy = write_policy(tmp_path, keys, rule, "vendor")
    refused(
        verify(bcli, f"archive:{signed.archive}", "--policy", policy),
        4,
        "rule 'demo' admits versions '>=2.0.0'",
        "demo 1.0.0",
    )


def test_step4_bundle_without_a_rule_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    policy = write_policy(
        tmp_path, keys, "  - name: other\n    require:\n      - role: vendor", "vendor"
    )
    refused(verify(bcli, f"oci:{signed.oci}", "--policy", policy), 4, "no rule for bundle 'demo'")


def test_step4_identity_other_than_the_rule_names_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    """The registry copy was signed as the bundle's name (``demo``), not this repository."""
    rule = (
        "  - name: demo\n    identity: registry.example/vendor/demo\n    require:\n"
        "      - role: vendor"
    )
    policy = write_policy(tmp_path, keys, rule, "vendor")
    refused(
        verify(bcli, signed.registry.ref(f"{signed.repo}:1.0.0"), "--policy", policy),
        4,
        "rule 'demo'",
        "valid ones: none",
    )


def test_step4_says_which_valid_signature_the_identity_kept_from_counting(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    rule = (
        "  - name: demo\n    identity: registry.example/vendor/demo\n    require:\n"
        "      - role: vendor"
    )
    policy = write_policy(tmp_path, keys, rule, "vendor")
    line = refused(
        verify(bcli, f"archive:{signed.archive}", "--policy", policy),
        4,
        "needs 1 'vendor' signature(s); valid ones: none; found but not counted: vendor (key ",
        "role 'vendor', identity demo)",
        "the rule counts only identity registry.example/vendor/demo",
    )
    assert "\n" not in line


def test_step4_says_which_valid_signature_holds_another_role(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    """The vendor's own key listed in the policy as an approver does not sign as the vendor."""
    policy = tmp_path / "trust-policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: release-manager\n    role: approval\n    path: {keys.public('vendor')}\n"
        f"  - name: vendor2\n    role: vendor\n    path: {keys.public('vendor2')}\n"
        f"bundles:\n{VENDOR_ONLY}\n"
    )
    refused(
        verify(bcli, f"archive:{signed.archive}", "--policy", policy),
        4,
        "needs 1 'vendor' signature(s); valid ones: none; found but not counted: "
        "release-manager (key ",
        "its key holds role 'approval', not 'vendor'",
    )


# ------------------------------------------------------------------ step 5: content
@pytest.mark.parametrize("target", TARGETS)
def test_step5_flipped_byte_in_a_layer_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    layer = api_layer(signed)
    hexpart = layer["digest"].split(":", 1)[1]
    if target == "archive":
        location = private_copy(signed, target, tmp_path)
        flip_archive_member(Path(location.removeprefix("archive:")), f"blobs/sha256/{hexpart}")
    elif target == "oci":
        location = private_copy(signed, target, tmp_path)
        blob = Path(location.removeprefix("oci:")) / "blobs" / "sha256" / hexpart
        blob.write_bytes(flip_middle_byte(blob.read_bytes()))
    else:  # registry storage is shared by every repository: tamper in a registry of our own
        reg = registry_factory("plain")
        location = reg.ref("tampered/demo:1.0.0")
        bcli.copy_ok(f"archive:{signed.archive}", location)
        data = registry_blob_file(reg, layer["digest"])
        data.write_bytes(flip_middle_byte(data.read_bytes()))
    refused(verify(bcli, location, "--key", keys.public("vendor")), 5, layer["digest"])


def test_step5_removed_image_manifest_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    layout = Path(location.removeprefix("oci:"))
    api = layout_entry(layout, API_REF)["digest"]
    (layout / "blobs" / "sha256" / api.split(":", 1)[1]).unlink()
    refused(verify(bcli, location, "--key", keys.public("vendor")), 5, api, "missing")


def test_step5_removed_platform_manifest_under_an_image_index_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    layout = Path(location.removeprefix("oci:"))
    web = layout_json(layout, layout_entry(layout, WEB_REF)["digest"])
    arm = web["manifests"][-1]["digest"]
    (layout / "blobs" / "sha256" / arm.split(":", 1)[1]).unlink()
    refused(verify(bcli, location, "--key", keys.public("vendor")), 5, arm)


# ----------------------------------------------------------------- step 6: nothing extra
def test_step6_added_unsigned_image_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    synth: ModuleType,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    layout = Path(location.removeprefix("oci:"))
    smuggled = synth.write_image(
        layout, "evil.example/miner:1", [synth.LayerSpec("smuggled-miner", 4096)]
    )
    refused(
        verify(bcli, location, "--key", keys.public("vendor")),
        6,
        f"name evil.example/miner:1 -> {smuggled['digest']}",
    )


def test_step6_image_renamed_to_a_pinned_reference_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    synth: ModuleType,
    tmp_path: Path,
) -> None:
    """The api image's name in index.json now points at another image."""
    location = private_copy(signed, "oci", tmp_path)
    layout = Path(location.removeprefix("oci:"))
    smuggled = synth.write_image(layout, API_REF, [synth.LayerSpec("smuggled-api", 4096)])
    refused(
        verify(bcli, location, "--key", keys.public("vendor")),
        6,
        f"name {API_REF} -> {smuggled['digest']}",
    )


def test_step6_image_smuggled_under_a_signature_tag_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    synth: ModuleType,
    tmp_path: Path,
) -> None:
    """An ordinary image (no signature layer at all) parked under the ``.sig`` tag of a
    pinned image is content the bundle signature does not cover."""
    location = private_copy(signed, "oci", tmp_path, unsigned=True)
    sign_ok(bcli, location, keys.private("vendor"), "--no-recursive")
    layout = Path(location.removeprefix("oci:"))
    api = layout_entry(layout, API_REF)["digest"]
    smuggled = synth.write_image(
        layout, signature_tag(api), [synth.LayerSpec("smuggled-under-sig", 4096)]
    )
    refused(verify(bcli, location, "--key", keys.public("vendor")), 6, smuggled["digest"])


@pytest.mark.parametrize("target", ["archive", "oci"])
def test_step6_stray_blob_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    target: str,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, target, tmp_path)
    stray = b"#!/bin/sh\necho smuggled\n"
    digest = sha256_digest(stray)
    name = f"blobs/sha256/{digest.split(':', 1)[1]}"
    if target == "oci":
        (Path(location.removeprefix("oci:")) / name).write_bytes(stray)
    else:
        (tmp_path / "stray").write_bytes(stray)
        with tarfile.open(location.removeprefix("archive:"), "a") as tar:
            tar.add(tmp_path / "stray", arcname=name)
    refused(verify(bcli, location, "--key", keys.public("vendor")), 6, f"blob {digest}")


# ------------------------------------------------------------------ the JSON report
def test_verify_json_report_marks_the_failed_step_and_later_ones_not_run(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    layer = api_layer(signed)
    blob = Path(location.removeprefix("oci:")) / "blobs" / "sha256" / layer["digest"][7:]
    blob.write_bytes(flip_middle_byte(blob.read_bytes()))
    res = verify(bcli, location, "--key", keys.public("vendor"), "-o", "json")
    assert res.returncode == 12, res.describe()
    report = res.json
    assert report["verified"] is False and report["bundle"] is None
    assert report["digest"] == signed.digest
    assert [(s["step"], s["status"]) for s in report["steps"]] == [
        (1, "passed"),
        (2, "passed"),
        (3, "passed"),
        (4, "passed"),
        (5, "failed"),
        (6, "not run"),
    ]
    assert layer["digest"] in report["steps"][4]["detail"]
    assert report["error"].startswith("verification step 5 failed: ")


def test_verify_json_report_of_an_unsigned_bundle_shows_step1_passed(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
) -> None:
    res = verify(
        bcli, f"archive:{signed.unsigned_archive}", "--key", keys.public("vendor"), "-o", "json"
    )
    assert res.returncode == 12, res.describe()
    assert [(s["step"], s["status"]) for s in res.json["steps"]] == [
        (1, "passed"),
        (2, "failed"),
        (3, "not run"),
        (4, "not run"),
        (5, "not run"),
        (6, "not run"),
    ]


def test_verify_json_report_of_an_unsigned_bundle_without_its_lock_marks_only_step1_passed(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    """The lock cannot be read, but the steps run in order: step 2 fails, nothing after runs."""
    location = private_copy(signed, "oci", tmp_path, unsigned=True)
    index = bundle_index_of(signed.unsigned_archive)
    (lock,) = [m for m in index["manifests"] if m["annotations"]["dev.bundler.role"] == "lock"]
    blob = archive_json(signed.unsigned_archive, lock["digest"])["layers"][0]["digest"]
    (Path(location.removeprefix("oci:")) / "blobs" / "sha256" / blob[7:]).unlink()
    res = verify(bcli, location, "--key", keys.public("vendor"), "-o", "json")
    assert res.returncode == 12, res.describe()
    report = res.json
    assert [(s["step"], s["status"]) for s in report["steps"]] == [
        (1, "passed"),
        (2, "failed"),
        (3, "not run"),
        (4, "not run"),
        (5, "not run"),
        (6, "not run"),
    ]
    assert report["error"].startswith("verification step 2 failed: ")
    assert "not signed" in report["steps"][1]["detail"]
    refused(verify(bcli, location, "--key", keys.public("vendor")), 2, "not signed")


def test_verify_json_report_on_success(bcli: Cli, keys: Keys, signed: Signed) -> None:
    res = verify(bcli, f"oci:{signed.oci}", "--key", keys.public("vendor"), "-o", "json")
    assert res.returncode == 0, res.describe()
    report = res.json
    assert report["verified"] is True and report["error"] is None
    assert {s["status"] for s in report["steps"]} == {"passed"}
    assert report["bundle"]["name"] == "demo" and report["bundle"]["version"] == "1.0.0"
    assert len(report["bundle"]["images"]) == 4


# -------------------------------------------------------------- signing and approving
def test_two_signers_keep_both_layers_and_each_key_verifies(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    sign_ok(bcli, location, keys.private("vendor2"), "--no-recursive")
    layout = Path(location.removeprefix("oci:"))
    sig = layout_json(layout, layout_entry(layout, signature_tag(signed.digest))["digest"])
    assert [layer["mediaType"] for layer in sig["layers"]] == [COSIGN_SIMPLESIGNING] * 2
    for name in ("vendor", "vendor2"):
        verified(bcli, location, "--key", keys.public(name))
    rule = "  - name: demo\n    require:\n      - role: vendor\n        threshold: 2"
    out = verified(
        bcli, location, "--policy", write_policy(tmp_path, keys, rule, "vendor", "vendor2")
    )
    assert "vendor (vendor)" in out and "vendor2 (vendor)" in out


def test_signing_twice_with_one_key_does_not_meet_a_threshold_of_two(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path)
    sign_ok(
        bcli,
        location,
        keys.private("vendor"),
        "--no-recursive",
        "--identity",
        "registry.example/mirror/demo",
    )
    layout = Path(location.removeprefix("oci:"))
    sig = layout_json(layout, layout_entry(layout, signature_tag(signed.digest))["digest"])
    assert len(sig["layers"]) == 2
    rule = "  - name: demo\n    require:\n      - role: vendor\n        threshold: 2"
    policy = write_policy(tmp_path, keys, rule, "vendor", "vendor2")
    refused(verify(bcli, location, "--policy", policy), 4, "needs 2 'vendor'", "valid ones: vendor")


def test_recursive_signing_tags_every_manifest_of_the_bundle(
    signed: Signed,
    judge: Judge,
) -> None:
    manifests: list[str] = []

    def walk(digest: str) -> None:
        manifests.append(digest)
        for child in layout_json(signed.oci, digest).get("manifests", []):
            walk(child["digest"])

    walk(signed.digest)
    assert len(manifests) == 9  # index, chart, lock, 4 images, 2 platforms of web
    tags = {
        (m.get("annotations") or {}).get(REF_NAME): m["digest"]
        for m in layout_index(signed.oci)["manifests"]
    }
    reg = signed.registry
    for digest in manifests:
        assert signature_tag(digest) in tags, digest
        raw = judge.raw(reg.docker_ref(f"{signed.repo}:{signature_tag(digest)}"), reg)
        assert sha256_digest(raw) == tags[signature_tag(digest)]
        payload_digest = json.loads(raw)["layers"][0]["digest"]
        payload = (signed.oci / "blobs" / "sha256" / payload_digest[7:]).read_bytes()
        assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest


def test_signatures_travel_registry_to_archive_to_another_registry(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    first = signed.registry.ref(f"{signed.repo}:1.0.0")
    verified(bcli, first, "--key", keys.public("vendor"))
    archive = tmp_path / "carried.tar"
    bcli.copy_ok(first, f"archive:{archive}")
    verified(bcli, f"archive:{archive}", "--key", keys.public("vendor"))
    other = registry_factory("plain")
    second = other.ref("received/demo:1.0.0")
    bcli.copy_ok(f"archive:{archive}", second)
    assert verified(bcli, second, "--key", keys.public("vendor")).startswith(signed.digest)


def test_approve_with_a_key_the_policy_does_not_trust_is_a_usage_error(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "archive", tmp_path)
    before = Path(location.removeprefix("archive:")).read_bytes()
    policy = write_policy(tmp_path, keys, VENDOR_AND_APPROVAL, "vendor", "approver")
    res = bcli(
        "approve",
        location,
        "--key",
        keys.private("stranger"),
        "--passphrase-env",
        PASS_VAR,
        "--policy",
        policy,
    )
    assert res.returncode == 2, res.describe()
    assert "is not a key the policy trusts" in res.error_line
    assert Path(location.removeprefix("archive:")).read_bytes() == before


def test_approve_refuses_a_bundle_the_vendor_did_not_sign(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "oci", tmp_path, unsigned=True)
    policy = write_policy(tmp_path, keys, VENDOR_AND_APPROVAL, "vendor", "approver")
    res = bcli(
        "approve",
        location,
        "--key",
        keys.private("approver"),
        "--passphrase-env",
        PASS_VAR,
        "--policy",
        policy,
    )
    refused(res, 2, signed.digest, "not signed")
    layout = Path(location.removeprefix("oci:"))
    names = {(m.get("annotations") or {}).get(REF_NAME) for m in layout_index(layout)["manifests"]}
    assert signature_tag(signed.digest) not in names  # nothing was signed


def approve(cli: Cli, location: str, key: Path, policy: Path, *flags: str) -> Result:
    return cli(
        "approve", location, "--key", key, "--passphrase-env", PASS_VAR, "--policy", policy, *flags
    )


IDENTITY_RULE = (
    "  - name: demo\n    identity: registry.example/vendor/demo\n    require:\n"
    "      - role: vendor\n      - role: approval"
)


def test_approve_refuses_when_its_signature_would_not_name_the_rules_identity(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    """The vendor signed as the rule's repository; the approval would name the bundle's name."""
    location = private_copy(signed, "archive", tmp_path, unsigned=True)
    sign_ok(bcli, location, keys.private("vendor"), "--identity", "registry.example/vendor/demo")
    before = Path(location.removeprefix("archive:")).read_bytes()
    policy = write_policy(tmp_path, keys, IDENTITY_RULE, "vendor", "approver")
    line = refused(
        approve(bcli, location, keys.private("approver"), policy),
        4,
        "an approval by approver (key ",
        "role 'approval') as demo would not count",
        "the rule counts only identity registry.example/vendor/demo",
        "1 'approval' signature(s) by approver (key ",
        "as identity registry.example/vendor/demo",
        "nothing was signed",
    )
    assert "\n" not in line
    assert Path(location.removeprefix("archive:")).read_bytes() == before
    res = approve(
        bcli,
        location,
        keys.private("approver"),
        policy,
        "--identity",
        "registry.example/vendor/demo",
    )
    assert res.returncode == 0, res.describe()
    assert "approved by approver (approval)" in res.stdout
    out = verified(bcli, location, "--policy", policy)
    assert "vendor (vendor)" in out and "approver (approval)" in out


def test_approve_with_the_vendor_key_is_refused_naming_the_approval_it_needs(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    location = private_copy(signed, "archive", tmp_path)
    before = Path(location.removeprefix("archive:")).read_bytes()
    policy = write_policy(tmp_path, keys, VENDOR_AND_APPROVAL, "vendor", "approver")
    refused(
        approve(bcli, location, keys.private("vendor"), policy),
        4,
        "vendor (key ",
        "role 'vendor') has signed already and counts once",
        "still needs 1 'approval' signature(s) by approver (key ",
        "as any identity",
        "nothing was signed",
    )
    assert Path(location.removeprefix("archive:")).read_bytes() == before


def test_approve_with_a_key_of_a_role_the_rule_does_not_require_is_refused(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    """An auditor's key is trusted, but the rule asks only for the vendor: it cannot approve."""
    location = private_copy(signed, "archive", tmp_path)
    before = Path(location.removeprefix("archive:")).read_bytes()
    policy = tmp_path / "trust-policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor\n    role: vendor\n    path: {keys.public('vendor')}\n"
        f"  - name: auditor\n    role: audit\n    path: {keys.public('stranger')}\n"
        f"bundles:\n{VENDOR_ONLY}\n"
    )
    refused(
        approve(bcli, location, keys.private("stranger"), policy),
        4,
        "an approval by auditor (key ",
        "role 'audit') as demo would not count",
        "the rule requires no 'audit' signature",
        "what counts is 1 'vendor' signature(s) by vendor (key ",
    )
    assert Path(location.removeprefix("archive:")).read_bytes() == before


def test_bad_policy_file_is_a_config_error(
    bcli: Cli,
    keys: Keys,
    signed: Signed,
    tmp_path: Path,
) -> None:
    rule = "  - name: demo\n    require:\n      - role: vendor\n        threshold: 2"
    res = verify(
        bcli, f"oci:{signed.oci}", "--policy", write_policy(tmp_path, keys, rule, "vendor")
    )
    assert res.returncode == 10, res.describe()
    assert "needs 2 'vendor' signature(s) but the policy trusts 1" in res.error_line


# ------------------------------------------------------- cosign's shape, judged on its own
def test_signature_manifest_has_cosign_shape_and_verifies_independently(
    keys: Keys,
    signed: Signed,
    judge: Judge,
) -> None:
    reg = signed.registry
    raw = judge.raw(reg.docker_ref(f"{signed.repo}:{signature_tag(signed.digest)}"), reg)
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == COSIGN_SIMPLESIGNING
    signature = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION], validate=True)

    blob = registry_blob(reg, signed.repo, layer["digest"])
    assert sha256_digest(blob) == layer["digest"] and len(blob) == layer["size"]
    assert json.loads(blob) == {
        "critical": {
            "identity": {"docker-reference": "demo"},
            "image": {"docker-manifest-digest": signed.digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    public = serialization.load_pem_public_key(keys.public("vendor").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    public.verify(signature, blob, ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    config = json.loads(registry_blob(reg, signed.repo, manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
