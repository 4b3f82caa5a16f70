"""Signing an archive appends to it: new signature blobs and a new ``index.json`` after the last
member, the archive's earlier bytes untouched, and the cost that of the signatures.

The cost is proven by counting, not timing: the bytes the process reads and writes while it
signs (``/proc/self/io``) against the size of the archive, and a hash of the original prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
from memory_bundles import (
    APPROVER,
    VENDOR,
    MemoryBundle,
    policy,
    signed_bundle,
)

from bundler.adapters import archive as archive_adapter
from bundler.adapters.archive import ArchiveReader, ArchiveTarget
from bundler.adapters.crypto import generate_key
from bundler.adapters.layout import LayoutSource
from bundler.adapters.volumes import MIN_VOLUME_SIZE, parts_list_path
from bundler.errors import DigestMismatchError, TransportError, UsageError
from bundler.model.digest import Digest
from bundler.model.signature import (
    SignatureEntry,
    cosign_signature_tag,
    signature_manifest,
    simple_signing_payload,
)
from bundler.services import copy as copy_service
from bundler.services.sign import sign
from bundler.services.transports import Transports, parse_location
from bundler.services.verify import VerifyReport, verify

UNIT = Path(__file__).resolve().parent


@pytest.fixture
def bundle() -> MemoryBundle:
    return signed_bundle({})


def _export(bundle: MemoryBundle, path: Path, volume: int | None = None) -> Path:
    target = ArchiveTarget(path, None, max_volume_size=volume)
    copy_service.copy(bundle.store.source(bundle.tag), target)
    return path


def _transports() -> Transports:
    return Transports(use_blob_cache=False)


def _verify(path: Path, *, approval: bool = True) -> VerifyReport:
    source = _transports().open_source(parse_location(f"archive:{path}"))
    try:
        return verify(source, policy(approval=approval))
    finally:
        source.close()


def _members(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every member, in order, as Python's tarfile reads them."""
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()]


def _end(path: Path) -> int:
    """Where the last member's data and padding end: the start of the end-of-archive marker."""
    _, offset, size = _members(path)[-1]
    return offset + size + (-size % tarfile.BLOCKSIZE)


def _io() -> tuple[int, int]:
    """Bytes this process has passed to read and write system calls so far (Linux)."""
    fields = dict(
        line.split(": ") for line in Path("/proc/self/io").read_text().splitlines() if line
    )
    return int(fields["rchar"]), int(fields["wchar"])


