"""docker-archive: sources against skopeo, which writes, reads and pushes the same archives.

skopeo builds the archives (``skopeo copy oci:... docker-archive:...``), and judges what bundler
pushed: ``skopeo inspect --raw`` for the bytes, ``skopeo copy docker://... oci:...`` for a full
pull that checks every blob.

How the manifests compare: containers/image describes a docker archive's image with the same
bytes bundler builds (Go's field order, compact JSON) except one field: it labels every layer
``...rootfs.diff.tar.gzip`` even when the stored tar is uncompressed, while bundler labels an
uncompressed layer ``...rootfs.diff.tar``. skopeo pushes that description unchanged only with
``--preserve-digests``; by default it compresses the layers with Go's gzip, reuses blobs the
registry already holds, or substitutes compressed variants its machine-wide blob cache
remembers, so what it pushes then depends on that state and is not reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from copy_support import API_REF, WORKER_REF, Cli, Judge, layout_entry, layout_json, unique
from harness.registry import RegistryServer

GZIP_LAYER = b'"application/vnd.docker.image.rootfs.diff.tar.gzip"'
TAR_LAYER = b'"application/vnd.docker.image.rootfs.diff.tar"'
EXTRA_TAG = "example.local/demo/api:stable"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def archives(
    judge: Judge, example_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Archives skopeo wrote: ``api`` (two RepoTags), ``worker``, and ``both`` (assembled)."""
    out = tmp_path_factory.mktemp("docker-archives")
    api, worker = out / "api.tar", out / "worker.tar"
    judge.skopeo_run(
        "copy",
        "--quiet",
        "--additional-tag",
        EXTRA_TAG,
        f"oci:{example_layout}:{API_REF}",
        f"docker-archive:{api}:{API_REF}",
    )
    judge.skopeo_run(
        "copy",
        "--quiet",
        f"oci:{example_layout}:{WORKER_REF}",
        f"docker-archive:{worker}:{WORKER_REF}",
    )
    both = out / "both.tar"
    merge_archives([api, worker], both)
    return {"api": api, "worker": worker, "both": both}


def merge_archives(parts: list[Path], out: Path) -> None:
    """One archive holding the images of all ``parts`` (what ``docker save a b`` writes)."""
    entries: list[Any] = []
    repositories: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    with tarfile.open(out, "w") as dst:
        for part in parts:
            with tarfile.open(part) as src:
                for info in src.getmembers():
                    data = src.extractfile(info) if info.isreg() else None
                    if info.name == "manifest.json":
                        assert data is not None
                        entries.extend(json.load(data))
                    elif info.name == "repositories":
                        assert data is not None
                        for repo, tags in json.load(data).items():
                            repositories.setdefault(repo, {}).update(tags)
                    elif info.name not in seen:
                        seen.add(info.name)
                        dst.addfile(info, data)
        for name, doc in (("manifest.json", entries), ("repositories", repositories)):
            raw = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            dst.addfile(info, io.BytesIO(raw))


def gzip_archive(layout: Path, ref: str, out: Path) -> dict[str, Any]:
    """A legacy docker archive whose layers are the layout's gzip blobs, stored as they are."""
    manifest = layout_json(layout, layout_entry(layout, ref)["digest"])
    blobs = layout / "blobs" / "sha256"
    with tarfile.open(out, "w") as tar:
        config_name = manifest["config"]["digest"].split(":")[1] + ".json"
        tar.add(blobs / config_name.removesuffix(".json"), arcname=config_name)
        paths = []
        for number, layer in enumerate(manifest["layers"]):
            path = f"layer{number}/layer.tar"
            tar.add(blobs / layer["digest"].split(":")[1], arcname=path)
            paths.append(path)
        raw = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": paths}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return manifest


def pull_with_skopeo(judge: Judge, reg: RegistryServer, ref: str, dest: Path) -> dict[str, Any]:
    """A full pull into an OCI layout (skopeo checks every blob it reads); its manifest."""
    judge.skopeo_run(
        "copy", "--quiet", *reg.skopeo_args(src=True), reg.docker_ref(ref), f"oci:{dest}:t"
    )
    return layout_json(dest, layout_entry(dest, "t")["digest"])


