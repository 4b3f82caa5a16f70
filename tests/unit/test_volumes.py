"""Archives split into volumes: exact boundaries, a byte-identical concatenation, commit and
abort, reading across part boundaries, and every way of tampering with the parts refused,
naming the part."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from bundler.adapters.archive import ArchiveReader, ArchiveTarget
from bundler.adapters.layout import LayoutDirectory, LayoutSource
from bundler.adapters.stream import VerifiedStream
from bundler.adapters.volumes import (
    MAX_PARTS_LIST_BYTES,
    MIN_VOLUME_SIZE,
    PartsList,
    VolumeSet,
    VolumeWriter,
    load_parts_list,
    parse_volume_size,
    part_names,
    parts_list_path,
)
from bundler.errors import (
    DigestMismatchError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    SizeMismatchError,
    UnsafeArchiveError,
    UsageError,
)
from bundler.model.digest import Digest
from bundler.services.copy import copy
from bundler.services.transports import Transports, parse_location

REF = "example.local/unit/volumes:1.0"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, synth: ModuleType) -> Path:
    """One image whose layers add up to about 3.5 MiB (stored, so they do not shrink)."""
    out = tmp_path_factory.mktemp("synth") / "layout"
    synth.write_image(
        out,
        REF,
        [
            synth.LayerSpec("vol-base", 2 * MiB + 12345, level=0),
            synth.LayerSpec("vol-app", 1 * MiB + 777, level=0),
            synth.LayerSpec("vol-small", 3000, level=0),
        ],
    )
    return out


@pytest.fixture(scope="module")
def other_layout(tmp_path_factory: pytest.TempPathFactory, synth: ModuleType) -> Path:
    """Another image of the same shape and sizes, different bytes."""
    out = tmp_path_factory.mktemp("synth-other") / "layout"
    synth.write_image(
        out,
        REF,
        [
            synth.LayerSpec("vol-base-other", 2 * MiB + 12345, level=0),
            synth.LayerSpec("vol-app-other", 1 * MiB + 777, level=0),
            synth.LayerSpec("vol-small-other", 3000, level=0),
        ],
    )
    return out


def _export(layout: Path, out: Path, size: int | None) -> ArchiveTarget:
    target = ArchiveTarget(out, None, max_volume_size=size)
    copy(LayoutSource(LayoutDirectory(layout), REF), target)
    return target


def _read_everything(location: Path) -> dict[str, bytes]:
    """Every file of the archive, each blob digest-checked on the way."""
    reader = ArchiveReader(location)
    source = LayoutSource(reader, REF)
    try:
        root = source.resolve()
        manifest = source.fetch_manifest(root)
        for blob in manifest.blobs():
            VerifiedStream(source.open_blob(blob), blob, source.name).drain()
        files = {"index.json": reader.read_file("index.json", MiB)}
        for name in reader.blob_names():
            files[name] = reader.read_file(name, 16 * MiB)
        return files
    finally:
        source.close()


@pytest.fixture
def split(layout: Path, tmp_path: Path) -> Path:
    """``OUT.tar`` split at 1 MiB: four parts and the parts list."""
    out = tmp_path / "OUT.tar"
    _export(layout, out, MIN_VOLUME_SIZE)
    return out


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _rewrite_list(out: Path, edit: object) -> None:
    path = parts_list_path(out)
    doc = json.loads(path.read_bytes())
    edit(doc)  # type: ignore[operator]
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 << 30),
        ("700M", 700 << 20),
        ("1.5G", 3 << 29),
        ("1M", MiB),
        ("1048576", MiB),
        ("4095m", 4095 << 20),
        ("2GiB", 2 << 30),
        ("1T", 1 << 40),
        ("1024K", MiB),
    ],
)
def test_volume_sizes_parse_as_powers_of_1024(text: str, size: int) -> None:
    assert parse_volume_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1X", "-1M", "1.5", "1048575", "0.5M", "1 G G"])
def test_bad_or_tiny_volume_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_volume_size(text)


def test_archive_target_refuses_a_volume_size_below_the_minimum(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="minimum"):
        ArchiveTarget(tmp_path / "x.tar", None, max_volume_size=MIN_VOLUME_SIZE - 1)


def test_open_target_passes_the_volume_size_to_archives_only(tmp_path: Path) -> None:
    transports = Transports(use_blob_cache=False)
    try:
        target = transports.open_target(
            parse_location(f"archive:{tmp_path / 'x.tar'}", for_target=True),
            max_volume_size=2 * MiB,
        )
        assert isinstance(target, ArchiveTarget) and target.max_volume_size == 2 * MiB
        with pytest.raises(UsageError, match="archive"):
            transports.open_target(
                parse_location(f"oci:{tmp_path / 'dir'}:x", for_target=True),
                max_volume_size=2 * MiB,
            )
    finally:
        transports.close()


# -- writing ----------------------------------------------------------------------------------


def test_writer_splits_at_exact_boundaries(tmp_path: Path) -> None:
    """A part boundary exactly at a member boundary, and a member spanning three parts."""
    out = tmp_path / "t.tar"
    writer = VolumeWriter(out, 1536)
    first = b"a" * 1024  # header 512 + data 1024 = one whole part
    second = bytes(range(256)) * 12  # 3072 bytes: spans parts 1..3
    with tarfile.TarFile(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        for name, data in (("oci-layout", first), (f"blobs/sha256/{'0' * 64}", second)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _names(tmp_path) != [] and all(n.endswith(".partial") for n in _names(tmp_path))
    parts = writer.commit()
    whole = b"".join((tmp_path / p.name).read_bytes() for p in parts.parts)
    # The concatenation is exactly what tarfile writes to one file.
    single = io.BytesIO()
    with tarfile.TarFile(fileobj=single, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("oci-layout", first), (f"blobs/sha256/{'0' * 64}", second)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert whole == single.getvalue()
    assert [p.size for p in parts.parts[:-1]] == [1536] * (len(parts.parts) - 1)
    assert 0 < parts.parts[-1].size <= 1536
    assert parts.size == len(whole) and parts.sha256 == hashlib.sha256(whole).hexdigest()
    # Part 0 ends exactly where the second member's header begins.
    part0 = (tmp_path / "t.tar.000").read_bytes()
    assert part0[512:] == first
    part1 = (tmp_path / "t.tar.001").read_bytes()
    assert part1[:100].rstrip(b"\0") == f"blobs/sha256/{'0' * 64}".encode()
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        member = tar.getmember(f"blobs/sha256/{'0' * 64}")
        assert member.offset == 1536 and member.offset_data == 2048
    # Read back through the volumes: the spanning member comes out whole.
    volumes = VolumeSet(parts_list_path(out))
    try:
        assert volumes.pread(len(second), 2048) == second
        assert volumes.pread(10, 1530) == whole[1530:1540]  # across a boundary
        assert volumes.pread(100, len(whole) - 10) == whole[-10:]
        assert volumes.pread(5, len(whole)) == b""
    finally:
        volumes.close()


def test_writer_leaves_no_empty_last_part(tmp_path: Path) -> None:
    out = tmp_path / "exact.bin"
    writer = VolumeWriter(out, 1000)
    writer.write(b"x" * 1500)
    writer.write(b"y" * 500)
    parts = writer.commit()
    assert [p.size for p in parts.parts] == [1000, 1000]
    assert _names(tmp_path) == ["exact.bin.000", "exact.bin.001", "exact.bin.parts.json"]


def test_parts_list_content_and_canonical_form(split: Path, tmp_path: Path) -> None:
    raw = parts_list_path(split).read_bytes()
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["schemaVersion"] == 1 and doc["kind"] == "ArchiveParts"
    assert doc["archive"] == "OUT.tar" and doc["partSize"] == MIN_VOLUME_SIZE
    names = [p["name"] for p in doc["parts"]]
    assert names == part_names("OUT.tar", len(names)) == [f"OUT.tar.{i:03d}" for i in range(4)]
    for part in doc["parts"]:
        data = (tmp_path / part["name"]).read_bytes()
        assert part["size"] == len(data)
        assert part["sha256"] == hashlib.sha256(data).hexdigest()
    assert sum(p["size"] for p in doc["parts"]) == doc["size"]
    assert _names(tmp_path) == [*names, "OUT.tar.parts.json"]


def test_parts_list_is_valid_against_its_schema(split: Path) -> None:
    import jsonschema

    from bundler.adapters.bundleconfig import load_schema

    schema = load_schema("parts-list.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(
        json.loads(parts_list_path(split).read_bytes())
    )


def test_concatenation_is_byte_identical_to_the_single_file_archive(
    layout: Path, split: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single" / "OUT.tar"
    single.parent.mkdir()
    _export(layout, single, None)
    doc = json.loads(parts_list_path(split).read_bytes())
    whole = b"".join((tmp_path / p["name"]).read_bytes() for p in doc["parts"])
    assert whole == single.read_bytes()
    assert doc["sha256"] == hashlib.sha256(single.read_bytes()).hexdigest()
    assert doc["size"] == single.stat().st_size


def test_abort_leaves_nothing(layout: Path, tmp_path: Path) -> None:
    target = ArchiveTarget(tmp_path / "OUT.tar", None, max_volume_size=MIN_VOLUME_SIZE)
    source = LayoutSource(LayoutDirectory(layout), REF)
    root = source.resolve()
    manifest = source.fetch_manifest(root)
    from bundler.model.plan import TagAssignment, TransferPlan

    plan = TransferPlan(
        root=root,
        manifests=[manifest],
        blobs={b.digest: b for b in manifest.blobs()},
        tags=[TagAssignment("x", root)],
    )
    target.begin(plan)
    for blob in manifest.blobs():
        target.put_blob(VerifiedStream(source.open_blob(blob), blob, source.name))
    assert any(n.endswith(".partial") for n in _names(tmp_path))
    target.abort()
    assert _names(tmp_path) == []


def test_a_failed_export_keeps_the_earlier_volumes(
    layout: Path, split: Path, tmp_path: Path
) -> None:
    before = {n: (tmp_path / n).read_bytes() for n in _names(tmp_path)}
    writer = VolumeWriter(split, MIN_VOLUME_SIZE)
    writer.write(b"z" * (MIN_VOLUME_SIZE + 10))
    writer.abort()
    assert {n: (tmp_path / n).read_bytes() for n in _names(tmp_path)} == before


def test_a_shorter_export_replaces_stale_parts_and_a_single_file(
    layout: Path, split: Path, tmp_path: Path
) -> None:
    assert "OUT.tar.003" in _names(tmp_path)  # the earlier, longer export's last part
    (tmp_path / "OUT.tar.notes").write_bytes(b"not a part")
    _export(layout, split, 2 * MiB)
    assert _names(tmp_path) == ["OUT.tar.000", "OUT.tar.001", "OUT.tar.notes", "OUT.tar.parts.json"]
    # A single-file archive of the same name would shadow the volumes; it goes too.
    _export(layout, split, None)
    assert split.is_file()
    _export(layout, split, 3 * MiB)
    assert not split.exists()
    assert _read_everything(split)


# -- reading ----------------------------------------------------------------------------------


def test_every_blob_reads_back_across_part_boundaries(
    layout: Path, split: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single.tar"
    _export(layout, single, None)
    from_volumes = _read_everything(split)
    assert from_volumes == _read_everything(single)
    assert from_volumes == _read_everything(parts_list_path(split))  # naming the list itself
    reader = ArchiveReader(split)
    try:
        assert reader.volumes is not None and len(reader.volumes.parts.parts) == 4
        sizes = sorted(len(b) for n, b in from_volumes.items() if n.startswith("blobs/"))
        assert sizes[-1] > MIN_VOLUME_SIZE  # a blob longer than a part: it spans parts
        for name, data in from_volumes.items():
            if name.startswith("blobs/"):
                assert f"blobs/sha256/{Digest.of(data).hex}" == name
    finally:
        reader.close()


def test_a_single_file_archive_wins_over_volumes_of_the_same_name(
    layout: Path, split: Path
) -> None:
    split.write_bytes(b"not a tar")
    with pytest.raises(UnsafeArchiveError, match="not a tar"):
        ArchiveReader(split)


def test_neither_file_nor_volumes_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        ArchiveReader(tmp_path / "absent.tar")
    with pytest.raises(NotFoundError, match="does not exist"):
        ArchiveReader(tmp_path / "absent.tar.parts.json")


# -- attacks: each refused before any member is trusted, naming the part -----------------------


def test_flipped_byte_in_a_part(split: Path, tmp_path: Path) -> None:
    part = tmp_path / "OUT.tar.002"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=r"part OUT\.tar\.002 "):
        ArchiveReader(split)


def test_missing_part(split: Path, tmp_path: Path) -> None:
    (tmp_path / "OUT.tar.001").unlink()
    with pytest.raises(NotFoundError, match=r"part OUT\.tar\.001 .* is missing"):
        ArchiveReader(split)


def test_part_from_another_export(split: Path, other_layout: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "OUT.tar"
    other.parent.mkdir()
    _export(other_layout, other, MIN_VOLUME_SIZE)
    swapped = other.parent / "OUT.tar.001"
    assert swapped.stat().st_size == (tmp_path / "OUT.tar.001").stat().st_size
    os.replace(swapped, tmp_path / "OUT.tar.001")
    with pytest.raises(DigestMismatchError, match=r"part OUT\.tar\.001 .*another export"):
        ArchiveReader(split)


def test_truncated_last_part(split: Path, tmp_path: Path) -> None:
    last = tmp_path / "OUT.tar.003"
    os.truncate(last, last.stat().st_size - 1024)
    with pytest.raises(SizeMismatchError, match=r"part OUT\.tar\.003 .* truncated"):
        ArchiveReader(split)


def test_extra_unexpected_name_in_the_list(split: Path) -> None:
    def add(doc: dict[str, object]) -> None:
        parts = doc["parts"]
        assert isinstance(parts, list)
        parts.append({"name": "../x", "size": 1, "sha256": "0" * 64})

    _rewrite_list(split, add)
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./x'"):
        ArchiveReader(split)


@pytest.mark.parametrize("name", ["/etc/passwd", "sub/OUT.tar.001", "..", "a\\b"])
def test_part_names_outside_the_directory_are_unsafe(split: Path, name: str) -> None:
    def rename(doc: dict[str, object]) -> None:
        parts = doc["parts"]
        assert isinstance(parts, list)
        parts[1]["name"] = name

    _rewrite_list(split, rename)
    with pytest.raises(UnsafeArchiveError):
        ArchiveReader(split)


def test_plain_but_unexpected_part_name_is_refused(split: Path, tmp_path: Path) -> None:
    os.replace(tmp_path / "OUT.tar.001", tmp_path / "sneaky")

    def rename(doc: dict[str, object]) -> None:
        parts = doc["parts"]
        assert isinstance(parts, list)
        parts[1]["name"] = "sneaky"

    _rewrite_list(split, rename)
    with pytest.raises(ManifestError, match=r"expected 'OUT\.tar\.001'"):
        ArchiveReader(split)


def test_parts_list_edited_to_match_a_tampered_part_but_not_the_whole(
    split: Path, tmp_path: Path
) -> None:
    part = tmp_path / "OUT.tar.003"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))

    def match(doc: dict[str, object]) -> None:
        parts = doc["parts"]
        assert isinstance(parts, list)
        parts[3]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()

    _rewrite_list(split, match)
    with pytest.raises(DigestMismatchError, match="together have sha256"):
        ArchiveReader(split)


def test_whole_hash_is_checked_even_when_the_parts_are_right(split: Path) -> None:
    _rewrite_list(split, lambda doc: doc.update(sha256="f" * 64))
    with pytest.raises(DigestMismatchError, match="altered"):
        ArchiveReader(split)


def test_oversized_parts_list(split: Path) -> None:
    path = parts_list_path(split)
    path.write_bytes(path.read_bytes() + b" " * MAX_PARTS_LIST_BYTES)
    with pytest.raises(ManifestError, match="exceeds"):
        ArchiveReader(split)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(kind="Other"), "kind"),
        (lambda d: d.update(schemaVersion=2), "schemaVersion"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(size=d["size"] + 1), "add up"),
        (lambda d: d.update(partSize=d["partSize"] * 2), "expected"),
        (lambda d: d.update(archive="OTHER.tar"), "OTHER"),
        (lambda d: d.update(parts=[]), "parts"),
        (lambda d: d["parts"].reverse(), "expected"),
        (lambda d: d["parts"][0].update(sha256="ABC"), "sha256"),
        (lambda d: d["parts"][0].update(size="1"), "size"),
        (lambda d: d["parts"].pop(), "add up"),
    ],
    ids=[
        "kind",
        "version",
        "extra-field",
        "size",
        "part-size",
        "archive",
        "no-parts",
        "order",
        "bad-hash",
        "size-type",
        "dropped-part",
    ],
)
def test_malformed_parts_list(split: Path, edit: object, match: str) -> None:
    _rewrite_list(split, edit)
    with pytest.raises(ManifestError, match=match):
        ArchiveReader(split)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"a":1,"a":2}', b"\xff\xfe"],
    ids=["empty", "text", "array", "duplicate-key", "binary"],
)
def test_unparseable_parts_list(split: Path, raw: bytes) -> None:
    parts_list_path(split).write_bytes(raw)
    with pytest.raises(ManifestError):
        load_parts_list(parts_list_path(split))


def test_every_refusal_is_an_integrity_or_not_found_error(split: Path, tmp_path: Path) -> None:
    """Nothing slips out as a bare OSError or tarfile error."""
    part = tmp_path / "OUT.tar.000"
    part.write_bytes(b"\0" * part.stat().st_size)
    with pytest.raises(IntegrityError):
        ArchiveReader(split)


def test_parts_list_round_trips(split: Path) -> None:
    parsed = load_parts_list(parts_list_path(split))
    assert parsed.encode() == parts_list_path(split).read_bytes()
    assert PartsList.parse(parsed.encode(), "x") == parsed