def test_signing_an_archive_appends_and_leaves_every_earlier_byte_as_it_was(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    before = archive.read_bytes()
    end = _end(archive)
    old_members = _members(archive)

    result = sign(parse_location(f"archive:{archive}"), APPROVER, _transports())

    after = archive.read_bytes()
    assert hashlib.sha256(after[:end]).digest() == hashlib.sha256(before[:end]).digest()
    new_members = _members(archive)
    assert new_members[: len(old_members)] == old_members  # nothing before moved or changed
    appended = new_members[len(old_members) :]
    old_names = {name for name, _, _ in old_members}
    assert appended[-1][0] == "index.json"
    for name, _, size in appended[:-1]:
        assert name.startswith("blobs/sha256/") and name not in old_names
        assert size <= 64 * 1024  # signature manifests, configs and payloads: small
    # One signature manifest and its config per subject signed; the payloads are the vendor's
    # (same subject, same identity), already in the archive, so not written again.
    assert len(appended) - 1 == 2 * len(result.signed)
    assert len(after) - len(before) < 16 * 1024 * len(result.signed)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.tar"]  # no partial, no lock left
    report = _verify(archive)
    assert report.error is None, report.error
    assert {s.role for s in report.bundle.signers} == {"vendor", "approval"}  # type: ignore[union-attr]


def test_sign_reads_and_writes_only_what_the_signatures_weigh(
    synth: ModuleType, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    synth.write_image(layout, "app:1", [synth.LayerSpec("big", 24 * 1024 * 1024, level=0)])
    archive = tmp_path / "app.tar"
    copy_service.copy(
        _transports().open_source(parse_location(f"oci:{layout}:app:1")),
        ArchiveTarget(archive, None),
    )
    size = archive.stat().st_size
    assert size > 24 * 1024 * 1024
    location = parse_location(f"archive:{archive}")
    transports = _transports()
    # Warm up on a small archive first, so the modules a first sign imports are not counted.
    synth.write_image(tmp_path / "small", "small:1", [synth.LayerSpec("small", 1024)])
    small = tmp_path / "small.tar"
    copy_service.copy(
        transports.open_source(parse_location(f"oci:{tmp_path / 'small'}:small:1")),
        ArchiveTarget(small, None),
    )
    sign(parse_location(f"archive:{small}"), VENDOR, transports)

    read0, written0 = _io()
    result = sign(location, VENDOR, transports)
    read1, written1 = _io()

    assert result.signed
    # Hashing or rewriting the archive would move its whole size through read() and write().
    assert read1 - read0 < size // 50
    assert written1 - written0 < 64 * 1024
    assert archive.stat().st_size - size < 64 * 1024


def test_sign_does_not_read_the_layers_it_does_not_touch(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    # A layer altered on the medium: sign, which reads no layer, still appends; verify catches it.
    archive = _export(bundle, tmp_path / "demo.tar")
    layer = bundle.images["example.local/demo/web:1.0.0"].layers[1]
    _, offset, _ = next(m for m in _members(archive) if m[0].endswith(layer.digest.hex))
    with archive.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"X")

    sign(parse_location(f"archive:{archive}"), APPROVER, _transports())

    report = _verify(archive)
    assert report.error is not None and report.error.step == 5
    assert str(layer.digest) in str(report.error)


def test_sign_refuses_to_name_an_altered_payload_already_in_the_archive(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    # The approval's payload is the vendor's (same subject, same identity): it is not written
    # again but named. Sign reads the existing signatures (digest-checked) before it writes, so
    # an altered one stops it, changing nothing.
    archive = _export(bundle, tmp_path / "demo.tar")
    payload = simple_signing_payload(bundle.index.digest, "demo")
    name = f"blobs/sha256/{Digest.of(payload).hex}"
    _, offset, _ = next(m for m in _members(archive) if m[0] == name)
    with archive.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"X")
    before = archive.read_bytes()

    with pytest.raises(DigestMismatchError, match="content was altered"):
        sign(parse_location(f"archive:{archive}"), APPROVER, _transports(), recursive=False)

    assert archive.read_bytes() == before


def test_a_second_approval_keeps_the_archive_verifying(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    # Each sign replaces the .sig manifests; the replaced ones stay in the tar, accounted for.
    archive = _export(bundle, tmp_path / "demo.tar")
    third = generate_key("ecdsa-p256")
    for key in (APPROVER, third):
        sign(parse_location(f"archive:{archive}"), key, _transports())
    names = [name for name, _, _ in _members(archive)]
    assert names.count("index.json") == 3
    report = _verify(archive)
    assert report.error is None, report.error
    status, detail = report.steps[6]
    assert status == "passed" and "blob" not in detail  # only the third key, not in the policy


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int, error: BaseException) -> None:
    real = archive_adapter._pwrite_all
    calls = {"n": 0}

    def failing(fd: int, data: bytes, offset: int) -> None:
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        real(fd, data, offset)

    monkeypatch.setattr(archive_adapter, "_pwrite_all", failing)


@pytest.mark.parametrize(
    ("call", "error", "raised"),
    [
        (1, OSError(28, "No space left on device"), TransportError),
        (2, KeyboardInterrupt(), KeyboardInterrupt),  # the tail is in, the old marker not yet
    ],
)
def test_interrupted_sign_leaves_the_archive_byte_identical(
    bundle: MemoryBundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    call: int,
    error: BaseException,
    raised: type[BaseException],
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    before = archive.read_bytes()
    _interrupt_at(monkeypatch, call, error)

    with pytest.raises(raised):
        sign(parse_location(f"archive:{archive}"), APPROVER, _transports())

    assert archive.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo.tar"]
    monkeypatch.undo()
    report = _verify(archive, approval=False)
    assert report.error is None, report.error


_KILLED_SIGN = """
import os, signal, sys
sys.path.insert(0, {unit!r})
from bundler.adapters import archive
from bundler.adapters.crypto import generate_key
from bundler.services.sign import sign
from bundler.services.transports import Transports, parse_location
real = archive._pwrite_all
calls = []
def killed(fd, data, offset):
    calls.append(offset)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up runs
    real(fd, data, offset)
archive._pwrite_all = killed
sign(parse_location("archive:" + {path!r}), generate_key("ecdsa-p256"),
     Transports(use_blob_cache=False))
"""


def test_sign_killed_before_its_last_write_leaves_the_old_archive_for_every_reader(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    before = _members(archive)
    end = _end(archive)
    prefix = archive.read_bytes()[:end]
    script = _KILLED_SIGN.format(unit=str(UNIT), path=str(archive))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=120, check=False)
    assert done.returncode == -9

    # The old marker still stands: tar tools and bundler read the members the archive had.
    assert archive.read_bytes()[:end] == prefix
    assert _members(archive) == before
    listed = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, check=True)
    assert [n.rstrip("/") for n in listed.stdout.decode().split()] == [n for n, _, _ in before]
    reader = ArchiveReader(archive)
    try:
        assert any("after the end-of-archive marker" in s for s in reader.stray_files())
    finally:
        reader.close()
    # The next sign writes over the leftovers; the archive then verifies.
    sign(parse_location(f"archive:{archive}"), APPROVER, _transports())
    report = _verify(archive)
    assert report.error is None, report.error


def test_split_archive_is_refused_and_left_as_it_was(bundle: MemoryBundle, tmp_path: Path) -> None:
    archive = tmp_path / "demo.tar"
    _export(bundle, archive, volume=MIN_VOLUME_SIZE)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert parts_list_path(archive).name in files and not archive.exists()

    for named in (archive, parts_list_path(archive)):
        with pytest.raises(UsageError, match=r"split into volumes.*single-file archives only"):
            sign(parse_location(f"archive:{named}"), APPROVER, _transports())

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_sign_writes_over_what_follows_the_end_marker(bundle: MemoryBundle, tmp_path: Path) -> None:
    # No member lies past the marker (tar readers stop there); the appended members replace it.
    archive = _export(bundle, tmp_path / "demo.tar")
    with archive.open("ab") as fh:
        fh.write(b"something smuggled after the end")
    assert _verify(archive, approval=False).error is not None  # step 6 reports it

    sign(parse_location(f"archive:{archive}"), APPROVER, _transports())

    assert b"something smuggled" not in archive.read_bytes()
    report = _verify(archive)
    assert report.error is None, report.error


# -- what an earlier index.json may account for ------------------------------------------------


def _append_members(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Append members as tar does (``tarfile`` mode ``a``: over the end marker)."""
    import io

    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _last_index(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        member = tar.getmember("index.json")  # the last of that name
        fh = tar.extractfile(member)
        assert fh is not None
        return fh.read()


def _smuggle(bundle: MemoryBundle, path: Path, manifest: bytes, blobs: list[bytes]) -> Digest:
    """An earlier index naming ``manifest`` under the bundle's .sig tag, then the real index."""
    real = _last_index(path)
    doc = json.loads(real)
    tag = cosign_signature_tag(bundle.index.digest)
    digest = Digest.of(manifest)
    for entry in doc["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            entry["digest"], entry["size"] = str(digest), len(manifest)
    members = [(f"blobs/sha256/{Digest.of(b).hex}", b) for b in blobs]
    members += [(f"blobs/sha256/{digest.hex}", manifest)]
    members += [("index.json", json.dumps(doc).encode()), ("index.json", real)]
    _append_members(path, members)
    return digest


def test_earlier_index_naming_a_non_signature_manifest_hides_nothing(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    smuggled = b"an unsigned tool the vendor never shipped"
    config = b'{"smuggled": true}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(Digest.of(smuggled)),
                    "size": len(smuggled),
                }
            ],
        }
    ).encode()
    _smuggle(bundle, archive, manifest, [smuggled, config])

    report = _verify(archive, approval=False)

    assert report.error is not None and report.error.step == 6
    assert Digest.of(smuggled).hex in str(report.error)


def test_earlier_signature_with_a_layer_the_current_one_lacks_is_reported(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    # A true signature manifest, made as bundler makes them, but with a payload no later
    # signature keeps: the payload is content nothing covers.
    archive = _export(bundle, tmp_path / "demo.tar")
    junk = simple_signing_payload(bundle.index.digest, "example.local/someone/else")
    entry = SignatureEntry(junk, "c2lnbmF0dXJl", {})
    manifest, config = signature_manifest([entry])
    _smuggle(bundle, archive, manifest.raw, [junk, config])

    report = _verify(archive, approval=False)

    assert report.error is not None and report.error.step == 6
    assert Digest.of(junk).hex in str(report.error)


def test_superseded_index_copies_are_read_from_the_archive(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    first = _last_index(archive)
    sign(parse_location(f"archive:{archive}"), APPROVER, _transports())
    reader = ArchiveReader(archive)
    source = LayoutSource(reader, None)
    try:
        assert list(reader.superseded_indexes()) == [first]
        assert reader.read_file("index.json", 1 << 20) == _last_index(archive) != first
        assert source.find_tag(cosign_signature_tag(bundle.index.digest)) is not None
    finally:
        source.close()


def test_second_signer_of_an_archive_at_the_same_moment_loses_no_signature(
    bundle: MemoryBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler.services import sign as sign_service
    from bundler.services import signatures

    archive = _export(bundle, tmp_path / "demo.tar")
    monkeypatch.setattr("bundler.adapters.fsafe.LOCK_WAIT_SECONDS", 0.2)
    real = signatures.read_entry
    told_signed: list[str] = []
    raced: list[object] = []
    third = generate_key("ecdsa-p256")

    def read_then_race(source: object, layer: object) -> object:
        found = real(source, layer)  # type: ignore[arg-type]
        if not raced:
            raced.append(layer)
            # The second signer starts after the first has read the existing signatures and
            # before it appends: the moment a lost update would happen.
            try:
                sign(parse_location(f"archive:{archive}"), APPROVER, _transports(), recursive=False)
                told_signed.append("approver")
            except TransportError:
                pass
        return found

    monkeypatch.setattr(sign_service, "read_entry", read_then_race)
    sign(parse_location(f"archive:{archive}"), third, _transports(), recursive=False)
    told_signed.append("third")
    monkeypatch.undo()

    reader = ArchiveReader(archive)
    source = LayoutSource(reader, None)
    try:
        found = source.find_tag(cosign_signature_tag(bundle.index.digest))
        assert found is not None
        layers = source.fetch_manifest(found).layers
    finally:
        source.close()
    assert len(layers) == 1 + len(told_signed)  # the vendor's, plus every signer told "signed"


def test_an_append_larger_than_its_bound_is_refused_and_changes_nothing(
    bundle: MemoryBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _export(bundle, tmp_path / "demo.tar")
    before = archive.read_bytes()
    monkeypatch.setattr(archive_adapter, "MAX_APPEND_BYTES", 512)

    with pytest.raises(UsageError, match="only signatures are added to an archive in place"):
        sign(parse_location(f"archive:{archive}"), APPROVER, _transports())

    assert archive.read_bytes() == before
