"""``bundler export`` and ``bundler import`` across the air gap, against real registries.

The example bundle (plus a small ``tools`` image of a few MiB) is packed into a registry of its
own ("A", as the vendor side) at ``vendor/demo:1.0.0`` and signed; version 1.0.1 differs only in
the single layer of the migrate image. The far side is always another registry ("B"): fresh and
empty where a test must show that nothing was tagged or nothing arrived. skopeo, raw registry
HTTP, ``tarfile`` and the registry's storage directory judge the outcome, not bundler.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from copy_support import Cli, Judge, Result, layout_entry, registry_flags, unique
from harness.registry import RegistryServer, start_registry
from pack_support import MIGRATE_REF, pack_cli
from transfer_support import (
    TOOLS_REF,
    Keys,
    archive_graph,
    archive_refs,
    assert_nothing_tagged,
    blob_members,
    env_with_passphrase,
    export,
    extract,
    file_size,
    flip_member_byte,
    import_,
    make_keys,
    member_data_range,
    members,
    ok,
    pack,
    read_member,
    registry_graph,
    sign,
    signature_graph,
    signature_tag,
    storage_blobs,
    tar_layout,
    verified,
)

KiB = 1024
MiB = 1024 * KiB
TOOLS_LAYER_BYTES = 6 * MiB


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("transfer-keys"), "vendor", "stranger")


@pytest.fixture(scope="module")
def tcli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return env_with_passphrase(pack_cli(tmp_path_factory.mktemp("transfer") / "user", helm))


@pytest.fixture(scope="module")
def vendor_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """Registry A, the vendor's side, for this module only."""
    server = start_registry("plain", tmp_path_factory.mktemp("registry-a"), binary=registry_binary)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Vendor:
    """Both versions, packed and signed in registry A, and their layouts."""

    reg: RegistryServer
    v100: str  # digests
    v101: str
    layout_v100: Path
    layout_v101: Path
    old_migrate_layer: str
    new_migrate_layer: str
    new_migrate_config: str

    def ref(self, version: str) -> str:
        return self.reg.ref(f"vendor/demo:{version}")


def migrate_image(synth: ModuleType, layout: Path, seed: str) -> dict[str, str]:
    """(Re)write the migrate image, one layer from ``seed``; its layer and config digests."""
    spec = synth.LayerSpec(
        seed,
        16 * KiB,
        "migrations/data.bin",
        files=(("migrations/run.sh", "#!/bin/sh\necho applying migrations\n"),),
    )
    labels = {
        "org.opencontainers.image.source": "https://example.local/demo",
        "org.opencontainers.image.title": "migrate",
    }
    desc = synth.write_image(
        layout,
        MIGRATE_REF,
        [spec],
        ("linux", "amd64"),
        entrypoint=["/migrations/run.sh"],
        labels=labels,
    )
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    return {
        "manifest": desc["digest"],
        "layer": manifest["layers"][0]["digest"],
        "config": manifest["config"]["digest"],
    }


