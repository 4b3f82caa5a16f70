"""``bundler copy`` against real registries, judged by skopeo, raw HTTP and oras-py.

Covers: digests kept across registry -> archive -> registry, multi-arch indexes travelling
whole, both directions of interoperability with skopeo's ``oci:``/``oci-archive:``, tampered
registry content refused with nothing named, re-runs skipping what is there, and signatures
and OCI referrers (tag-schema fallback) travelling through an archive.
"""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests
from copy_support import (
    API_REF,
    WEB_REF,
    Cli,
    Judge,
    archive_index,
    archive_ref_names,
    graph,
    layout_entry,
    layout_index,
    layout_json,
    leftovers,
    push_with_skopeo,
    registry_blob_file,
    registry_flags,
    sha256_digest,
    unique,
    write_artifact_layout,
)
from harness.registry import RegistryServer, start_registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


# ------------------------------------------------------------ digests survive the trip
def test_registry_archive_registry_keeps_every_digest(
    cli: Cli,
    judge: Judge,
    example_layout: Path,
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    src_repo = unique("trip/web")
    src_digest = push_with_skopeo(
        judge, example_layout, WEB_REF, plain_registry, f"{src_repo}:1.0.0"
    )
    assert src_digest == layout_entry(example_layout, WEB_REF)["digest"]
    manifests, blobs = graph(example_layout, src_digest)

    # registry -> archive, named after the source reference
    carry = tmp_path / "usb"
    carry.mkdir()
    archive = carry / "web.tar"
    doc = cli.copy_ok(plain_registry.ref(f"{src_repo}:1.0.0"), f"archive:{archive}")
    assert doc["digest"] == src_digest
    assert doc["mediaType"] == OCI_INDEX
    assert doc["manifests"] == len(manifests)
    assert doc["blobs"]["total"] == len(blobs)
    assert doc["bytes"]["total"] == sum(blobs.values())
    ref_name = doc["tag"]
    assert ref_name == plain_registry.ref(f"{src_repo}:1.0.0")
    assert archive_ref_names(archive) == [ref_name]
    assert leftovers(carry) == []

    # skopeo reads the archive under the name written in its index.json
    assert judge.raw_digest(f"oci-archive:{archive}:{ref_name}") == src_digest
    skopeo_copy = tmp_path / "skopeo-from-archive"
    judge.skopeo_run(
        "copy", "--all", "--quiet", f"oci-archive:{archive}:{ref_name}", f"oci:{skopeo_copy}:web"
    )
    assert layout_entry(skopeo_copy, "web")["digest"] == src_digest

    # archive -> another registry (TLS + basic auth)
    cli.login_config(tls_registry)
    dst_repo = unique("trip/web")
    doc = cli.copy_ok(
        f"archive:{archive}:{ref_name}",
        tls_registry.ref(f"{dst_repo}:1.0.0"),
        *registry_flags(tls_registry),
    )
    assert doc["digest"] == src_digest
    assert doc["tag"] == "1.0.0"
    assert judge.raw_digest(tls_registry.docker_ref(f"{dst_repo}:1.0.0"), tls_registry) == (
        src_digest
    )
    for child in manifests[1:]:
        got = judge.raw_digest(tls_registry.docker_ref(f"{dst_repo}@{child}"), tls_registry)
        assert got == child
    for blob, size in blobs.items():
        assert judge.blob_size(tls_registry, dst_repo, blob) == size
    # skopeo pulls everything back, checking every blob digest on the way
    pulled = tmp_path / "pulled"
    judge.skopeo_run(
        "copy",
        "--all",
        "--quiet",
        *tls_registry.skopeo_args(src=True),
        tls_registry.docker_ref(f"{dst_repo}:1.0.0"),
        f"oci:{pulled}:web",
    )
    assert layout_entry(pulled, "web")["digest"] == src_digest


def test_multiarch_index_travels_whole(
    cli: Cli,
    judge: Judge,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    index_digest = layout_entry(example_layout, WEB_REF)["digest"]
    manifests, blobs = graph(example_layout, index_digest)
    index = layout_json(example_layout, index_digest)
    assert len(index["manifests"]) == 2  # amd64 + arm64

    repo = unique("multi/web")
    doc = cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", plain_registry.ref(f"{repo}:1.0.0"))
    assert doc["digest"] == index_digest
    assert doc["manifests"] == 3
    assert doc["blobs"]["total"] == len(blobs)
    assert doc["blobs"]["copied"] == len(blobs)
    assert doc["tags"] == ["1.0.0"]

    assert judge.raw_digest(plain_registry.docker_ref(f"{repo}:1.0.0"), plain_registry) == (
        index_digest
    )
    for child in index["manifests"]:
        raw = judge.raw(plain_registry.docker_ref(f"{repo}@{child['digest']}"), plain_registry)
        assert sha256_digest(raw) == child["digest"]
        assert len(raw) == child["size"]
        image = json.loads(raw)
        for desc in [image["config"], *image["layers"]]:
            assert judge.blob_size(plain_registry, repo, desc["digest"]) == desc["size"]
    # Every platform is there, not only the one skopeo would pick for this machine.
    for platform in (["--override-arch", "amd64"], ["--override-arch", "arm64"]):
        info = judge.skopeo_run(
            *platform,
            "inspect",
            *plain_registry.skopeo_args(),
            plain_registry.docker_ref(f"{repo}:1.0.0"),
        )
        assert json.loads(info)["Architecture"] == platform[1]

    # ...and it travels whole onwards, registry to registry.
    repo2 = unique("multi/web-again")
    doc = cli.copy_ok(plain_registry.ref(f"{repo}:1.0.0"), plain_registry.ref(f"{repo2}:v1"))
    assert doc["digest"] == index_digest
    assert doc["manifests"] == 3
    pulled = tmp_path / "pulled"
    judge.skopeo_run(
        "copy",
        "--all",
        "--quiet",
        *plain_registry.skopeo_args(src=True),
        plain_registry.docker_ref(f"{repo2}:v1"),
        f"oci:{pulled}:web",
    )
    assert graph(pulled, index_digest) == (manifests, blobs)


# ------------------------------------------------------------------ skopeo interop
def test_skopeo_reads_our_layout_and_archive(
    cli: Cli, judge: Judge, example_layout: Path, tmp_path: Path
) -> None:
    api_digest = layout_entry(example_layout, API_REF)["digest"]
    web_digest = layout_entry(example_layout, WEB_REF)["digest"]

    out = tmp_path / "out-layout"
    doc = cli.copy_ok(f"oci:{example_layout}:{API_REF}", f"oci:{out}:api")
    assert doc["digest"] == api_digest
    info = judge.inspect(f"oci:{out}:api")
    assert info["Digest"] == api_digest
    assert info["Architecture"] == "amd64"
    assert judge.raw_digest(f"oci:{out}:api") == api_digest

    tar = tmp_path / "web.tar"
    doc = cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", f"archive:{tar}:web")
    assert doc["digest"] == web_digest
    assert archive_ref_names(tar) == ["web"]
    assert judge.raw_digest(f"oci-archive:{tar}:web") == web_digest
    assert judge.inspect(f"oci-archive:{tar}:web")["Digest"] == web_digest
    # skopeo can copy out of our archive (it verifies every blob it reads)
    extracted = tmp_path / "skopeo-layout"
    judge.skopeo_run("copy", "--all", "--quiet", f"oci-archive:{tar}:web", f"oci:{extracted}:w")
    assert graph(extracted, web_digest) == graph(example_layout, web_digest)

    # Metadata first, so an importer can check it before the big blobs stream past.
    manifests, blobs = graph(example_layout, web_digest)
    with tarfile.open(tar) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    assert names[:2] == ["oci-layout", "index.json"]
    positions = {name.rsplit("/", 1)[-1]: i for i, name in enumerate(names)}
    last_manifest = max(positions[d.split(":")[1]] for d in manifests)
    first_blob = min(positions[d.split(":")[1]] for d in blobs)
    assert last_manifest < first_blob


def test_we_read_what_skopeo_wrote(
    cli: Cli,
    judge: Judge,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    skopeo_layout = tmp_path / "by-skopeo"
    judge.skopeo_run(
        "copy", "--all", "--quiet", f"oci:{example_layout}:{WEB_REF}", f"oci:{skopeo_layout}:web"
    )
    judge.skopeo_run(
        "copy", "--quiet", f"oci:{example_layout}:{API_REF}", f"oci:{skopeo_layout}:api"
    )
    web_digest = layout_entry(skopeo_layout, "web")["digest"]
    api_digest = layout_entry(skopeo_layout, "api")["digest"]

    repo = unique("from-skopeo/web")
    doc = cli.copy_ok(f"oci:{skopeo_layout}:web", plain_registry.ref(f"{repo}:1"))
    assert doc["digest"] == web_digest
    assert doc["manifests"] == 3
    assert judge.raw_digest(plain_registry.docker_ref(f"{repo}:1"), plain_registry) == (web_digest)

    tar = tmp_path / "api.tar"
    doc = cli.copy_ok(f"oci:{skopeo_layout}:api", f"archive:{tar}")
    assert doc["digest"] == api_digest
    assert archive_ref_names(tar) == ["api"]  # the source's ref name carries over
    assert judge.raw_digest(f"oci-archive:{tar}:api") == api_digest


# ------------------------------------------------------------------ tampered content
def _push_api(cli: Cli, example_layout: Path, reg: RegistryServer, repo: str) -> dict[str, Any]:
    doc = cli.copy_ok(f"oci:{example_layout}:{API_REF}", reg.ref(f"{repo}:1.0.0"))
    manifest = layout_json(example_layout, doc["digest"])
    return max(manifest["layers"], key=lambda d: d["size"])


def _tampered(original: bytes, how: str) -> bytes:
    flipped = bytes(b ^ 0x5A for b in original)
    if how == "same-length":
        return flipped
    if how == "longer":
        return flipped + b"tail" * 100
    if how == "shorter":
        return flipped[:-100]
    raise AssertionError(how)


def _assert_nothing_named(
    kind: str, out_dir: Path, layer_digest: str, transport_failure: bool = False
) -> None:
    if kind == "oci":
        layout = out_dir / "layout"
        refs = [
            (m.get("annotations") or {}).get(REF_NAME) for m in layout_index(layout)["manifests"]
        ]
        assert refs == ["keep"], refs
        hexpart = layer_digest.split(":")[1]
        assert not (layout / "blobs" / "sha256" / hexpart).exists()
        assert [
            p.name for p in (layout / "blobs" / "sha256").iterdir() if p.name.startswith(".")
        ] == []
    else:
        assert not (out_dir / "out.tar").exists()
        # A transport failure keeps the hidden partial archive so that a re-run resumes; it
        # holds only whole members, and never the archive's own name.
        allowed = [".out.tar.partial"] if transport_failure else []
        assert [p for p in leftovers(out_dir) if p not in allowed] == []
        assert sorted(p.name for p in out_dir.iterdir()) == sorted(
            ["layout", *(p for p in allowed if (out_dir / p).exists())]
        )


def _prepare_targets(cli: Cli, example_layout: Path, out_dir: Path) -> dict[str, str]:
    out_dir.mkdir()
    # The oci target already holds another image: it must survive untouched.
    cli.copy_ok(
        f"oci:{example_layout}:example.local/demo/migrate:1.0.0", f"oci:{out_dir / 'layout'}:keep"
    )
    return {"oci": f"oci:{out_dir / 'layout'}:x", "archive": f"archive:{out_dir / 'out.tar'}:x"}


@pytest.mark.parametrize("how", ["same-length", "longer"])
@pytest.mark.parametrize("kind", ["oci", "archive"])
def test_tampered_registry_blob_is_refused_and_nothing_named(
    cli: Cli,
    example_layout: Path,
    registry_factory: Any,
    tmp_path: Path,
    kind: str,
    how: str,
) -> None:
    reg: RegistryServer = registry_factory("plain")
    layer = _push_api(cli, example_layout, reg, "tamper/api")
    data_file = registry_blob_file(reg, layer["digest"])
    original = data_file.read_bytes()
    assert len(original) == layer["size"]
    data_file.write_bytes(_tampered(original, how))

    out_dir = tmp_path / "out"
    targets = _prepare_targets(cli, example_layout, out_dir)
    res = cli.copy(reg.ref("tamper/api:1.0.0"), targets[kind])
    assert res.returncode == 6, res.describe()
    assert res.error_line.startswith("error: ")
    assert layer["digest"] in res.error_line
    res.assert_no_result()
    _assert_nothing_named(kind, out_dir, layer["digest"])


@pytest.mark.parametrize("how", ["shorter", "longer"])
def test_registry_declaring_a_tampered_size_is_refused(
    cli: Cli,
    example_layout: Path,
    registry_binary: str,
    tmp_path: Path,
    how: str,
) -> None:
    """The registry restarted over tampered storage declares the new length itself."""
    workdir = tmp_path / "registry"
    reg = start_registry("plain", workdir, binary=registry_binary)
    try:
        layer = _push_api(cli, example_layout, reg, "tamper/api")
    finally:
        reg.stop()
    data_file = registry_blob_file(reg, layer["digest"])
    data_file.write_bytes(_tampered(data_file.read_bytes(), how))
    reg = start_registry("plain", workdir, binary=registry_binary)
    try:
        out_dir = tmp_path / "out"
        targets = _prepare_targets(cli, example_layout, out_dir)
        for kind in ("oci", "archive"):
            res = cli.copy(reg.ref("tamper/api:1.0.0"), targets[kind])
            assert res.returncode == 6, res.describe()
            assert res.error_line.startswith("error: ")
            assert layer["digest"] in res.error_line
            _assert_nothing_named(kind, out_dir, layer["digest"])
    finally:
        reg.stop()


def test_registry_cutting_a_blob_short_fails_and_names_nothing(
    cli: Cli,
    example_layout: Path,
    registry_factory: Any,
    tmp_path: Path,
) -> None:
    """A body shorter than the Content-Length the registry sent is a broken transfer."""
    reg: RegistryServer = registry_factory("plain")
    layer = _push_api(cli, example_layout, reg, "tamper/api")
    data_file = registry_blob_file(reg, layer["digest"])
    data_file.write_bytes(_tampered(data_file.read_bytes(), "shorter"))
    out_dir = tmp_path / "out"
    targets = _prepare_targets(cli, example_layout, out_dir)
    for kind in ("oci", "archive"):
        res = cli.copy(reg.ref("tamper/api:1.0.0"), targets[kind])
        assert res.returncode in (5, 6), res.describe()
        assert res.error_line.startswith("error: ")
        assert layer["digest"] in res.error_line
        _assert_nothing_named(kind, out_dir, layer["digest"], res.returncode == 5)


# ------------------------------------------------------------------------- re-runs
def test_rerun_skips_blobs_already_present(
    cli: Cli,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    repo = unique("rerun/web")
    first = cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", plain_registry.ref(f"{repo}:1.0.0"))
    total = first["blobs"]["total"]
    assert first["blobs"]["copied"] == total and first["blobs"]["skipped"] == 0
    again = cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", plain_registry.ref(f"{repo}:1.0.0"))
    assert again["digest"] == first["digest"]
    assert again["blobs"] == {
        "total": total,
        "copied": 0,
        "skipped": total,
        "mounted": 0,
        "omitted": 0,
    }
    assert again["bytes"]["copied"] == 0

    layout = tmp_path / "layout"
    cli.copy_ok(plain_registry.ref(f"{repo}:1.0.0"), f"oci:{layout}:web")
    again = cli.copy_ok(plain_registry.ref(f"{repo}:1.0.0"), f"oci:{layout}:web")
    assert again["blobs"] == {
        "total": total,
        "copied": 0,
        "skipped": total,
        "mounted": 0,
        "omitted": 0,
    }
    assert [m["annotations"][REF_NAME] for m in layout_index(layout)["manifests"]] == ["web"]


# ---------------------------------------------------------- signatures and referrers
def _put_blob(reg: RegistryServer, repo: str, data: bytes) -> dict[str, Any]:
    resp = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=30)
    assert resp.status_code == 202, resp.text
    location = requests.compat.urljoin(reg.url + "/", resp.headers["Location"])
    digest = sha256_digest(data)
    resp = requests.put(
        location,
        params={"digest": digest},
        data=data,
        timeout=30,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    return {"digest": digest, "size": len(data)}


def _put_manifest(reg: RegistryServer, repo: str, ref: str, doc: dict[str, Any]) -> bytes:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    resp = requests.put(
        f"{reg.url}/v2/{repo}/manifests/{ref}",
        data=raw,
        timeout=30,
        headers={"Content-Type": doc["mediaType"]},
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == sha256_digest(raw)
    return raw


def _sign_and_attach(reg: RegistryServer, repo: str, subject: dict[str, Any]) -> tuple[str, str]:
    """A cosign-style signature and an OCI 1.1 referrer (with its fallback tag) on subject.

    Returns (signature manifest digest, referrer manifest digest).
    """
    hexpart = subject["digest"].split(":")[1]
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reg.ref(repo)},
                "image": {"docker-manifest-digest": subject["digest"]},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
        }
    ).encode()
    sig_raw = _put_manifest(
        reg,
        repo,
        f"sha256-{hexpart}.sig",
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_put_blob(reg, repo, config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    **_put_blob(reg, repo, payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(
                            b"not-checked"
                        ).decode()
                    },
                }
            ],
        },
    )
    artifact_type = "application/vnd.example.sbom.v1+json"
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **_put_blob(reg, repo, b"{}")},
        "layers": [
            {"mediaType": artifact_type, **_put_blob(reg, repo, b'{"packages":["demo-api"]}')}
        ],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"},
    }
    ref_raw = json.dumps(referrer, separators=(",", ":")).encode()
    _put_manifest(reg, repo, sha256_digest(ref_raw), referrer)
    _put_manifest(
        reg,
        repo,
        f"sha256-{hexpart}",
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256_digest(ref_raw),
                    "size": len(ref_raw),
                    "artifactType": artifact_type,
                }
            ],
        },
    )
    return sha256_digest(sig_raw), sha256_digest(ref_raw)


