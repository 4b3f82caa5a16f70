"""docker-archive: sources over ``docker save``-style tarballs built here with tarfile."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bundler.adapters import dockerarchive
from bundler.adapters.dockerarchive import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DockerArchiveSource,
)
from bundler.adapters.layout import LayoutDirectory, LayoutSource, LayoutTarget
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    UnsafeArchiveError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.services.copy import copy
from bundler.services.transports import Transports, parse_location


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LAYER_A = layer_tar({"etc/a.txt": b"alpha\n"})
LAYER_B = layer_tar({"usr/b.bin": bytes(range(256)) * 40})


@dataclass
class Image:
    tags: list[str]
    layers: list[bytes]
    diff_ids: list[str] | None = None  # default: sha256 of the uncompressed layers
    extra_config: dict[str, object] = field(default_factory=dict)


class TarBuilder:
    """Members in order; ``file`` / ``link`` / ``raw`` add them, ``write`` saves the tar."""

    def __init__(self) -> None:
        self.members: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def file(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o444
        self.members.append((info, data))

    def directory(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.members.append((info, None))

    def link(self, name: str, target: str, *, hard: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        self.members.append((info, None))

    def raw(self, info: tarfile.TarInfo) -> None:
        self.members.append((info, None))

    def write(self, path: Path) -> Path:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return path


def uncompressed(layer: bytes) -> bytes:
    return gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer


def docker_save(images: list[Image], *, links: bool = False) -> TarBuilder:
    """Legacy ``docker save`` layout: ``<id>/layer.tar``, ``<hex>.json``, manifest.json,
    repositories. With ``links``, layers are stored as ``<hex>.tar`` and ``<id>/layer.tar`` is a
    symbolic link to them, as skopeo (and docker, for a layer saved before) writes."""
    builder = TarBuilder()
    entries: list[dict[str, object]] = []
    repositories: dict[str, dict[str, str]] = {}
    stored: set[str] = set()
    for number, image in enumerate(images):
        diff_ids = image.diff_ids or [sha(uncompressed(layer)) for layer in image.layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/usr/bin"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                **image.extra_config,
            }
        ).encode()
        config_name = f"{hashlib.sha256(config).hexdigest()}.json"
        if config_name not in stored:
            builder.file(config_name, config)
            stored.add(config_name)
        paths: list[str] = []
        for position, layer in enumerate(image.layers):
            layer_id = hashlib.sha256(f"{number}/{position}".encode()).hexdigest()
            builder.directory(layer_id)
            if links:
                blob = f"{hashlib.sha256(layer).hexdigest()}.tar"
                if blob not in stored:
                    builder.file(blob, layer)
                    stored.add(blob)
                builder.link(f"{layer_id}/layer.tar", f"../{blob}")
            else:
                builder.file(f"{layer_id}/layer.tar", layer)
            builder.file(f"{layer_id}/VERSION", b"1.0")
            paths.append(f"{layer_id}/layer.tar")
            last_id = layer_id
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = last_id
        entries.append({"Config": config_name, "RepoTags": image.tags, "Layers": paths})
    builder.file("manifest.json", json.dumps(entries).encode())
    builder.file("repositories", json.dumps(repositories).encode())
    return builder


@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    return docker_save(
        [
            Image(["nginx:1.25", "nginx:latest"], [LAYER_A]),
            Image(["example.local/demo/api:1.0.0"], [LAYER_A, LAYER_B]),
        ]
    ).write(tmp_path / "two.tar")


def manifest_doc(source: DockerArchiveSource) -> dict[str, object]:
    doc: dict[str, object] = json.loads(source.manifest.raw)
    return doc


def blob_bytes(source: DockerArchiveSource, digest: str) -> bytes:
    descriptor = next(d for d in source.manifest.blobs() if str(d.digest) == digest)
    return read_exact(VerifiedStream(source.open_blob(descriptor), descriptor, "t"), 1 << 30)


# ------------------------------------------------------------------------ the manifest
def test_only_image_becomes_a_docker_v2_manifest(tmp_path: Path) -> None:
    path = docker_save([Image(["example.local/demo/api:1.0.0"], [LAYER_A, LAYER_B])]).write(
        tmp_path / "one.tar"
    )
    source = DockerArchiveSource(path, None)
    try:
        root = source.resolve()
        assert root.media_type == mt.DOCKER_MANIFEST
        assert root.digest == Digest.of(source.manifest.raw)
        manifest = source.fetch_manifest(root)
        assert manifest is source.manifest
        assert manifest.media_type == mt.DOCKER_MANIFEST
        assert manifest.config is not None
        assert manifest.config.media_type == mt.DOCKER_CONFIG
        assert [layer.media_type for layer in manifest.layers] == [DOCKER_LAYER, DOCKER_LAYER]
        assert [str(layer.digest) for layer in manifest.layers] == [sha(LAYER_A), sha(LAYER_B)]
        assert [layer.size for layer in manifest.layers] == [len(LAYER_A), len(LAYER_B)]
        # containers/image's serialisation: Go struct order, compact, no trailing newline
        assert source.manifest.raw.startswith(
            b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2'
            b'+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
            b'"size":'
        )
        assert source.manifest.raw.endswith(f'"digest":"{sha(LAYER_B)}"}}]}}'.encode())
        assert blob_bytes(source, sha(LAYER_B)) == LAYER_B
        config = blob_bytes(source, str(manifest.config.digest))
        assert json.loads(config)["rootfs"]["diff_ids"] == [sha(LAYER_A), sha(LAYER_B)]
        assert source.ref_name() == "example.local/demo/api:1.0.0"
        assert source.find_tag("sha256-abc.sig") is None
        assert source.referrers(root.digest) == []
        other = Digest.of(b"other")
        with pytest.raises(NotFoundError):
            source.open_blob(root.__class__(DOCKER_LAYER, other, 5))
        with pytest.raises(NotFoundError):
            source.fetch_manifest(root.__class__(mt.DOCKER_MANIFEST, other, 5))
    finally:
        source.close()


def test_gzip_layers_are_described_as_gzip_and_checked_uncompressed(tmp_path: Path) -> None:
    gz = gzip.compress(LAYER_B, mtime=0)
    multi = gzip.compress(LAYER_A[:700], mtime=0) + gzip.compress(LAYER_A[700:], mtime=0)
    path = docker_save([Image(["gz:1"], [gz, multi])]).write(tmp_path / "gz.tar")
    with_padding = docker_save([Image(["gz:1"], [gz + b"\0" * 512])]).write(tmp_path / "p.tar")
    source = DockerArchiveSource(path, None)
    try:
        layers = source.manifest.layers
        assert [d.media_type for d in layers] == [DOCKER_LAYER_GZIP, DOCKER_LAYER_GZIP]
        assert [str(d.digest) for d in layers] == [sha(gz), sha(multi)]
        assert blob_bytes(source, sha(gz)) == gz
    finally:
        source.close()
    DockerArchiveSource(with_padding, None).close()


def test_gzip_layer_against_wrong_diff_id_is_refused(tmp_path: Path) -> None:
    gz = gzip.compress(LAYER_B, mtime=0)
    path = docker_save([Image(["gz:1"], [gz], diff_ids=[sha(LAYER_A)])]).write(tmp_path / "g.tar")
    with pytest.raises(DigestMismatchError, match=r"layer\.tar"):
        DockerArchiveSource(path, None)


def test_truncated_gzip_layer_is_refused(tmp_path: Path) -> None:
    gz = gzip.compress(LAYER_B, mtime=0)[:-20]
    path = docker_save([Image(["gz:1"], [gz], diff_ids=[sha(LAYER_B)])]).write(tmp_path / "t.tar")
    with pytest.raises(ManifestError, match="truncated"):
        DockerArchiveSource(path, None)


def test_other_compressions_are_refused(tmp_path: Path) -> None:
    xz = lzma.compress(LAYER_A)
    path = docker_save([Image(["xz:1"], [xz], diff_ids=[sha(LAYER_A)])]).write(tmp_path / "x.tar")
    with pytest.raises(ManifestError, match="xz"):
        DockerArchiveSource(path, None)


def test_diff_id_mismatch_names_the_layer(tmp_path: Path) -> None:
    path = docker_save(
        [Image(["a:1"], [LAYER_A, LAYER_B], diff_ids=[sha(LAYER_A), sha(LAYER_A)])]
    ).write(tmp_path / "bad.tar")
    with pytest.raises(DigestMismatchError) as info:
        DockerArchiveSource(path, None)
    layer_id = hashlib.sha256(b"0/1").hexdigest()
    assert f"{layer_id}/layer.tar" in str(info.value)


def test_diff_id_count_must_match_layers(tmp_path: Path) -> None:
    path = docker_save([Image(["a:1"], [LAYER_A, LAYER_B], diff_ids=[sha(LAYER_A)])]).write(
        tmp_path / "count.tar"
    )
    with pytest.raises(ManifestError, match="diff_ids"):
        DockerArchiveSource(path, None)


def test_links_inside_the_archive_are_followed(tmp_path: Path) -> None:
    path = docker_save([Image(["a:1"], [LAYER_A, LAYER_B, LAYER_A])], links=True).write(
        tmp_path / "links.tar"
    )
    source = DockerArchiveSource(path, "a:1")
    try:
        assert [str(d.digest) for d in source.manifest.layers] == [
            sha(LAYER_A),
            sha(LAYER_B),
            sha(LAYER_A),
        ]
        assert blob_bytes(source, sha(LAYER_A)) == LAYER_A
    finally:
        source.close()


def test_docker_25_layout_archive(tmp_path: Path) -> None:
    # Docker 25+ writes an OCI layout too; manifest.json then points into blobs/sha256/.
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(LAYER_A)]}}).encode()
    builder = TarBuilder()
    builder.directory("blobs")
    builder.directory("blobs/sha256")
    for data in (config, LAYER_A):
        builder.file(f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
    builder.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    builder.file("index.json", b'{"schemaVersion":2,"manifests":[]}')
    builder.file(
        "manifest.json",
        json.dumps(
            [
                {
                    "Config": f"blobs/sha256/{hashlib.sha256(config).hexdigest()}",
                    "RepoTags": ["busybox:latest"],
                    "Layers": [f"blobs/sha256/{hashlib.sha256(LAYER_A).hexdigest()}"],
                }
            ]
        ).encode(),
    )
    source = DockerArchiveSource(builder.write(tmp_path / "d25.tar"), "busybox")
    try:
        assert source.ref_name() == "docker.io/library/busybox:latest"
        assert source.manifest.config is not None
        assert str(source.manifest.config.digest) == sha(config)
        assert blob_bytes(source, sha(LAYER_A)) == LAYER_A
    finally:
        source.close()


# ------------------------------------------------------------------------ selection
@pytest.mark.parametrize(
    ("ref", "expected_layers", "ref_name"),
    [
        ("nginx:1.25", 1, "docker.io/library/nginx:1.25"),
        ("docker.io/library/nginx:1.25", 1, "docker.io/library/nginx:1.25"),
        ("nginx", 1, "docker.io/library/nginx:latest"),
        ("example.local/demo/api:1.0.0", 2, "example.local/demo/api:1.0.0"),
        ("@0", 1, None),  # two RepoTags: no single name to carry over
        ("@1", 2, "example.local/demo/api:1.0.0"),
    ],
)
def test_select_by_tag_or_index(
    two_images: Path, ref: str, expected_layers: int, ref_name: str | None
) -> None:
    source = DockerArchiveSource(two_images, ref)
    try:
        assert len(source.manifest.layers) == expected_layers
        assert source.ref_name() == ref_name
        assert source.name == f"docker-archive:{two_images}:{ref}"
    finally:
        source.close()


def test_several_images_need_a_ref(two_images: Path) -> None:
    with pytest.raises(UsageError, match="holds 2 images") as info:
        DockerArchiveSource(two_images, None)
    assert "nginx:1.25" in str(info.value)
    assert "example.local/demo/api:1.0.0" in str(info.value)


@pytest.mark.parametrize("ref", ["nginx:1.26", "@2", "other/thing"])
def test_unknown_ref_lists_the_tags(two_images: Path, ref: str) -> None:
    with pytest.raises(UsageError) as info:
        DockerArchiveSource(two_images, ref)
    assert "nginx:latest" in str(info.value)


def test_digest_refs_are_refused(two_images: Path) -> None:
    with pytest.raises(UsageError, match="not digest"):
        DockerArchiveSource(two_images, f"nginx@{sha(b'x')}")


def test_a_tag_on_two_images_is_ambiguous(tmp_path: Path) -> None:
    path = docker_save(
        [Image(["dup:1"], [LAYER_A]), Image(["docker.io/library/dup:1"], [LAYER_B])]
    ).write(tmp_path / "dup.tar")
    with pytest.raises(ManifestError, match="several images"):
        DockerArchiveSource(path, "dup:1")


def test_untagged_image_has_no_ref_name(tmp_path: Path) -> None:
    builder = docker_save([Image([], [LAYER_A])])
    path = builder.write(tmp_path / "untagged.tar")
    source = DockerArchiveSource(path, None)
    try:
        assert source.ref_name() is None
    finally:
        source.close()


# ------------------------------------------------------------------------ hostile archives
def _hostile(tmp_path: Path, add: str) -> Path:
    builder = docker_save([Image(["a:1"], [LAYER_A])])
    if add == "dotdot":
        builder.file("../x", b"evil")
    elif add == "nested-dotdot":
        builder.file("sub/../../x", b"evil")
    elif add == "absolute":
        builder.file("/etc/cron.d/x", b"evil")
    elif add == "symlink-out":
        builder.link("evil", "../../etc/passwd")
    elif add == "symlink-absolute":
        builder.link("evil", "/etc/passwd")
    elif add == "hardlink":
        builder.link("evil", "manifest.json", hard=True)
    elif add in ("chardev", "fifo"):
        info = tarfile.TarInfo("dev")
        info.type = tarfile.CHRTYPE if add == "chardev" else tarfile.FIFOTYPE
        builder.raw(info)
    elif add == "duplicate":
        builder.file("manifest.json", b"[]")
    elif add == "duplicate-link":
        builder.link("repositories", "manifest.json")
    return builder.write(tmp_path / f"{add}.tar")


@pytest.mark.parametrize(
    "add",
    [
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink-out",
        "symlink-absolute",
        "hardlink",
        "chardev",
        "fifo",
        "duplicate",
        "duplicate-link",
    ],
)
def test_hostile_members_are_refused(tmp_path: Path, add: str) -> None:
    path = _hostile(tmp_path, add)
    with pytest.raises(UnsafeArchiveError):
        DockerArchiveSource(path, None)


def test_member_count_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = docker_save([Image(["a:1"], [LAYER_A])])
    path = builder.write(tmp_path / "many.tar")
    from bundler.adapters import archive

    monkeypatch.setattr(archive, "MAX_MEMBERS", len(builder.members) - 1)
    with pytest.raises(UnsafeArchiveError, match="more than"):
        DockerArchiveSource(path, None)


def test_not_a_tar_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x01" * 2048)
    with pytest.raises(UnsafeArchiveError):
        DockerArchiveSource(junk, None)
    with pytest.raises(NotFoundError):
        DockerArchiveSource(tmp_path / "absent.tar", None)


def test_layer_path_must_be_a_file_in_the_archive(tmp_path: Path) -> None:
    builder = TarBuilder()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(LAYER_A)]}}).encode()
    builder.file("c.json", config)
    builder.link("loop1", "loop2")
    builder.link("loop2", "loop1")
    for layers, match in ((["missing/layer.tar"], "not a file"), (["loop1"], "chain")):
        builder.members = [m for m in builder.members if m[0].name != "manifest.json"]
        builder.file(
            "manifest.json",
            json.dumps([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": layers}]).encode(),
        )
        path = builder.write(tmp_path / "m.tar")
        with pytest.raises(ManifestError, match=match):
            DockerArchiveSource(path, None)


# ------------------------------------------------------------------------ manifest.json
@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'[{"Config": "a.json", "Config": "b.json", "RepoTags": [], "Layers": []}]',
        b'{"Config": "a.json"}',
        b"[]",
        b'[{"RepoTags": ["a:1"], "Layers": []}]',
        b'[{"Config": "a.json", "RepoTags": "a:1", "Layers": []}]',
        b'[{"Config": "a.json", "RepoTags": ["a:1"], "Layers": "x/layer.tar"}]',
        b'[{"Config": "a.json", "RepoTags": ["a:1"], "Layers": [""]}]',
        b'[{"Config": "a.json", "RepoTags": ["a:1"], "Layers": [], '
        b'"LayerSources": {"sha256:00": {}}}]',
        b"[42]",
    ],
)
def test_malformed_manifest_json(tmp_path: Path, content: bytes) -> None:
    builder = TarBuilder()
    builder.file("a.json", b'{"rootfs": {"type": "layers", "diff_ids": []}}')
    builder.file("manifest.json", content)
    path = builder.write(tmp_path / "bad.tar")
    with pytest.raises(ManifestError):
        DockerArchiveSource(path, None)


def test_manifest_json_is_required_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = TarBuilder()
    builder.file("repositories", b"{}")
    with pytest.raises(NotFoundError, match=r"manifest\.json"):
        DockerArchiveSource(builder.write(tmp_path / "none.tar"), None)
    path = docker_save([Image(["a:1"], [LAYER_A])]).write(tmp_path / "ok.tar")
    monkeypatch.setattr(dockerarchive, "MAX_MANIFEST_JSON_BYTES", 16)
    with pytest.raises(ManifestError, match="exceeds"):
        DockerArchiveSource(path, None)


def test_config_must_carry_diff_ids(tmp_path: Path) -> None:
    builder = TarBuilder()
    builder.file("c.json", b'{"rootfs": {"type": "layers"}}')
    builder.file("manifest.json", b'[{"Config": "c.json", "RepoTags": null, "Layers": []}]')
    with pytest.raises(ManifestError, match="diff_ids"):
        DockerArchiveSource(builder.write(tmp_path / "c.tar"), None)


# ------------------------------------------------------------------------ transports, copy
def test_locations_and_source_only(tmp_path: Path) -> None:
    loc = parse_location("docker-archive:images/x.tar:nginx:1.25")
    assert (loc.kind, loc.path, loc.ref) == ("docker-archive", Path("images/x.tar"), "nginx:1.25")
    loc = parse_location("docker-archive:x.tar:@1")
    assert loc.ref == "@1"
    assert parse_location("docker-archive:x.tar").ref is None
    transports = Transports(use_blob_cache=False)
    try:
        with pytest.raises(UsageError, match="source only"):
            transports.open_target(parse_location("docker-archive:x.tar:a:1", for_target=True))
    finally:
        transports.close()


def test_copy_into_a_layout_keeps_the_manifest_bytes(two_images: Path, tmp_path: Path) -> None:
    transports = Transports(use_blob_cache=False)
    source = transports.open_source(parse_location(f"docker-archive:{two_images}:@1"))
    layout = tmp_path / "layout"
    try:
        assert isinstance(source, DockerArchiveSource)
        result = copy(source, LayoutTarget(layout, None))
        assert result.tag == "example.local/demo/api:1.0.0"
        assert result.blobs == 3  # config, LAYER_A, LAYER_B
        back = LayoutSource(LayoutDirectory(layout), "example.local/demo/api:1.0.0")
        root = back.resolve()
        assert root.digest == source.resolve().digest
        assert back.fetch_manifest(root).raw == source.manifest.raw
    finally:
        source.close()
        transports.close()
