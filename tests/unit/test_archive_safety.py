"""Layout archives: hostile tar members are refused before any byte is served, and a copy
into an archive never leaves a file behind when content turns out bad."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from bundler.adapters.archive import ArchiveReader, ArchiveTarget
from bundler.adapters.layout import LayoutDirectory, LayoutSource, LayoutTarget
from bundler.adapters.stream import VerifiedStream
from bundler.errors import DigestMismatchError, NotFoundError, UnsafeArchiveError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.services.copy import copy

REF = "example.local/unit/app:1.0"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, synth: ModuleType) -> Path:
    """A small synthetic single-image layout (shared: copy before modifying)."""
    out = tmp_path_factory.mktemp("synth") / "layout"
    synth.write_image(
        out,
        REF,
        [
            synth.LayerSpec("unit-base", 8 * 1024, level=0),
            synth.LayerSpec("unit-app", 4 * 1024, level=0),
        ],
    )
    return out


# -- building hostile tars ---------------------------------------------------------------

LAYOUT_DOC = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_INDEX = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
BLOB = b"blob content"
BLOB_NAME = f"blobs/sha256/{Digest.of(BLOB).hex}"


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _base() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [_file("oci-layout", LAYOUT_DOC), _file("index.json", EMPTY_INDEX)]


def test_minimal_clean_archive_is_accepted(tmp_path: Path) -> None:
    reader = ArchiveReader(_write_tar(tmp_path / "ok.tar", [*_base(), _file(BLOB_NAME, BLOB)]))
    try:
        assert reader.read_file("index.json", 1024) == EMPTY_INDEX
    finally:
        reader.close()


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "../../etc/cron.d/x",
        "blobs/../../evil",
        "blobs/sha256/../../../evil",
        "./../evil",
        "..",
    ],
)
def test_parent_directory_escape_is_refused(tmp_path: Path, name: str) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _file(name, b"x")])
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        ArchiveReader(tar)


@pytest.mark.parametrize("name", ["/etc/passwd", "/oci-layout", "//index.json"])
def test_absolute_path_is_refused(tmp_path: Path, name: str) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _file(name, b"x")])
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        ArchiveReader(tar)


def test_backslash_path_is_refused(tmp_path: Path) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _file("blobs\\..\\..\\evil", b"x")])
    with pytest.raises(UnsafeArchiveError):
        ArchiveReader(tar)


def test_symlink_is_refused_even_under_a_blob_name(tmp_path: Path) -> None:
    link = _special(BLOB_NAME, tarfile.SYMTYPE, "/etc/shadow")
    tar = _write_tar(tmp_path / "x.tar", [*_base(), link])
    with pytest.raises(UnsafeArchiveError, match="link"):
        ArchiveReader(tar)


def test_hardlink_is_refused(tmp_path: Path) -> None:
    link = _special(BLOB_NAME, tarfile.LNKTYPE, "index.json")
    tar = _write_tar(tmp_path / "x.tar", [*_base(), link])
    with pytest.raises(UnsafeArchiveError, match="link"):
        ArchiveReader(tar)


@pytest.mark.parametrize(
    "kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["char", "block", "fifo"]
)
def test_device_or_fifo_is_refused(tmp_path: Path, kind: bytes) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _special(BLOB_NAME, kind)])
    with pytest.raises(UnsafeArchiveError, match="special file"):
        ArchiveReader(tar)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("oci-layout", "oci-layout"),
        ("oci-layout", "./oci-layout"),
        (BLOB_NAME, BLOB_NAME),
        (BLOB_NAME, f"./{BLOB_NAME}"),
        ("index.json", "blobs/../index.json"),  # tools differ on such a name: no superseding
        ("blobs/../index.json", "index.json"),
    ],
)
def test_duplicate_member_name_is_refused(tmp_path: Path, first: str, second: str) -> None:
    # tar extractors let the last duplicate win; a reader indexing the first would disagree.
    # Only a plainly spelt index.json may come again (an appended signature), below.
    evil = json.dumps({"schemaVersion": 2, "manifests": [], "x": 1}).encode()
    data = {"oci-layout": LAYOUT_DOC, BLOB_NAME: BLOB}.get(first.removeprefix("./"), evil)
    index = [] if first.endswith("index.json") else [_file("index.json", EMPTY_INDEX)]
    members = [_file("oci-layout", LAYOUT_DOC)] if first != "oci-layout" else []
    members += [*index, _file(first, data), _file(second, evil)]
    tar = _write_tar(tmp_path / "x.tar", members)
    with pytest.raises(UnsafeArchiveError, match="twice"):
        ArchiveReader(tar)


@pytest.mark.parametrize("second", ["index.json", "./index.json"])
def test_a_later_index_json_supersedes_the_earlier(tmp_path: Path, second: str) -> None:
    # What signing appends: tar, skopeo and umoci (after extraction) all take the last copy.
    later = json.dumps({"schemaVersion": 2, "manifests": [], "later": True}).encode()
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _file(BLOB_NAME, BLOB), _file(second, later)])
    reader = ArchiveReader(tar)
    try:
        assert reader.read_file("index.json", 1024) == later
        assert list(reader.superseded_indexes()) == [EMPTY_INDEX]
        assert reader.blob_names() == [BLOB_NAME]
    finally:
        reader.close()


def test_more_index_json_copies_than_the_bound_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler.adapters import archive

    monkeypatch.setattr(archive, "MAX_INDEX_COPIES", 3)
    copies = [_file("index.json", EMPTY_INDEX) for _ in range(3)]
    tar = _write_tar(tmp_path / "x.tar", [*_base(), *copies])
    with pytest.raises(UnsafeArchiveError, match=r"more than 3 copies of index\.json"):
        ArchiveReader(tar)


@pytest.mark.parametrize(
    "name",
    [
        "README",
        "blobs/md5/abc",
        "blobs/sha256/ABCDEF",
        "blobs/sha256/x/y",
        "oci-layout.bak",
        "blobs/sha256/" + Digest.of(BLOB).hex + ".partial",
    ],
)
def test_member_outside_the_layout_names_is_refused(tmp_path: Path, name: str) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _file(name, b"x")])
    with pytest.raises(UnsafeArchiveError, match="not part of an OCI layout"):
        ArchiveReader(tar)


@pytest.mark.parametrize("name", ["etc", "blobs/md5", "blobs/sha256/sub"])
def test_directory_outside_the_layout_is_refused(tmp_path: Path, name: str) -> None:
    tar = _write_tar(tmp_path / "x.tar", [*_base(), _special(name, tarfile.DIRTYPE)])
    with pytest.raises(UnsafeArchiveError, match="not part of an OCI layout"):
        ArchiveReader(tar)


def test_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"this is not a tar archive at all" * 50)
    with pytest.raises(UnsafeArchiveError):
        ArchiveReader(path)


def test_missing_archive_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        ArchiveReader(tmp_path / "absent.tar")


# -- archives that must be accepted ------------------------------------------------------


def _read_everything(archive: Path, ref: str) -> int:
    """Open the archive as a source and verify every manifest and blob of ``ref``."""
    source = LayoutSource(ArchiveReader(archive), ref)
    try:
        root = source.resolve()
        manifest = source.fetch_manifest(root)
        for blob in manifest.blobs():
            VerifiedStream(source.open_blob(blob), blob, source.name).drain()
        return len(manifest.blobs())
    finally:
        source.close()


def test_archive_written_by_archive_target_is_accepted(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    result = copy(LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(out, None))
    assert out.is_file()
    assert _read_everything(out, REF) == result.blobs == 3


def test_archive_with_dot_slash_member_names_is_accepted(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "dot.tar"
    with tarfile.open(out, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname="./" + path.relative_to(layout).as_posix(), recursive=False)
    assert _read_everything(out, REF) == 3


def test_archive_of_the_layout_root_as_dot_is_accepted(layout: Path, tmp_path: Path) -> None:
    # What `tar -C layout -cf out.tar .` produces: a "./" root entry, then "./oci-layout", ...
    out = tmp_path / "root.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(layout, arcname=".")
    assert _read_everything(out, REF) == 3


# -- a failed copy leaves nothing behind ------------------------------------------------


def _corrupt_a_layer(layout: Path) -> None:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    layer.write_bytes(bytes(data))


@pytest.fixture
def corrupt_layout(layout: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "corrupt-layout"
    shutil.copytree(layout, dst)
    _corrupt_a_layer(dst)
    return dst


def _archive_target(out: Path) -> ArchiveTarget:
    return ArchiveTarget(out / "bundle.tar", None)


def _layout_target(out: Path) -> LayoutTarget:
    return LayoutTarget(out / "oci", None)


@pytest.mark.parametrize("make_target", [_archive_target, _layout_target], ids=["archive", "oci"])
def test_copy_of_a_corrupt_blob_leaves_neither_output_nor_partial_file(
    corrupt_layout: Path,
    tmp_path: Path,
    make_target: Callable[[Path], ArchiveTarget | LayoutTarget],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = make_target(out)
    with pytest.raises(DigestMismatchError):
        copy(LayoutSource(LayoutDirectory(corrupt_layout), REF), target, parallel=1)
    assert list(out.rglob("*")) == []


def test_archive_copy_of_a_corrupt_blob_keeps_an_earlier_archive_intact(
    layout: Path, corrupt_layout: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    copy(LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(out, None))
    before = out.read_bytes()
    with pytest.raises(DigestMismatchError):
        copy(LayoutSource(LayoutDirectory(corrupt_layout), REF), ArchiveTarget(out, None))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_archive_index_names_the_copy(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "named.tar"
    copy(LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(out, "renamed"))
    reader = ArchiveReader(out)
    try:
        index = json.loads(reader.read_file("index.json", 1 << 20))
    finally:
        reader.close()
    refs = [m["annotations"][mt.ANNOTATION_REF_NAME] for m in index["manifests"]]
    assert refs == ["renamed"]