def test_signatures_and_referrers_travel_through_an_archive(
    cli: Cli,
    judge: Judge,
    example_layout: Path,
    plain_registry: RegistryServer,
    registry_factory: Any,
    tmp_path: Path,
) -> None:
    repo = unique("signed/api")
    entry = layout_entry(example_layout, API_REF)
    cli.copy_ok(f"oci:{example_layout}:{API_REF}", plain_registry.ref(f"{repo}:1.0"))
    subject = {"mediaType": OCI_MANIFEST, "digest": entry["digest"], "size": entry["size"]}
    sig_digest, referrer_digest = _sign_and_attach(plain_registry, repo, subject)
    hexpart = entry["digest"].split(":")[1]
    sig_tag, fallback_tag = f"sha256-{hexpart}.sig", f"sha256-{hexpart}"

    tar = tmp_path / "signed.tar"
    doc = cli.copy_ok(plain_registry.ref(f"{repo}:1.0"), f"archive:{tar}:api")
    assert doc["digest"] == entry["digest"]
    assert doc["referrers"] == [referrer_digest]
    assert sorted(doc["tags"]) == sorted(["api", sig_tag])
    entries = {m["digest"]: m for m in archive_index(tar)["manifests"]}
    assert entries[sig_digest]["annotations"][REF_NAME] == sig_tag
    assert entries[referrer_digest]["artifactType"] == "application/vnd.example.sbom.v1+json"
    assert judge.raw_digest(f"oci-archive:{tar}:{sig_tag}") == sig_digest

    dst = registry_factory("plain")
    doc = cli.copy_ok(f"archive:{tar}:api", dst.ref("imported/api:1.0"))
    assert doc["digest"] == entry["digest"]
    assert doc["referrers"] == [referrer_digest]
    assert sig_tag in doc["tags"]

    # the signature tag resolves to the very same manifest
    assert judge.manifest_digest(dst, "imported/api", sig_tag) == sig_digest
    assert judge.raw_digest(dst.docker_ref(f"imported/api:{sig_tag}"), dst) == sig_digest
    sig = json.loads(judge.manifest(dst, "imported/api", sig_tag).content)
    for desc in [sig["config"], *sig["layers"]]:
        assert judge.blob_size(dst, "imported/api", desc["digest"]) == desc["size"]
    # the referrer is there by digest, and the fallback index lists it
    assert judge.manifest_digest(dst, "imported/api", referrer_digest) == referrer_digest
    fallback = judge.manifest(dst, "imported/api", fallback_tag)
    assert fallback.status_code == 200, fallback.text
    index = fallback.json()
    assert index["mediaType"] == OCI_INDEX
    listed = {m["digest"]: m for m in index["manifests"]}
    assert referrer_digest in listed
    assert listed[referrer_digest]["artifactType"] == "application/vnd.example.sbom.v1+json"
    referrer = json.loads(judge.manifest(dst, "imported/api", referrer_digest).content)
    assert referrer["subject"]["digest"] == entry["digest"]
    for desc in [referrer["config"], *referrer["layers"]]:
        assert judge.blob_size(dst, "imported/api", desc["digest"]) == desc["size"]


