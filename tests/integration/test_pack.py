"""``bundler pack`` and ``bundler inspect`` on the example chart, run the way a user runs them.

Judged by independent tools: real registries (docker distribution), skopeo and real Helm v4.
Covers: one bundle digest whatever the image source or target, Helm pulling and rendering the
chart straight out of a bundle, skopeo copying images out of an archive bundle, reproducible
bytes (and what changes them), the lock document against its schema, inspect's view including
a cosign-style signature, a Helm OCI chart kept byte for byte, and ``bundler images`` agreeing
with the lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import requests
from copy_support import (
    API_REF,
    WEB_REF,
    WORKER_REF,
    Cli,
    Judge,
    archive_ref_names,
    layout_entry,
    layout_json,
    leftovers,
    push_with_skopeo,
    registry_flags,
    sha256_digest,
    unique,
)
from harness.registry import RegistryServer
from pack_support import (
    BUNDLE_ARTIFACT_TYPE,
    BUNDLE_TAG,
    DEFAULT_RENDERING,
    DEMO_CHART,
    EXAMPLE_CONFIG,
    EXAMPLE_REFS,
    EXPECTED_VALUE_PATHS,
    HELM_CHART,
    HELM_CONFIG,
    LOCK_SCHEMA,
    MIGRATE_REF,
    OCI_INDEX,
    OCI_MANIFEST,
    ROLE,
    Helm,
    archive_blob,
    archive_blob_sizes,
    archive_json,
    bundle_index_of,
    chart_entry,
    image_entries,
    inspect_ok,
    layout_source,
    lock_of,
    pack_cli,
    pack_ok,
    rendered_images,
)


@pytest.fixture
def cli(tmp_path: Path, helm: str) -> Cli:
    return pack_cli(tmp_path / "user", helm)


@pytest.fixture(scope="module")
def archive_bundle(
    helm: str, example_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The example packed once from the shared layout into an archive: (path, pack JSON)."""
    home = tmp_path_factory.mktemp("archive-bundle")
    path = home / "demo-bundle.tar"
    doc = pack_ok(
        pack_cli(home / "user", helm),
        "--chart",
        DEMO_CHART,
        *layout_source(example_layout),
        "--to",
        f"archive:{path}",
    )
    return path, doc


def source_digests(layout: Path) -> dict[str, str]:
    return {ref: layout_entry(layout, ref)["digest"] for ref in EXAMPLE_REFS}