# ---------------------------------------------------------------------------------- tests
def test_push_matches_skopeo_description_of_the_archive(
    cli: Cli,
    judge: Judge,
    plain_registry: RegistryServer,
    archives: dict[str, Path],
    tmp_path: Path,
) -> None:
    source = f"docker-archive:{archives['api']}:{API_REF}"
    repo = unique("docker-archive/api")
    result = cli.copy_ok(source, plain_registry.ref(f"{repo}:1"))
    pushed = judge.raw(plain_registry.docker_ref(f"{repo}:1"), plain_registry)
    assert result["digest"] == sha(pushed)
    assert result["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert result["tags"] == ["1"]

    # Byte for byte what containers/image builds from the archive, but for the layer type.
    described = judge.raw(source)
    assert GZIP_LAYER in described and GZIP_LAYER not in pushed
    assert pushed == described.replace(GZIP_LAYER, TAR_LAYER)

    # skopeo pushes exactly that description when it must keep digests ...
    verbatim = unique("docker-archive/skopeo-verbatim")
    judge.skopeo_run(
        "copy",
        "--quiet",
        "--preserve-digests",
        *plain_registry.skopeo_args(dest=True),
        source,
        plain_registry.docker_ref(f"{verbatim}:1"),
    )
    assert judge.raw(plain_registry.docker_ref(f"{verbatim}:1"), plain_registry) == described
    # ... while by default it compresses the layers, reuses blobs the registry already has or
    # substitutes compressed variants its blob cache remembers: which layers it pushes depends
    # on that state (here our uncompressed ones are already there), only the config is fixed.
    default = unique("docker-archive/skopeo-default")
    judge.skopeo_run(
        "copy",
        "--quiet",
        *plain_registry.skopeo_args(dest=True),
        source,
        plain_registry.docker_ref(f"{default}:1"),
    )
    by_default = json.loads(judge.raw(plain_registry.docker_ref(f"{default}:1"), plain_registry))
    ours = json.loads(pushed)
    assert by_default["config"] == ours["config"]
    assert len(by_default["layers"]) == len(ours["layers"])

    # The layers are the archive's files, which are the diff_ids the config records.
    config = json.loads(
        judge.skopeo_run(
            "inspect",
            "--config",
            "--raw",
            *plain_registry.skopeo_args(),
            plain_registry.docker_ref(f"{repo}:1"),
        )
    )
    assert [x["digest"] for x in ours["layers"]] == config["rootfs"]["diff_ids"]

    pull_with_skopeo(judge, plain_registry, f"{repo}:1", tmp_path / "pulled")
    # dir: keeps the manifest and blobs as the registry serves them, each checked on the way.
    judge.skopeo_run(
        "copy",
        "--quiet",
        *plain_registry.skopeo_args(src=True),
        plain_registry.docker_ref(f"{repo}:1"),
        f"dir:{tmp_path / 'dir'}",
    )
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == pushed
    for layer in ours["layers"]:
        stored = (tmp_path / "dir" / layer["digest"].split(":")[1]).read_bytes()
        assert sha(stored) == layer["digest"] and len(stored) == layer["size"]

    # A second copy finds everything in place.
    again = cli.copy_ok(source, plain_registry.ref(f"{repo}:1"))
    assert again["digest"] == result["digest"]
    assert again["blobs"]["copied"] == 0


def test_copy_to_layout_and_archive_keeps_the_manifest(
    cli: Cli,
    judge: Judge,
    plain_registry: RegistryServer,
    archives: dict[str, Path],
    tmp_path: Path,
) -> None:
    source = f"docker-archive:{archives['api']}:{API_REF}"
    described = judge.raw(source).replace(GZIP_LAYER, TAR_LAYER)
    layout = tmp_path / "layout"
    result = cli.copy_ok(source, f"oci:{layout}")
    assert result["tag"] == API_REF  # the RepoTag carries over as the layout ref name
    entry = layout_entry(layout, API_REF)
    assert entry["digest"] == sha(described)
    assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes() == described

    archive = tmp_path / "out.tar"
    assert cli.copy_ok(source, f"archive:{archive}:api")["digest"] == sha(described)
    # Back out of both into the registry, and pulled by skopeo.
    for name, location in (
        ("from-layout", f"oci:{layout}:{API_REF}"),
        ("from-archive", f"archive:{archive}:api"),
    ):
        repo = unique(f"docker-archive/{name}")
        cli.copy_ok(location, plain_registry.ref(f"{repo}:1"))
        assert judge.raw(plain_registry.docker_ref(f"{repo}:1"), plain_registry) == described
        pull_with_skopeo(judge, plain_registry, f"{repo}:1", tmp_path / f"pulled-{name}")


def test_select_among_images_and_tags(
    cli: Cli,
    judge: Judge,
    plain_registry: RegistryServer,
    archives: dict[str, Path],
) -> None:
    both = archives["both"]
    worker = judge.raw(f"docker-archive:{archives['worker']}").replace(GZIP_LAYER, TAR_LAYER)
    api = judge.raw(f"docker-archive:{archives['api']}").replace(GZIP_LAYER, TAR_LAYER)
    repo = unique("docker-archive/select")
    for ref, expected in ((WORKER_REF, worker), ("@1", worker), ("@0", api), (EXTRA_TAG, api)):
        result = cli.copy_ok(f"docker-archive:{both}:{ref}", plain_registry.ref(f"{repo}:x"))
        assert result["digest"] == sha(expected), ref
    # skopeo agrees on what each selector means.
    assert judge.raw(f"docker-archive:{both}:@1").replace(GZIP_LAYER, TAR_LAYER) == worker

    ambiguous = cli.copy(f"docker-archive:{both}", plain_registry.ref(f"{repo}:y"))
    assert ambiguous.returncode == 2, ambiguous.describe()
    assert "holds 2 images" in ambiguous.stderr
    assert WORKER_REF in ambiguous.stderr and EXTRA_TAG in ambiguous.stderr
    unknown = cli.copy(
        f"docker-archive:{both}:example.local/demo/web:1.0.0", plain_registry.ref(f"{repo}:y")
    )
    assert unknown.returncode == 2, unknown.describe()
    assert "no image tagged" in unknown.stderr


def test_gzip_layers_keep_their_bytes(
    cli: Cli,
    judge: Judge,
    plain_registry: RegistryServer,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "gzip.tar"
    original = gzip_archive(example_layout, API_REF, archive)
    repo = unique("docker-archive/gzip")
    cli.copy_ok(f"docker-archive:{archive}", plain_registry.ref(f"{repo}:1"))
    pushed = json.loads(judge.raw(plain_registry.docker_ref(f"{repo}:1"), plain_registry))
    assert pushed["config"]["digest"] == original["config"]["digest"]
    assert [(x["mediaType"], x["digest"], x["size"]) for x in pushed["layers"]] == [
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", x["digest"], x["size"])
        for x in original["layers"]
    ]
    pull_with_skopeo(judge, plain_registry, f"{repo}:1", tmp_path / "pulled")


def test_tampered_layer_is_refused_before_anything_moves(
    cli: Cli,
    plain_registry: RegistryServer,
    archives: dict[str, Path],
    tmp_path: Path,
) -> None:
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(archives["api"].read_bytes())
    with tarfile.open(tampered) as tar:
        layer = next(m for m in tar.getmembers() if m.isreg() and m.name.endswith(".tar"))
    with open(tampered, "r+b") as fh:
        fh.seek(layer.offset_data + layer.size // 2)
        byte = fh.read(1)
        fh.seek(-1, io.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    repo = unique("docker-archive/tampered")
    res = cli.copy(f"docker-archive:{tampered}:{API_REF}", plain_registry.ref(f"{repo}:1"))
    assert res.returncode == 6, res.describe()
    assert layer.name in res.stderr


def test_docker_archive_is_not_a_target(
    cli: Cli, archives: dict[str, Path], tmp_path: Path
) -> None:
    res = cli.copy(
        f"docker-archive:{archives['api']}:{API_REF}",
        f"docker-archive:{tmp_path}/out.tar:{API_REF}",
    )
    assert res.returncode == 2, res.describe()
    assert "source only" in res.stderr
    assert not (tmp_path / "out.tar").exists()


def test_gzip_helper_layers_are_really_gzip(example_layout: Path, tmp_path: Path) -> None:
    # Guard for test_gzip_layers_keep_their_bytes: the layout's layers are gzip streams.
    manifest = layout_json(example_layout, layout_entry(example_layout, API_REF)["digest"])
    first = manifest["layers"][0]["digest"].split(":")[1]
    data = (example_layout / "blobs" / "sha256" / first).read_bytes()
    assert gzip.decompress(data)