def test_no_referrers_leaves_signatures_behind(
    cli: Cli,
    example_layout: Path,
    plain_registry: RegistryServer,
    judge: Judge,
    tmp_path: Path,
) -> None:
    repo = unique("signed/api")
    entry = layout_entry(example_layout, API_REF)
    cli.copy_ok(f"oci:{example_layout}:{API_REF}", plain_registry.ref(f"{repo}:1.0"))
    subject = {"mediaType": OCI_MANIFEST, "digest": entry["digest"], "size": entry["size"]}
    _sign_and_attach(plain_registry, repo, subject)

    dst_repo = unique("unsigned/api")
    doc = cli.copy_ok(
        plain_registry.ref(f"{repo}:1.0"), plain_registry.ref(f"{dst_repo}:1.0"), "--no-referrers"
    )
    assert doc["referrers"] == [] and doc["tags"] == ["1.0"]
    assert judge.tags(plain_registry, dst_repo) == ["1.0"]

    tar = tmp_path / "unsigned.tar"
    doc = cli.copy_ok(plain_registry.ref(f"{repo}:1.0"), f"archive:{tar}:api", "--no-referrers")
    assert doc["referrers"] == [] and doc["tags"] == ["api"]
    assert [m["digest"] for m in archive_index(tar)["manifests"]] == [entry["digest"]]


# ----------------------------------------------------------------- oras-py as a peer
def test_oras_reads_what_we_pushed(
    cli: Cli,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    try:
        import oras.provider
    except ImportError as exc:  # pragma: no cover - oras is a runtime dependency
        pytest.skip(f"oras-py is not importable: {exc}")
    files = [("hello.txt", b"hello from the air gap\n"), ("data.bin", bytes(range(256)) * 64)]
    layout = tmp_path / "artifact"
    digest = write_artifact_layout(layout, "v1", files)
    repo = unique("oras/artifact")
    doc = cli.copy_ok(f"oci:{layout}:v1", plain_registry.ref(f"{repo}:v1"))
    assert doc["digest"] == digest

    client = oras.provider.Registry(hostname=plain_registry.host, insecure=True)
    target = plain_registry.ref(f"{repo}:v1")
    manifest = client.get_manifest(target)
    assert manifest == layout_json(layout, digest)
    assert manifest["artifactType"] == "application/vnd.example.files.v1"
    out = tmp_path / "pulled"
    pulled = client.pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == sorted(name for name, _ in files)
    for name, data in files:
        assert (out / name).read_bytes() == data
