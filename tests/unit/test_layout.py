"""OCI layout directories: blobs land whole or not at all, names appear only at commit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.adapters.layout import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    LayoutDirectory,
    LayoutSource,
    LayoutTarget,
)
from bundler.adapters.stream import VerifiedStream
from bundler.errors import (
    DigestMismatchError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    TransportError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.plan import TransferPlan

CONFIG = b"{}"
LAYER = b"layer bytes " * 100


def _blob(data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    return Descriptor(media_type, Digest.of(data), len(data))


def _manifest(layer: bytes = LAYER) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _blob(CONFIG, mt.OCI_CONFIG).to_json(),
        "layers": [_blob(layer, "application/vnd.oci.image.layer.v1.tar").to_json()],
    }
    return parse_manifest(json.dumps(doc).encode())


def _write(target: LayoutTarget, manifest: Manifest, tag: str | None, layer: bytes = LAYER) -> None:
    """Drive a target the way the copy service does."""
    target.begin(TransferPlan(root=manifest.descriptor()))
    for data in (CONFIG, layer):
        target.put_blob(VerifiedStream([data], _blob(data), "test"))
    target.put_manifest(manifest)
    if tag is not None:
        target.tag(tag, manifest)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# -- LayoutTarget -------------------------------------------------------------------------


def test_blob_failing_mid_stream_leaves_no_temp_file(tmp_path: Path) -> None:
    target = LayoutTarget(tmp_path / "oci", "t")
    target.begin(TransferPlan(root=_blob(b"x")))
    desc = _blob(LAYER)

    def broken() -> Iterator[bytes]:
        yield LAYER[:100]
        raise TransportError("connection reset mid-blob")

    with pytest.raises(TransportError):
        target.put_blob(VerifiedStream(broken(), desc, "test"))
    blob_dir = tmp_path / "oci" / "blobs" / "sha256"
    assert list(blob_dir.iterdir()) == []
    assert not target.has_blob(desc)


def test_blob_with_wrong_digest_never_appears_under_its_name(tmp_path: Path) -> None:
    target = LayoutTarget(tmp_path / "oci", "t")
    target.begin(TransferPlan(root=_blob(b"x")))
    desc = _blob(LAYER)
    forged = LAYER[:-1] + b"!"
    with pytest.raises(DigestMismatchError):
        target.put_blob(VerifiedStream([forged], desc, "test"))
    assert list((tmp_path / "oci" / "blobs" / "sha256").iterdir()) == []


def test_blob_written_whole_has_its_content_and_no_temp_file(tmp_path: Path) -> None:
    target = LayoutTarget(tmp_path / "oci", "t")
    target.begin(TransferPlan(root=_blob(b"x")))
    desc = _blob(LAYER)
    target.put_blob(VerifiedStream([LAYER[:7], LAYER[7:]], desc, "test"))
    path = tmp_path / "oci" / "blobs" / "sha256" / desc.digest.hex
    assert path.read_bytes() == LAYER
    assert [p.name for p in path.parent.iterdir()] == [desc.digest.hex]


def test_index_json_is_written_only_at_commit(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    target = LayoutTarget(root, "v1")
    manifest = _manifest()
    _write(target, manifest, "v1")
    assert (root / OCI_LAYOUT_FILE).is_file()
    assert not (root / INDEX_FILE).exists()
    target.commit()
    index = json.loads((root / INDEX_FILE).read_text())
    assert index["manifests"] == [
        manifest.descriptor().with_annotations({mt.ANNOTATION_REF_NAME: "v1"}).to_json()
    ]


def test_abort_before_commit_removes_a_directory_the_copy_created(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    target = LayoutTarget(root, "v1")
    _write(target, _manifest(), "v1")
    target.abort()
    assert not root.exists()


def test_abort_keeps_an_existing_layout(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    first = LayoutTarget(root, "v1")
    _write(first, _manifest(), "v1")
    first.commit()
    before = (root / INDEX_FILE).read_bytes()
    second = LayoutTarget(root, "v2")
    _write(second, _manifest(b"other"), "v2", layer=b"other")
    second.abort()
    assert (root / INDEX_FILE).read_bytes() == before


def test_ref_name_replaces_an_earlier_entry_with_the_same_ref(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    old, new = _manifest(), _manifest(b"new layer")
    for manifest, layer, ref in (
        (old, LAYER, "v1"),
        (old, LAYER, "keep"),
        (new, b"new layer", "v1"),
    ):
        target = LayoutTarget(root, ref)
        _write(target, manifest, ref, layer=layer)
        target.commit()
    entries = json.loads((root / INDEX_FILE).read_text())["manifests"]
    by_ref = {e["annotations"][mt.ANNOTATION_REF_NAME]: e["digest"] for e in entries}
    assert by_ref == {"v1": str(new.digest), "keep": str(old.digest)}
    assert len(entries) == 2


def test_existing_non_layout_non_empty_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "precious.txt").write_text("do not touch")
    with pytest.raises(UsageError, match="not an OCI layout"):
        LayoutTarget(root, "v1")
    assert _files(root) == {"precious.txt"}


def test_existing_file_as_layout_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UsageError):
        LayoutTarget(path, "v1")


def test_empty_existing_directory_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    target = LayoutTarget(root, "v1")
    _write(target, _manifest(), "v1")
    target.commit()
    assert (root / INDEX_FILE).is_file()


def test_commit_refuses_to_build_on_a_corrupt_index(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    first = LayoutTarget(root, "v1")
    _write(first, _manifest(), "v1")
    first.commit()
    (root / INDEX_FILE).write_bytes(b'{"schemaVersion":2,"manifests":[],"manifests":[]}')
    second = LayoutTarget(root, "v2")
    _write(second, _manifest(), "v2")
    with pytest.raises(ManifestError):
        second.commit()


# -- LayoutSource -------------------------------------------------------------------------


@pytest.fixture
def two_refs(tmp_path: Path) -> tuple[Path, Manifest, Manifest]:
    root = tmp_path / "src"
    a, b = _manifest(), _manifest(b"second")
    for manifest, layer, ref in ((a, LAYER, "a"), (b, b"second", "b")):
        target = LayoutTarget(root, ref)
        _write(target, manifest, ref, layer=layer)
        target.commit()
    return root, a, b


def test_source_resolves_by_ref(two_refs: tuple[Path, Manifest, Manifest]) -> None:
    root, _, b = two_refs
    source = LayoutSource(LayoutDirectory(root), "b")
    assert source.resolve().digest == b.digest
    assert source.ref_name() == "b"
    assert source.fetch_manifest(source.resolve()).raw == b.raw


def test_source_resolves_by_digest(two_refs: tuple[Path, Manifest, Manifest]) -> None:
    root, a, _ = two_refs
    source = LayoutSource(LayoutDirectory(root), str(a.digest))
    assert source.resolve().digest == a.digest
    assert source.ref_name() is None


def test_source_resolves_the_only_entry_without_a_ref(tmp_path: Path) -> None:
    root = tmp_path / "one"
    manifest = _manifest()
    target = LayoutTarget(root, "only")
    _write(target, manifest, "only")
    target.commit()
    assert LayoutSource(LayoutDirectory(root), None).resolve().digest == manifest.digest


def test_source_without_ref_over_several_entries_is_a_usage_error(
    two_refs: tuple[Path, Manifest, Manifest],
) -> None:
    root, _, _ = two_refs
    with pytest.raises(UsageError, match="holds 2 manifests"):
        LayoutSource(LayoutDirectory(root), None).resolve()


def test_source_with_unknown_ref_is_not_found(two_refs: tuple[Path, Manifest, Manifest]) -> None:
    root, _, _ = two_refs
    with pytest.raises(NotFoundError, match="no ref 'c'"):
        LayoutSource(LayoutDirectory(root), "c").resolve()


def test_source_with_unknown_digest_is_not_found(
    two_refs: tuple[Path, Manifest, Manifest],
) -> None:
    root, _, _ = two_refs
    with pytest.raises(NotFoundError):
        LayoutSource(LayoutDirectory(root), str(Digest.of(b"nothing"))).resolve()


def test_source_with_malformed_digest_ref_is_a_usage_error(
    two_refs: tuple[Path, Manifest, Manifest],
) -> None:
    root, _, _ = two_refs
    with pytest.raises(UsageError):
        LayoutSource(LayoutDirectory(root), "sha256:abc").resolve()


def test_missing_layout_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a complete OCI layout"):
        LayoutSource(LayoutDirectory(tmp_path / "absent"), None)


def test_source_refuses_a_manifest_whose_bytes_were_swapped(
    two_refs: tuple[Path, Manifest, Manifest],
) -> None:
    root, a, b = two_refs
    (root / "blobs" / "sha256" / a.digest.hex).write_bytes(b.raw)
    source = LayoutSource(LayoutDirectory(root), "a")
    with pytest.raises(IntegrityError):
        source.fetch_manifest(source.resolve())


def test_ref_naming_two_entries_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "dup"
    a, b = _manifest(), _manifest(b"second")
    target = LayoutTarget(root, "x")
    _write(target, a, "x")
    target.commit()
    entries = [
        d.with_annotations({mt.ANNOTATION_REF_NAME: "x"}).to_json()
        for d in (a.descriptor(), b.descriptor())
    ]
    (root / INDEX_FILE).write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    with pytest.raises(ManifestError, match="several"):
        LayoutSource(LayoutDirectory(root), "x").resolve()