# ------------------------------------------------- 1. one bundle digest, whatever the route
def test_same_bundle_digest_from_layout_or_registry_to_archive_oci_and_registries(
    cli: Cli,
    judge: Judge,
    example_layout: Path,
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    sources = source_digests(example_layout)
    base: list[str | Path] = ["--chart", DEMO_CHART]

    # oci: layout -> archive
    carry = tmp_path / "usb"
    carry.mkdir()
    archive = carry / "demo.tar"
    doc = pack_ok(cli, *base, *layout_source(example_layout), "--to", f"archive:{archive}")
    digest = doc["digest"]
    assert doc["tag"] == BUNDLE_TAG
    assert {i["reference"]: i["digest"] for i in doc["images"]} == sources
    assert all(i["pulledFrom"].startswith(f"oci:{example_layout}:") for i in doc["images"])
    assert leftovers(carry) == [] and [p.name for p in carry.iterdir()] == ["demo.tar"]
    assert sorted(archive_ref_names(archive)) == sorted([BUNDLE_TAG, *EXAMPLE_REFS])
    index_raw = archive_blob(archive, digest)
    assert sha256_digest(index_raw) == digest
    index = json.loads(index_raw)
    assert index["mediaType"] == OCI_INDEX
    assert index["artifactType"] == BUNDLE_ARTIFACT_TYPE
    assert sorted(m["annotations"][ROLE] for m in index["manifests"]) == (
        ["chart", "image", "image", "image", "image", "lock"]
    )
    assert {r: d["digest"] for r, d in image_entries(index).items()} == sources

    # oci: layout -> oci: layout directory, every image named by its reference
    oci_dir = tmp_path / "oci-bundle"
    doc = pack_ok(cli, *base, *layout_source(example_layout), "--to", f"oci:{oci_dir}")
    assert doc["digest"] == digest
    assert layout_entry(oci_dir, BUNDLE_TAG)["digest"] == digest
    for ref, src in sources.items():
        assert layout_entry(oci_dir, ref)["digest"] == src

    # oci: layout -> plain registry, and -> TLS registry with basic auth and a CA file
    repo = f"{unique('bundles')}/demo"
    doc = pack_ok(
        cli, *base, *layout_source(example_layout), "--to", plain_registry.ref(f"{repo}:1.0.0")
    )
    assert doc["digest"] == digest
    assert judge.raw_digest(plain_registry.docker_ref(f"{repo}:1.0.0"), plain_registry) == digest
    cli.login_config(tls_registry)
    tls_repo = f"{unique('bundles')}/demo"
    doc = pack_ok(
        cli,
        *base,
        *layout_source(example_layout),
        *registry_flags(tls_registry),
        "--to",
        tls_registry.ref(f"{tls_repo}:1.0.0"),
    )
    assert doc["digest"] == digest
    assert judge.raw_digest(tls_registry.docker_ref(f"{tls_repo}:1.0.0"), tls_registry) == (digest)

    # registry source: the images pushed under a mirror prefix, example.local never asked
    prefix = unique("mirror")
    for ref in EXAMPLE_REFS:
        path = ref.split("/", 1)[1]  # demo/web:1.0.0
        pushed = push_with_skopeo(judge, example_layout, ref, plain_registry, f"{prefix}/{path}")
        assert pushed == sources[ref]
    mirrored = tmp_path / "from-registry.tar"
    doc = pack_ok(
        cli,
        *base,
        "--mirror",
        f"example.local={plain_registry.host}/{prefix}",
        "--no-upstream",
        "--to",
        f"archive:{mirrored}",
    )
    assert doc["digest"] == digest
    assert {i["pulledFrom"] for i in doc["images"]} == {
        plain_registry.ref(f"{prefix}/{ref.split('/', 1)[1]}") for ref in EXAMPLE_REFS
    }
    # the lock records no source location, so even the bytes are the same
    assert mirrored.read_bytes() == archive.read_bytes()


def test_example_bundle_config_packs_with_paths_relative_to_the_file(
    cli: Cli,
    synth: ModuleType,
    tmp_path: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
) -> None:
    # The repository's example layout: examples/bundle.yaml, chart/demo beside it, the synth
    # images in ../out/images; run from an unrelated working directory.
    root = tmp_path / "project"
    (root / "examples").mkdir(parents=True)
    shutil.copy(EXAMPLE_CONFIG, root / "examples" / "bundle.yaml")
    shutil.copytree(DEMO_CHART, root / "examples" / "chart" / "demo")
    synth.example_set(root / "out" / "images")
    out = tmp_path / "bundle.tar"
    doc = pack_ok(cli, root / "examples" / "bundle.yaml", "--to", f"archive:{out}")
    _, plain = archive_bundle
    # the same chart and images as a flag-only pack; the config's annotation is on the index
    assert doc["chart"] == plain["chart"]
    assert [(i["reference"], i["digest"]) for i in doc["images"]] == [
        (i["reference"], i["digest"]) for i in plain["images"]
    ]
    index = bundle_index_of(out)
    assert index["annotations"]["org.opencontainers.image.vendor"] == "Example Vendor"
    assert doc["digest"] != plain["digest"]


# ------------------------------------------------------- 2. Helm reads the chart in a bundle
def test_helm_pulls_and_templates_the_chart_inside_a_registry_bundle(
    cli: Cli,
    judge: Judge,
    helm: str,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    repo = f"{unique('bundles')}/demo"
    digest = pack_ok(
        cli,
        "--chart",
        DEMO_CHART,
        *layout_source(example_layout),
        "--to",
        plain_registry.ref(f"{repo}:1.0.0"),
    )["digest"]
    index_raw = judge.raw(plain_registry.docker_ref(f"{repo}:1.0.0"), plain_registry)
    assert sha256_digest(index_raw) == digest
    chart = chart_entry(json.loads(index_raw))
    assert chart["mediaType"] == OCI_MANIFEST
    chart_manifest = json.loads(
        judge.raw(plain_registry.docker_ref(f"{repo}@{chart['digest']}"), plain_registry)
    )
    assert chart_manifest["config"]["mediaType"] == HELM_CONFIG
    [layer] = chart_manifest["layers"]
    assert layer["mediaType"] == HELM_CHART

    run_helm = Helm(helm, tmp_path / "helm")
    chart_url = f"oci://{plain_registry.host}/{repo}@{chart['digest']}"
    pulled_dir = tmp_path / "pulled"
    pulled_dir.mkdir()
    run_helm("pull", chart_url, "--plain-http", "-d", pulled_dir)
    [pulled] = list(pulled_dir.glob("*.tgz"))
    blob = requests.get(f"{plain_registry.url}/v2/{repo}/blobs/{layer['digest']}", timeout=30)
    assert blob.status_code == 200
    assert pulled.read_bytes() == blob.content
    assert sha256_digest(blob.content) == layer["digest"]

    assert rendered_images(run_helm("template", "x", chart_url, "--plain-http")) == set(
        EXAMPLE_REFS
    )
    assert rendered_images(run_helm("template", "x", pulled)) == set(EXAMPLE_REFS)


# ------------------------------------------------- 3. skopeo reads images in an archive bundle
def test_skopeo_copies_each_image_out_of_an_archive_bundle(
    judge: Judge,
    example_layout: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    archive, _ = archive_bundle
    sources = source_digests(example_layout)
    out = tmp_path / "out"
    for ref in EXAMPLE_REFS:
        name = ref.split("/")[-1].split(":")[0]
        flags = ["--all"] if ref == WEB_REF else []
        judge.skopeo_run(
            "copy", "--quiet", *flags, f"oci-archive:{archive}:{ref}", f"oci:{out}:{name}"
        )
        assert layout_entry(out, name)["digest"] == sources[ref], ref
    web_index = layout_json(out, sources[WEB_REF])
    assert len(web_index["manifests"]) == 2  # both platforms came out, children verified


# --------------------------------------------------------------------- 4. reproducibility
def test_packing_twice_gives_identical_archives(
    cli: Cli,
    example_layout: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    first, doc = archive_bundle
    second = tmp_path / "again.tar"
    again = pack_ok(
        cli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", f"archive:{second}"
    )
    assert again["digest"] == doc["digest"]
    assert second.read_bytes() == first.read_bytes()


def test_a_rebuilt_image_changes_the_bundle_digest(
    cli: Cli,
    synth: ModuleType,
    example_layout_copy: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    _, original = archive_bundle
    before = source_digests(example_layout_copy)
    rebuilt = synth.write_image(
        example_layout_copy,
        API_REF,
        [synth.LayerSpec("demo-api-rebuilt", 40 * 1024, "app/api.bin")],
        entrypoint=["/app/api.bin"],
    )
    assert rebuilt["digest"] != before[API_REF]
    out = tmp_path / "rebuilt.tar"
    doc = pack_ok(
        cli, "--chart", DEMO_CHART, *layout_source(example_layout_copy), "--to", f"archive:{out}"
    )
    assert doc["digest"] != original["digest"]
    lock = lock_of(cli, f"archive:{out}")
    assert {i["reference"]: i["digest"] for i in lock["images"]} == {
        **before,
        API_REF: rebuilt["digest"],
    }


def test_created_now_stamps_the_bundle_and_changes_its_digest(
    cli: Cli,
    example_layout: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    _, original = archive_bundle
    out = tmp_path / "stamped.tar"
    doc = pack_ok(
        cli,
        "--chart",
        DEMO_CHART,
        *layout_source(example_layout),
        "--created",
        "now",
        "--to",
        f"archive:{out}",
    )
    assert doc["digest"] != original["digest"]
    created = bundle_index_of(out)["annotations"]["org.opencontainers.image.created"]
    assert created.endswith("Z") and created.startswith("20")
    assert lock_of(cli, f"archive:{out}")["bundle"]["created"] == created
    assert lock_of(cli, f"archive:{archive_bundle[0]}")["bundle"]["created"] is None


def test_platform_filter_keeps_one_child_with_its_bytes_untouched(
    cli: Cli,
    example_layout: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    _, original = archive_bundle
    sources = source_digests(example_layout)
    web_index = layout_json(example_layout, sources[WEB_REF])
    by_arch = {m["platform"]["architecture"]: m for m in web_index["manifests"]}
    out = tmp_path / "amd64.tar"
    doc = pack_ok(
        cli,
        "--chart",
        DEMO_CHART,
        *layout_source(example_layout),
        "--platform",
        "linux/amd64",
        "--to",
        f"archive:{out}",
    )
    assert doc["digest"] != original["digest"]

    entries = image_entries(bundle_index_of(out))
    web = entries[WEB_REF]
    assert web["mediaType"] == OCI_INDEX
    assert web["digest"] != sources[WEB_REF]
    filtered = archive_json(out, web["digest"])
    assert filtered["manifests"] == [by_arch["amd64"]]  # the child descriptor as published
    child = archive_blob(out, by_arch["amd64"]["digest"])
    assert (
        child
        == (
            example_layout / "blobs" / "sha256" / by_arch["amd64"]["digest"].split(":")[1]
        ).read_bytes()
    )
    assert by_arch["arm64"]["digest"] not in archive_blob_sizes(out)
    # single-platform images are untouched
    for ref in (API_REF, WORKER_REF, MIGRATE_REF):
        assert entries[ref]["digest"] == sources[ref]

    lock = {i["reference"]: i for i in lock_of(cli, f"archive:{out}")["images"]}
    assert lock[WEB_REF]["platforms"] == ["linux/amd64"]
    assert lock[WEB_REF]["digest"] == web["digest"]


def test_a_platform_some_images_lack_is_refused_unless_allowed(
    cli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    out = tmp_path / "arm64.tar"
    flags: list[str | Path] = [
        "--chart",
        DEMO_CHART,
        *layout_source(example_layout),
        "--platform",
        "linux/arm64",
    ]
    res = cli("pack", *flags, "--to", f"archive:{out}")
    assert res.returncode == 3, res.describe()
    line = res.error_line
    assert "3 image(s) lack a platform asked for" in line and "--allow-missing-platforms" in line
    for ref in (API_REF, WORKER_REF, MIGRATE_REF):
        assert f"{ref} lacks linux/arm64 (has linux/amd64)" in line
    assert not out.exists()
    doc = pack_ok(cli, *flags, "--allow-missing-platforms", "--to", f"archive:{out}")
    lock = {i["reference"]: i for i in lock_of(cli, f"archive:{out}")["images"]}
    assert lock[WEB_REF]["platforms"] == ["linux/arm64/v8"]
    assert lock[API_REF]["platforms"] == ["linux/amd64"]
    assert doc["digest"]


def test_a_source_that_does_not_exist_is_an_error_not_a_fallback(
    cli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-layout"
    res = cli(
        "pack",
        "--chart",
        DEMO_CHART,
        "--source",
        f"oci:{missing}",
        "--source",
        f"oci:{example_layout}",
        "--to",
        f"oci:{tmp_path / 'out'}",
    )
    assert res.returncode == 3, res.describe()
    assert f"image source oci:{missing} does not exist" in res.error_line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 5. the lock and inspect
def test_lock_document_validates_and_records_value_paths_and_sources(
    cli: Cli,
    example_layout: Path,
    archive_bundle: tuple[Path, dict[str, Any]],
) -> None:
    archive, doc = archive_bundle
    lock = lock_of(cli, f"archive:{archive}")
    schema = json.loads(LOCK_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(lock))
    assert errors == [], [e.message for e in errors]

    assert lock["bundle"] == {"name": "demo", "version": "1.0.0", "created": None}
    assert lock["chart"]["name"] == "demo" and lock["chart"]["version"] == "1.0.0"
    assert lock["chart"]["appVersion"] == "1.0.0"
    assert lock["chart"]["source"] == "directory"
    assert lock["completeness"] == {
        "rendered": True,
        "allowedMissing": [],
        "rendering": DEFAULT_RENDERING,
    }
    assert [i["reference"] for i in lock["images"]] == sorted(EXAMPLE_REFS)
    images = {i["reference"]: i for i in lock["images"]}
    assert {r: i["digest"] for r, i in images.items()} == source_digests(example_layout)
    for ref, image in images.items():
        assert image["valuePaths"] == EXPECTED_VALUE_PATHS[ref], ref
        assert set(image["foundBy"]) == {"annotation", "values", "template"}, ref
    assert images[WEB_REF]["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert images[WEB_REF]["mediaType"] == OCI_INDEX
    for ref in (API_REF, WORKER_REF, MIGRATE_REF):
        assert images[ref]["platforms"] == ["linux/amd64"]
        assert images[ref]["mediaType"] == OCI_MANIFEST

    # the lock in the archive is the one the index pins, in canonical JSON
    index = bundle_index_of(archive)
    [lock_entry] = [m for m in index["manifests"] if m["annotations"][ROLE] == "lock"]
    [layer] = archive_json(archive, lock_entry["digest"])["layers"]
    raw = archive_blob(archive, layer["digest"])
    assert json.loads(raw) == lock
    assert raw == json.dumps(lock, sort_keys=True, separators=(",", ":")).encode()
    assert lock["chart"]["manifest"] == chart_entry(index)["digest"] == doc["chart"]["manifest"]


def test_inspect_shows_chart_images_sizes_and_a_cosign_signature(
    cli: Cli,
    example_layout: Path,
    registry_factory: Any,
    archive_bundle: tuple[Path, dict[str, Any]],
) -> None:
    archive, packed = archive_bundle
    reg: RegistryServer = registry_factory("plain")
    repo = "vendor/demo"
    digest = pack_ok(
        cli, "--chart", DEMO_CHART, *layout_source(example_layout), "--to", reg.ref(f"{repo}:1.0.0")
    )["digest"]
    assert digest == packed["digest"]

    doc = inspect_ok(cli, reg.ref(f"{repo}:1.0.0"))
    assert doc["digest"] == digest and doc["bundle"] is True
    assert doc["artifactType"] == BUNDLE_ARTIFACT_TYPE
    assert (doc["name"], doc["version"]) == ("demo", "1.0.0")
    assert doc["chart"]["digest"] == chart_entry(bundle_index_of(archive))["digest"]
    assert (doc["chart"]["name"], doc["chart"]["version"]) == ("demo", "1.0.0")
    assert doc["chart"]["size"] > 0
    lock = {i["reference"]: i for i in lock_of(cli, f"archive:{archive}")["images"]}
    assert [i["reference"] for i in doc["images"]] == sorted(EXAMPLE_REFS)
    for image in doc["images"]:
        locked = lock[image["reference"]]
        assert image["digest"] == locked["digest"]
        assert image["platforms"] == locked["platforms"]
        assert image["size"] == locked["size"] > 0
        assert image["valuePaths"] == [v["path"] for v in locked["valuePaths"]]
    # web and worker share their base layer: counted in each image's total, once in unique
    total, unique_bytes = doc["bytes"]["total"], doc["bytes"]["unique"]
    assert total >= unique_bytes
    assert unique_bytes == sum(archive_blob_sizes(archive).values())
    sources = source_digests(example_layout)
    web_amd64 = layout_json(
        example_layout, layout_json(example_layout, sources[WEB_REF])["manifests"][0]["digest"]
    )
    worker = layout_json(example_layout, sources[WORKER_REF])

    def layers(manifest: dict[str, Any]) -> set[tuple[str, int]]:
        return {(layer["digest"], layer["size"]) for layer in manifest["layers"]}

    shared = layers(web_amd64) & layers(worker)
    assert total - unique_bytes == sum(size for _, size in shared) > 0
    assert doc["signatures"] == []
    text = cli("inspect", reg.ref(f"{repo}:1.0.0"))
    assert text.returncode == 0 and "no signatures found" in text.stdout

    sig_digest = put_cosign_signature(reg, repo, digest)
    doc = inspect_ok(cli, reg.ref(f"{repo}:1.0.0"))
    tag = "sha256-" + digest.split(":")[1] + ".sig"
    assert doc["signatures"] == [
        {
            "kind": "cosign-tag",
            "digest": sig_digest,
            "tag": tag,
            "artifactType": None,
            "certificates": [],  # a key's signature carries no certificate
        }
    ]
    # inspecting by digest finds it too
    by_digest = inspect_ok(cli, reg.ref(f"{repo}@{digest}"))
    assert [s["digest"] for s in by_digest["signatures"]] == [sig_digest]


def put_cosign_signature(reg: RegistryServer, repo: str, subject: str) -> str:
    """A cosign "simple signing" signature manifest for ``subject``, pushed under cosign's
    ``sha256-<hex>.sig`` tag with plain distribution API calls; returns its digest."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{reg.host}/{repo}"},
                "image": {"docker-manifest-digest": subject},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = ec.generate_private_key(ec.SECP256R1()).sign(payload, ec.ECDSA(hashes.SHA256()))
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
        },
        separators=(",", ":"),
    ).encode()

    def upload(data: bytes) -> str:
        digest = sha256_digest(data)
        start = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=30)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = reg.url + location
        sep = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{sep}digest={digest}",
            data=data,
            timeout=30,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return digest

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": upload(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": upload(payload),
                    "size": len(payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode(),
                    },
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    tag = "sha256-" + subject.split(":")[1] + ".sig"
    put = requests.put(
        f"{reg.url}/v2/{repo}/manifests/{tag}",
        data=manifest,
        timeout=30,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == sha256_digest(manifest)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


# ---------------------------------------------------------- 7. a Helm OCI chart as the chart
def test_pack_from_a_helm_oci_chart_keeps_its_manifest_bytes(
    cli: Cli,
    judge: Judge,
    helm: str,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    run_helm = Helm(helm, tmp_path / "helm")
    packaged_dir = tmp_path / "packaged"
    packaged_dir.mkdir()
    run_helm("package", DEMO_CHART, "-d", packaged_dir)
    packaged = packaged_dir / "demo-1.0.0.tgz"
    charts = unique("charts")
    run_helm("push", packaged, f"oci://{plain_registry.host}/{charts}", "--plain-http")
    chart_ref = f"{charts}/demo:1.0.0"
    pushed_raw = judge.raw(plain_registry.docker_ref(chart_ref), plain_registry)
    pushed = sha256_digest(pushed_raw)

    out = tmp_path / "from-oci-chart.tar"
    doc = pack_ok(
        cli,
        "--chart",
        f"oci://{plain_registry.host}/{chart_ref}",
        *layout_source(example_layout),
        "--to",
        f"archive:{out}",
    )
    index = bundle_index_of(out)
    entry = chart_entry(index)
    assert entry["digest"] == pushed
    assert archive_blob(out, pushed) == pushed_raw  # the manifest's bytes, not a re-write
    [layer] = json.loads(pushed_raw)["layers"]
    assert archive_blob(out, layer["digest"]) == packaged.read_bytes()
    lock = lock_of(cli, f"archive:{out}")
    assert lock["chart"]["source"] == "oci"
    assert lock["chart"]["manifest"] == pushed == doc["chart"]["manifest"]
    assert lock["chart"]["archive"] == layer["digest"]
    assert {i["reference"] for i in lock["images"]} == set(EXAMPLE_REFS)


def test_a_chart_reference_without_a_version_takes_the_newest_release_as_helm_does(
    cli: Cli,
    helm: str,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    run_helm = Helm(helm, tmp_path / "helm")
    charts = unique("charts")
    for version in ("1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1"):
        chart = tmp_path / f"src-{version}" / "demo"
        shutil.copytree(DEMO_CHART, chart)
        text = (chart / "Chart.yaml").read_text().replace("version: 1.0.0", f"version: {version}")
        (chart / "Chart.yaml").write_text(text)
        run_helm("package", chart, "-d", tmp_path / "packaged")
        packaged = tmp_path / "packaged" / f"demo-{version}.tgz"
        run_helm("push", packaged, f"oci://{plain_registry.host}/{charts}", "--plain-http")
    out = tmp_path / "newest.tar"
    flags = [*layout_source(example_layout), "--to", f"archive:{out}"]
    doc = pack_ok(cli, "--chart", f"oci://{plain_registry.host}/{charts}/demo", *flags)
    assert doc["chart"]["version"] == "1.10.0"  # not 2.0.0-rc.1, not the last pushed


def test_pack_from_a_helm_packaged_chart_archive_keeps_its_bytes(
    cli: Cli,
    helm: str,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    # `helm package` writes a gzip header with an extra field and a comment (FEXTRA|FCOMMENT):
    # every chart archive Helm makes looks like this.
    run_helm = Helm(helm, tmp_path / "helm")
    run_helm("package", DEMO_CHART, "-d", tmp_path)
    packaged = tmp_path / "demo-1.0.0.tgz"
    assert packaged.read_bytes()[3] & 0x04  # FEXTRA

    out = tmp_path / "from-tgz.tar"
    pack_ok(cli, "--chart", packaged, *layout_source(example_layout), "--to", f"archive:{out}")
    chart_manifest = archive_json(out, chart_entry(bundle_index_of(out))["digest"])
    [layer] = chart_manifest["layers"]
    assert archive_blob(out, layer["digest"]) == packaged.read_bytes()
    lock = lock_of(cli, f"archive:{out}")
    assert lock["chart"]["source"] == "archive"
    assert lock["chart"]["archive"] == layer["digest"]


# -------------------------------------------------------- 8. `bundler images` agrees with the lock
def test_images_command_agrees_with_the_lock(
    cli: Cli,
    archive_bundle: tuple[Path, dict[str, Any]],
) -> None:
    archive, _ = archive_bundle
    res = cli("images", DEMO_CHART, "-o", "json")
    assert res.returncode == 0, res.describe()
    found = res.json
    assert found["rendered"] is True
    lock = lock_of(cli, f"archive:{archive}")
    assert {i["reference"] for i in found["images"]} == {i["reference"] for i in lock["images"]}
    listed = {i["reference"]: i for i in found["images"]}
    for image in lock["images"]:
        assert image["foundBy"] == listed[image["reference"]]["foundBy"]
        assert image["valuePaths"] == listed[image["reference"]]["valuePaths"]
        assert image["uses"] == listed[image["reference"]]["uses"]