@pytest.fixture(scope="module")
def vendor(
    tcli: Cli,
    keys: Keys,
    synth: ModuleType,
    example_layout: Path,
    vendor_registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Vendor:
    home = tmp_path_factory.mktemp("vendor-layouts")
    v100_layout = home / "v1.0.0"
    shutil.copytree(example_layout, v100_layout)
    synth.write_image(
        v100_layout, TOOLS_REF, [synth.LayerSpec("tools-layer", TOOLS_LAYER_BYTES, level=0)]
    )
    v101_layout = home / "v1.0.1"
    shutil.copytree(v100_layout, v101_layout)
    old = migrate_image(synth, v100_layout, "demo-migrate")  # as the example set has it
    assert old["manifest"] == layout_entry(example_layout, MIGRATE_REF)["digest"]
    new = migrate_image(synth, v101_layout, "demo-migrate-1.0.1")
    assert old["layer"] != new["layer"]

    reg = vendor_registry
    v100 = pack(tcli, v100_layout, reg.ref("vendor/demo:1.0.0"), "--image", TOOLS_REF)
    v101 = pack(
        tcli, v101_layout, reg.ref("vendor/demo:1.0.1"), "--image", TOOLS_REF, "--version", "1.0.1"
    )
    for version in ("1.0.0", "1.0.1"):
        sign(tcli, reg.ref(f"vendor/demo:{version}"), keys.private("vendor"))
    return Vendor(
        reg, v100, v101, v100_layout, v101_layout, old["layer"], new["layer"], new["config"]
    )


@pytest.fixture(scope="module")
def full_archive(tcli: Cli, vendor: Vendor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bundler export`` of vendor/demo:1.0.0 (shared: copy it before changing it)."""
    archive = tmp_path_factory.mktemp("exported") / "demo-1.0.0.tar"
    doc = export(tcli, vendor.ref("1.0.0"), archive)
    assert doc["digest"] == vendor.v100
    return archive


@pytest.fixture(scope="module")
def unsigned_archive(
    tcli: Cli,
    vendor: Vendor,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The same bundle packed again, straight into an archive, never signed."""
    archive = tmp_path_factory.mktemp("unsigned") / "demo-1.0.0.tar"
    digest = pack(tcli, vendor.layout_v100, f"archive:{archive}", "--image", TOOLS_REF)
    assert digest == vendor.v100  # packing is reproducible
    return archive


def write_policy(directory: Path, keys: Keys, rule: str) -> Path:
    """A trust policy: the vendor key (role vendor), the stranger's (role approval), a rule."""
    path = directory / "trust-policy.yaml"
    path.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: vendor\n"
        f"    role: vendor\n    path: {keys.public('vendor')}\n  - name: stranger\n"
        f"    role: approval\n    path: {keys.public('stranger')}\nbundles:\n{rule}\n"
    )
    return path


def private(archive: Path, tmp_path: Path) -> Path:
    path = tmp_path / archive.name
    shutil.copyfile(archive, path)
    return path


def refused(res: Result, code: int, *named: str) -> str:
    assert res.returncode == code, res.describe()
    line = res.error_line
    for name in named:
        assert name in line, f"{name!r} not named in: {line}"
    return line


# -------------------------------------------------------- 1. registry -> archive -> registry
@pytest.mark.parametrize("far", ["plain", "tls"])
def test_registry_to_archive_to_registry_keeps_digests_and_signatures(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    judge: Judge,
    far: str,
    registry_factory: Callable[..., RegistryServer],
    tls_registry: RegistryServer,
) -> None:
    a = vendor.reg
    if far == "plain":
        b, repo, flags = registry_factory("plain"), "internal/demo", []
    else:  # the shared TLS registry with basic auth: a repository of this test's own
        b, repo, flags = tls_registry, f"{unique('internal')}/demo", registry_flags(tls_registry)
        tcli.login_config(tls_registry)
    res = ok(import_(tcli, full_archive, b.ref(f"{repo}:1.0.0"), keys.public("vendor"), *flags))
    doc = res.json
    assert doc["digest"] == vendor.v100
    assert doc["verified"]["name"] == "demo" and doc["verified"]["version"] == "1.0.0"
    assert doc["verified"]["signers"] == [{"key": "vendor.pub", "role": "signer"}]
    assert doc["alreadyAtTarget"] == 0

    # skopeo, on both sides: the same bytes under the tag.
    assert (
        judge.raw_digest(a.docker_ref("vendor/demo:1.0.0"), a)
        == judge.raw_digest(b.docker_ref(f"{repo}:1.0.0"), b)
        == vendor.v100
    )
    # Every manifest and every blob of the bundle, by digest, on the far side.
    source = registry_graph(judge, a, "vendor/demo", vendor.v100)
    landed = registry_graph(judge, b, repo, vendor.v100)
    assert landed.manifests == source.manifests and len(source.manifests) == 10
    for digest, size in source.blobs.items():
        assert judge.blob_size(b, repo, digest) == size, digest
    # Every signature tag, the same manifest on both sides (recursive signing: one each).
    tags_b = set(judge.tags(b, repo))
    for digest in source.manifests:
        tag = signature_tag(digest)
        assert tag in tags_b, tag
        assert judge.raw_digest(a.docker_ref(f"vendor/demo:{tag}"), a) == judge.raw_digest(
            b.docker_ref(f"{repo}:{tag}"), b
        )
    out = verified(tcli, b.ref(f"{repo}:1.0.0"), keys.public("vendor"), *flags)
    assert out.startswith(vendor.v100)


# ------------------------------------------------------ 2. refused before anything is tagged
def test_import_of_a_tampered_layer_is_refused_and_tags_nothing(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    archive = private(full_archive, tmp_path)
    blobs = archive_graph(archive, vendor.v100).blobs
    layer = max(blobs, key=lambda d: blobs[d])  # the tools layer
    flip_member_byte(archive, f"blobs/sha256/{layer[7:]}")
    b = registry_factory("plain")
    res = import_(tcli, archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    refused(res, 6, layer)
    assert_nothing_tagged(judge, b, "internal/demo")
    assert layer not in storage_blobs(b)


def test_import_of_an_unsigned_bundle_is_refused_before_any_blob_moves(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    unsigned_archive: Path,
    judge: Judge,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    b = registry_factory("plain")
    res = import_(tcli, unsigned_archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    refused(res, 12, "verification step 2 failed", vendor.v100, "not signed")
    assert_nothing_tagged(judge, b, "internal/demo")
    assert storage_blobs(b) == set()


def test_import_of_a_bundle_signed_by_another_key_is_refused(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    unsigned_archive: Path,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    archive = private(unsigned_archive, tmp_path)
    sign(tcli, f"archive:{archive}", keys.private("stranger"))
    verified(tcli, f"archive:{archive}", keys.public("stranger"))
    b = registry_factory("plain")
    res = import_(tcli, archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    refused(res, 12, "verification step 2 failed", vendor.v100, "no trusted key made it")
    assert_nothing_tagged(judge, b, "internal/demo")
    assert storage_blobs(b) == set()


def test_import_of_an_archive_with_an_extra_unsigned_image_is_refused(
    tcli: Cli,
    keys: Keys,
    full_archive: Path,
    synth: ModuleType,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    layout = extract(full_archive, tmp_path / "layout")
    smuggled = synth.write_image(
        layout, "evil.example/miner:1", [synth.LayerSpec("smuggled-miner", 64 * KiB)]
    )
    archive = tmp_path / "smuggled.tar"
    tar_layout(layout, archive)
    b = registry_factory("plain")
    res = import_(tcli, archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    refused(
        res, 12, "verification step 6 failed", f"name evil.example/miner:1 -> {smuggled['digest']}"
    )
    assert_nothing_tagged(judge, b, "internal/demo")
    assert storage_blobs(b) == set()


@pytest.mark.parametrize("cut", ["inside a blob", "inside a member header"])
def test_import_of_a_truncated_archive_fails_and_tags_nothing(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
    cut: str,
) -> None:
    """Cut in the data of the biggest layer, or 100 bytes into the header of the last member
    (the archive then looks like one that simply holds a blob fewer)."""
    archive = private(full_archive, tmp_path)
    if cut == "inside a blob":
        sizes = blob_members(archive)
        victim = max(sizes, key=lambda d: sizes[d])
        offset, size = member_data_range(archive, f"blobs/sha256/{victim[7:]}")
        length = offset + size // 2
    else:
        last = [m for m in members(archive) if m.isfile()][-1]
        victim = "sha256:" + last.name.rsplit("/", 1)[1]
        length = last.offset + 100
    with archive.open("r+b") as f:
        f.truncate(length)
    b = registry_factory("plain")
    res = import_(tcli, archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    assert res.returncode == 12, res.describe()  # an archive unsafe to open fails step 1
    assert res.error_line.startswith("error: verification step 1 failed"), res.describe()
    assert_nothing_tagged(judge, b, "internal/demo")
    assert victim not in storage_blobs(b)


def test_import_refused_by_the_trust_policy_moves_nothing(
    tcli: Cli,
    keys: Keys,
    full_archive: Path,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    policy = write_policy(
        tmp_path, keys, "  - name: demo\n    require:\n      - role: vendor\n      - role: approval"
    )
    b = registry_factory("plain")
    res = tcli(
        "import",
        f"archive:{full_archive}",
        "--to",
        b.ref("internal/demo:1.0.0"),
        "--policy",
        policy,
    )
    refused(res, 12, "verification step 4 failed", "'approval'", "valid ones: none")
    assert_nothing_tagged(judge, b, "internal/demo")
    assert storage_blobs(b) == set()


def test_import_into_a_layout_verifies_there(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    tmp_path: Path,
) -> None:
    policy = write_policy(
        tmp_path,
        keys,
        "  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    require:\n      - role: vendor",
    )
    res = ok(
        tcli(
            "import",
            f"archive:{full_archive}",
            "--to",
            f"oci:{tmp_path / 'oci'}:demo",
            "--policy",
            policy,
            "-o",
            "json",
        )
    )
    assert res.json["verified"]["signers"] == [{"key": "vendor", "role": "vendor"}]
    out = verified(tcli, f"oci:{tmp_path / 'oci'}:demo", keys.public("vendor"))
    assert out.startswith(vendor.v100)


# ---------------------------------------------------------------------------- 4. deltas
@pytest.fixture(scope="module")
def delta(
    tcli: Cli,
    vendor: Vendor,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object]]:
    archive = tmp_path_factory.mktemp("delta") / "demo-1.0.1-delta.tar"
    doc = export(tcli, vendor.ref("1.0.1"), archive, "--base", vendor.ref("1.0.0"))
    return archive, doc


def test_delta_export_holds_only_what_the_base_lacks(
    vendor: Vendor,
    full_archive: Path,
    delta: tuple[Path, dict[str, object]],
    judge: Judge,
) -> None:
    archive, doc = delta
    reg = vendor.reg
    old = registry_graph(judge, reg, "vendor/demo", vendor.v100)
    new = registry_graph(judge, reg, "vendor/demo", vendor.v101)
    changed = set(new.blobs) - set(old.blobs)
    unchanged = set(new.blobs) & set(old.blobs)
    # What differs between the versions: the migrate layer and config, and the lock document
    # (it names the version and the migrate digest). The chart and every other image are equal.
    lock_docs = {
        d for d in changed if d not in (vendor.new_migrate_layer, vendor.new_migrate_config)
    }
    assert len(lock_docs) == 1, lock_docs
    assert {vendor.new_migrate_layer, vendor.new_migrate_config} <= changed
    assert vendor.old_migrate_layer not in new.blobs

    sigs = signature_graph(archive)
    assert {signature_tag(d) for d in new.manifests} <= set(archive_refs(archive))
    in_archive = set(blob_members(archive))
    assert in_archive == changed | set(new.manifests) | set(sigs.manifests) | set(sigs.blobs)
    assert not in_archive & unchanged, "an unchanged blob was written"
    assert unchanged < set(blob_members(full_archive))  # a full export holds them

    assert doc["digest"] == vendor.v101
    blobs = doc["blobs"]
    assert isinstance(blobs, dict)
    assert blobs["omitted"] == len(unchanged) > 0
    assert doc["omittedBytes"] == sum(new.blobs[d] for d in unchanged)
    assert doc["omittedBytes"] > TOOLS_LAYER_BYTES
    assert doc["base"] == vendor.ref("1.0.0")


def test_delta_import_into_a_registry_holding_the_base_verifies(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    delta: tuple[Path, dict[str, object]],
    judge: Judge,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    archive, doc = delta
    b = registry_factory("plain")
    ok(import_(tcli, full_archive, b.ref("internal/demo:1.0.0"), keys.public("vendor")))
    res = ok(import_(tcli, archive, b.ref("internal/demo:1.0.1"), keys.public("vendor")))
    out = res.json
    assert out["digest"] == vendor.v101
    blobs = doc["blobs"]
    assert isinstance(blobs, dict)
    assert out["alreadyAtTarget"] == blobs["omitted"]
    assert out["verified"]["version"] == "1.0.1"
    assert judge.raw_digest(b.docker_ref("internal/demo:1.0.1"), b) == vendor.v101
    assert verified(tcli, b.ref("internal/demo:1.0.1"), keys.public("vendor")).startswith(
        vendor.v101
    )
    assert verified(tcli, b.ref("internal/demo:1.0.0"), keys.public("vendor")).startswith(
        vendor.v100
    )


def test_a_delta_checked_alone_is_recognised_and_its_base_named(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    delta: tuple[Path, dict[str, object]],
) -> None:
    archive, doc = delta
    blobs = doc["blobs"]
    assert isinstance(blobs, dict)
    res = tcli("verify", f"archive:{archive}", "--key", keys.public("vendor"))
    refused(res, 12, "step 5", "a delta archive", f"{blobs['omitted']} blobs")
    refused(res, 12, f"its base demo:1.0.0@{vendor.v100} holds", "bundler import")
    shown = ok(tcli("inspect", f"archive:{archive}", "-o", "json")).json
    assert shown["delta"] == {
        "base": f"demo:1.0.0@{vendor.v100}",
        "absentBlobs": blobs["omitted"],
        "absentBytes": doc["omittedBytes"],
    }
    text = ok(tcli("inspect", f"archive:{archive}")).stdout
    assert f"delta   of demo:1.0.0@{vendor.v100}: {blobs['omitted']} blobs" in text


def test_delta_import_into_an_empty_registry_names_the_missing_blobs_and_tags_nothing(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    delta: tuple[Path, dict[str, object]],
    judge: Judge,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    archive, _ = delta
    reg = vendor.reg
    old = registry_graph(judge, reg, "vendor/demo", vendor.v100)
    new = registry_graph(judge, reg, "vendor/demo", vendor.v101)
    missing = set(new.blobs) & set(old.blobs)
    b = registry_factory("plain")
    res = import_(tcli, archive, b.ref("internal/demo:1.0.1"), keys.public("vendor"))
    base = f"import the base bundle demo:1.0.0@{vendor.v100} first"
    line = refused(res, 3, f"lacks {len(missing)} of them", base)
    named = set(re.findall(r"sha256:[0-9a-f]{64}", line)) - {vendor.v100}  # less the base
    assert named <= missing and len(named) == min(10, len(missing)), line
    if len(missing) > 10:
        assert f"and {len(missing) - 10} more" in line
    assert_nothing_tagged(judge, b, "internal/demo")
    assert storage_blobs(b) == set()  # checked before a single blob moved


def test_delta_against_a_base_archive_equals_the_delta_against_its_registry(
    tcli: Cli,
    vendor: Vendor,
    full_archive: Path,
    delta: tuple[Path, dict[str, object]],
    tmp_path: Path,
) -> None:
    """The previous export, kept on the vendor side, serves as the base just as well."""
    archive = tmp_path / "delta-from-archive.tar"
    doc = export(tcli, vendor.ref("1.0.1"), archive, "--base", f"archive:{full_archive}")
    assert set(blob_members(archive)) == set(blob_members(delta[0]))
    assert doc["blobs"] == delta[1]["blobs"]
    assert doc["omittedBytes"] == delta[1]["omittedBytes"]


def test_delta_into_a_layout_holding_the_base_is_verified_on_import(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    delta: tuple[Path, dict[str, object]],
    judge: Judge,
    tmp_path: Path,
) -> None:
    layout = tmp_path / "oci"
    ok(import_(tcli, full_archive, f"oci:{layout}:demo-1.0.0", keys.public("vendor")))
    res = ok(import_(tcli, delta[0], f"oci:{layout}:demo-1.0.1", keys.public("vendor")))
    assert res.json["verified"]["version"] == "1.0.1"
    assert res.json["alreadyAtTarget"] > 0
    for tag, digest in (("demo-1.0.0", vendor.v100), ("demo-1.0.1", vendor.v101)):
        assert judge.raw_digest(f"oci:{layout}:{tag}") == digest


def test_reexport_of_the_same_version_with_itself_as_base_imports(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    full_archive: Path,
    judge: Judge,
    tmp_path: Path,
    registry_factory: Callable[..., RegistryServer],
) -> None:
    """Carrying only new signatures: the far side holds 1.0.0 already, so every blob of it is
    left out (no layer travels), and the import into that registry must still succeed."""
    archive = tmp_path / "signatures-only.tar"
    doc = export(tcli, vendor.ref("1.0.0"), archive, "--base", vendor.ref("1.0.0"))
    bundle = archive_graph(full_archive, vendor.v100)
    layers = {d for d, size in bundle.blobs.items() if size > 64 * KiB}
    assert layers and not layers & set(blob_members(archive))
    assert doc["blobs"]["omitted"] > 0
    b = registry_factory("plain")
    ok(import_(tcli, full_archive, b.ref("internal/demo:1.0.0"), keys.public("vendor")))
    res = import_(tcli, archive, b.ref("internal/demo:1.0.0"), keys.public("vendor"))
    assert res.returncode == 0, res.describe()
    assert res.json["alreadyAtTarget"] == doc["blobs"]["omitted"]
    assert verified(tcli, b.ref("internal/demo:1.0.0"), keys.public("vendor")).startswith(
        vendor.v100
    )


# ---------------------------------------------------------------------- 5. archive size
def test_archive_is_the_unique_blobs_plus_tar_headers(
    vendor: Vendor,
    full_archive: Path,
) -> None:
    bundle = archive_graph(full_archive, vendor.v100)
    sigs = signature_graph(full_archive)
    expected = set(bundle.manifests) | set(bundle.blobs) | set(sigs.manifests) | set(sigs.blobs)
    sizes = blob_members(full_archive)  # asserts no member appears twice
    assert set(sizes) == expected
    assert sum(sizes.values()) > TOOLS_LAYER_BYTES
    count = len(members(full_archive))  # blobs, index.json, oci-layout, two directories
    assert count == len(sizes) + 4
    payload = (
        sum(sizes.values())
        + len(read_member(full_archive, "index.json"))
        + len(read_member(full_archive, "oci-layout"))
    )
    size = file_size(full_archive)
    # A 512-byte header and under 512 bytes of padding per member, the end-of-archive marker
    # and the padding of the last 10 KiB record: nothing else.
    assert payload < size <= payload + 1024 * count + 1024 + 10240, (payload, size)
    assert size <= payload * 1.01, (payload, size)


# ----------------------------------------------------------- 6. copy registry -> registry
def test_copy_within_a_registry_mounts_blobs_and_carries_signatures(
    tcli: Cli,
    keys: Keys,
    vendor: Vendor,
    judge: Judge,
) -> None:
    reg = vendor.reg
    repo = f"{unique('mirror')}/demo"
    doc = tcli.copy_ok(vendor.ref("1.0.0"), reg.ref(f"{repo}:1.0.0"))
    assert doc["digest"] == vendor.v100
    assert doc["blobs"]["mounted"] > 0
    assert doc["blobs"]["copied"] == 0 and doc["bytes"]["copied"] == 0
    source = registry_graph(judge, reg, "vendor/demo", vendor.v100)
    assert doc["blobs"]["mounted"] + doc["blobs"]["skipped"] >= len(source.blobs)
    tags = set(judge.tags(reg, repo))
    for digest in source.manifests:
        assert signature_tag(digest) in tags, digest
    assert judge.raw_digest(reg.docker_ref(f"{repo}:1.0.0"), reg) == vendor.v100
    verified(tcli, reg.ref(f"{repo}:1.0.0"), keys.public("vendor"))


def test_export_over_an_existing_archive_is_refused_unless_forced(
    tmp_path: Path, example_layout: Path, helm: str
) -> None:
    cli = pack_cli(tmp_path / "user", helm)
    pack(cli, example_layout, f"oci:{tmp_path / 'bundle'}")
    archive = tmp_path / "demo.tar"
    archive.write_bytes(b"someone's file")
    res = cli("export", f"oci:{tmp_path / 'bundle'}", "--to", f"archive:{archive}")
    assert res.returncode == 2, res.describe()
    assert f"{archive} is already there" in res.error_line and "--force" in res.error_line
    assert archive.read_bytes() == b"someone's file"
    doc = export(cli, f"oci:{tmp_path / 'bundle'}", archive, "--force")
    assert doc["digest"].startswith("sha256:")
    assert archive.stat().st_size > 1024
