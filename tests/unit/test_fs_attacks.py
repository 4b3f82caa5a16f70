"""Attacks by whoever prepares the medium or a layout directory: links, FIFOs, stray files, races.

Each test is named after the attack. A FIFO opened for reading blocks until a writer comes,
so the FIFO tests open a writer of their own in a thread if the code under test ever blocks:
they end either way and fail (rather than hang) on code that would block.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from memory_bundles import MemoryBundle, signed_bundle

from bundler.adapters import fsafe
from bundler.adapters.archive import ArchiveReader, ArchiveTarget
from bundler.adapters.crypto import read_key_file
from bundler.adapters.layout import LayoutDirectory, LayoutSource, LayoutTarget
from bundler.adapters.memory import MemoryStore
from bundler.adapters.volumes import VolumeSet, VolumeWriter, parts_list_path
from bundler.errors import TransportError, UnsafeArchiveError
from bundler.services import copy as copy_service
from bundler.services.graph import walk
from bundler.services.verify import extra_content

MiB = 1024 * 1024


def _step6_extra(source: LayoutSource) -> list[str]:
    """What verify's step 6 (extra content) reports for the bundle ``source`` resolves to."""
    index = source.fetch_manifest(source.resolve())
    graph = walk(source, index.descriptor())
    return extra_content(source, index, graph.manifests, set(graph.blobs))


@pytest.fixture
def bundle() -> MemoryBundle:
    return signed_bundle({})


def _export(bundle: MemoryBundle, target: ArchiveTarget | LayoutTarget) -> None:
    copy_service.copy(bundle.store.source(bundle.tag), target)


@contextlib.contextmanager
def _unblocking(fifo: Path) -> Iterator[None]:
    """Should the code under test block opening ``fifo`` for reading, open a writer to free it."""
    done = threading.Event()

    def free() -> None:
        if not done.wait(5):  # bounded: the test ends even on code that blocks
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=free, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(b"not bundler's")
    victim.chmod(0o600)
    return victim


# -- High 1: writes through planted links ---------------------------------------------------


def test_symlinked_partial_archive_is_not_followed(bundle: MemoryBundle, tmp_path: Path) -> None:
    out = tmp_path / "medium" / "demo.tar"
    out.parent.mkdir()
    victim = _victim(tmp_path)
    (out.parent / ".demo.tar.partial").symlink_to(victim)
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        _export(bundle, ArchiveTarget(out, None))
    assert victim.read_bytes() == b"not bundler's"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600  # no chmod through the link
    assert not out.exists()


def test_dangling_symlinked_partial_archive_creates_nothing_at_its_target(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    out = tmp_path / "demo.tar"
    planted = tmp_path / "planted-by-link"
    (tmp_path / ".demo.tar.partial").symlink_to(planted)
    with pytest.raises(UnsafeArchiveError):
        _export(bundle, ArchiveTarget(out, None))
    assert not planted.exists()


def test_partial_archive_of_another_user_is_not_resumed(
    bundle: MemoryBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "demo.tar"
    (tmp_path / ".demo.tar.partial").write_bytes(b"planted")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(UnsafeArchiveError, match="belongs to uid"):
        _export(bundle, ArchiveTarget(out, None))


def test_symlinked_archive_lock_file_is_not_followed(bundle: MemoryBundle, tmp_path: Path) -> None:
    out = tmp_path / "demo.tar"
    planted = tmp_path / "planted-by-link"
    (tmp_path / ".demo.tar.lock").symlink_to(planted)
    with pytest.raises(UnsafeArchiveError, match="lock file"):
        _export(bundle, ArchiveTarget(out, None))
    assert not planted.exists()


def _layout_with(bundle: MemoryBundle, tmp_path: Path) -> Path:
    root = tmp_path / "layout"
    _export(bundle, LayoutTarget(root, "first"))
    return root


@pytest.mark.parametrize("folder", ["blobs", "blobs/sha256"])
def test_symlinked_blobs_folder_of_a_layout_is_not_written_through(
    bundle: MemoryBundle, tmp_path: Path, folder: str
) -> None:
    root = tmp_path / "layout"
    root.mkdir()
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if folder == "blobs/sha256":
        (root / "blobs").mkdir()
    (root / folder).symlink_to(elsewhere)
    with pytest.raises(UnsafeArchiveError, match="not a directory"):
        _export(bundle, LayoutTarget(root, "v1"))
    assert list(elsewhere.iterdir()) == []


def test_symlinked_layout_lock_file_is_not_followed(bundle: MemoryBundle, tmp_path: Path) -> None:
    root = _layout_with(bundle, tmp_path)
    planted = tmp_path / "planted-by-link"
    (root / ".bundler.lock").symlink_to(planted)
    with pytest.raises(UnsafeArchiveError, match="lock file"):
        _export(bundle, LayoutTarget(root, "second"))
    assert not planted.exists()


def test_symlinked_index_json_is_not_read_or_written_through(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = _layout_with(bundle, tmp_path)
    victim = _victim(tmp_path)
    (root / "index.json").unlink()
    (root / "index.json").symlink_to(victim)
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        _export(bundle, LayoutTarget(root, "second"))
    assert victim.read_bytes() == b"not bundler's"


def test_symlinked_blob_in_blobs_is_not_deleted_through(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = _layout_with(bundle, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / bundle.index.digest.hex).write_bytes(b"someone's file")
    sha = root / "blobs" / "sha256"
    sha.rename(tmp_path / "moved")
    sha.symlink_to(elsewhere)
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        LayoutTarget(root, None).remove_blob(bundle.index.digest)
    assert (elsewhere / bundle.index.digest.hex).exists()


# -- Low: FIFOs and devices where files should be ---------------------------------------------


def test_fifo_as_archive_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "demo.tar"
    os.mkfifo(fifo)
    with _unblocking(fifo), pytest.raises(UnsafeArchiveError, match="FIFO"):
        ArchiveReader(fifo)


def test_fifo_as_index_json_is_refused_without_hanging(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    fifo = tmp_path / "index.json"
    os.mkfifo(fifo)
    with _unblocking(fifo), pytest.raises(UnsafeArchiveError, match="FIFO"):
        LayoutSource(LayoutDirectory(tmp_path), None)


def test_fifo_as_volume_is_refused_without_hanging(bundle: MemoryBundle, tmp_path: Path) -> None:
    out = tmp_path / "demo.tar"
    _export(bundle, ArchiveTarget(out, None, max_volume_size=MiB))
    part = tmp_path / "demo.tar.000"
    part.unlink()
    os.mkfifo(part)
    with _unblocking(part), pytest.raises(UnsafeArchiveError, match="FIFO"):
        VolumeSet(parts_list_path(out))


def test_fifo_as_key_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "cosign.pub"
    os.mkfifo(fifo)
    with _unblocking(fifo), pytest.raises(OSError, match="FIFO"):
        read_key_file(fifo)


def test_dev_zero_as_key_file_is_refused_not_read_to_exhaustion() -> None:
    with pytest.raises(OSError, match="device"):
        read_key_file(Path("/dev/zero"))


def test_oversized_key_file_is_read_only_to_its_bound(tmp_path: Path) -> None:
    big = tmp_path / "big.pub"
    big.write_bytes(b"x" * (10 * MiB))
    assert len(read_key_file(big)) == 64 * 1024 + 1  # enough to tell it is too large


# -- Low: --max-volume-size deleted unrelated files -----------------------------------------


def test_volume_export_does_not_delete_unrelated_files_named_like_volumes(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    for name in ("demo.tar.2024", "demo.tar.0001", "demo.tar.999"):
        (tmp_path / name).write_bytes(b"the user's own file")
    _export(bundle, ArchiveTarget(tmp_path / "demo.tar", None, max_volume_size=MiB))
    for name in ("demo.tar.2024", "demo.tar.0001", "demo.tar.999"):
        assert (tmp_path / name).read_bytes() == b"the user's own file"


# -- Low: step-6 blind spots -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("planted", "reported"),
    [
        ("blobs/sha256/.hidden", "file blobs/sha256/.hidden"),
        ("blobs/sha256/sub/data", "folder blobs/sha256/sub"),
        ("blobs/notes", "file blobs/notes"),
        ("README", "file README"),
        (".stash", "file .stash"),
    ],
)
def test_smuggled_files_in_a_layout_are_reported_by_step_6(
    bundle: MemoryBundle, tmp_path: Path, planted: str, reported: str
) -> None:
    root = _layout_with(bundle, tmp_path)
    path = root / planted
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"unsigned payload")
    assert reported in LayoutDirectory(root).stray_files()
    assert reported in _step6_extra(LayoutSource(LayoutDirectory(root), "first"))


def test_symlink_under_blobs_is_reported_and_not_listed_as_a_blob(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = _layout_with(bundle, tmp_path)
    link = root / "blobs" / "sha256" / ("ab" * 32)
    link.symlink_to("/etc/hostname")
    directory = LayoutDirectory(root)
    assert f"link blobs/sha256/{'ab' * 32}" in directory.stray_files()
    assert f"blobs/sha256/{'ab' * 32}" not in directory.blob_names()


def test_a_clean_layout_has_no_stray_files(bundle: MemoryBundle, tmp_path: Path) -> None:
    root = _layout_with(bundle, tmp_path)
    assert LayoutDirectory(root).stray_files() == []


def test_data_after_the_end_of_archive_marker_is_reported_by_step_6(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    out = tmp_path / "demo.tar"
    _export(bundle, ArchiveTarget(out, None))
    clean = ArchiveReader(out)
    assert clean.stray_files() == []
    clean.close()
    with out.open("ab") as fh:
        fh.write(b"\0" * tarfile.RECORDSIZE)  # more zero padding is not data
    padded = ArchiveReader(out)
    assert padded.stray_files() == []
    padded.close()
    with out.open("ab") as fh:
        fh.write(b"unsigned payload after the end")
    reader = ArchiveReader(out)
    source = LayoutSource(reader, None)
    try:
        assert any("after the end-of-archive marker" in s for s in reader.stray_files())
        assert any("after the end-of-archive marker" in s for s in _step6_extra(source))
    finally:
        source.close()


# -- Crash safety: creation of a new layout ----------------------------------------------------


def test_layout_whose_creation_was_killed_is_adopted(bundle: MemoryBundle, tmp_path: Path) -> None:
    root = tmp_path / "new"
    root.mkdir()
    (root / ".oci-layout.k1ll3d_x.partial").write_bytes(b'{"imageLayoutVersion"')
    (root / ".bundler.lock").write_bytes(b"")
    (root / "blobs" / "sha256").mkdir(parents=True)
    _export(bundle, LayoutTarget(root, "v1"))
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.json", "oci-layout"]


def test_foreign_directory_is_still_not_taken_for_a_layout(tmp_path: Path) -> None:
    from bundler.errors import UsageError

    root = tmp_path / "photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(UsageError, match="not an OCI layout"):
        LayoutTarget(root, "v1")


def test_two_writers_creating_one_new_layout_both_succeed(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = tmp_path / "new"
    first = LayoutTarget(root, "a")
    second = LayoutTarget(root, "b")  # constructed before the first has made anything
    errors: list[BaseException] = []

    def run(target: LayoutTarget) -> None:
        try:
            _export(bundle, target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = LayoutSource(LayoutDirectory(root), "a").entries
    refs = {d.annotations.get("org.opencontainers.image.ref.name") for d in names}
    assert {"a", "b"} <= refs


# -- Crash safety: leftovers of killed runs ---------------------------------------------------


def test_hidden_temp_files_of_a_killed_volume_export_are_removed_by_a_successful_run(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    leftovers = [".demo.tar.part0.abc_123.partial", ".demo.tar.parts.json.x1y2z3.partial"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"40 MiB of an interrupted part")
    (tmp_path / ".demo.tar.part1.linked.partial").symlink_to(tmp_path / "keep")
    (tmp_path / "keep").write_bytes(b"kept")
    (tmp_path / ".other.tar.part0.abc.partial").write_bytes(b"another archive's")
    _export(bundle, ArchiveTarget(tmp_path / "demo.tar", None, max_volume_size=MiB))
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(leftovers)
    assert ".demo.tar.part1.linked.partial" in names  # a link is not a temp file of ours
    assert ".other.tar.part0.abc.partial" in names
    assert (tmp_path / "keep").read_bytes() == b"kept"


def test_hidden_temp_files_of_a_killed_layout_write_are_removed_by_a_successful_run(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = _layout_with(bundle, tmp_path)
    stale = [root / ".index.json.abc123.partial", root / "blobs/sha256/.0123456789abcdef-q1w2e3"]
    for path in stale:
        path.write_bytes(b"left by a kill")
    _export(bundle, LayoutTarget(root, "second"))
    assert not any(p.exists() for p in stale)
    assert LayoutDirectory(root).stray_files() == []


# -- Crash safety: volumes without a parts list ------------------------------------------------


def test_volumes_never_appear_under_their_names_without_a_parts_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "demo.tar"
    writer = VolumeWriter(out, MiB)
    writer.write(b"v" * (3 * MiB))
    real_replace = os.replace
    calls: list[str] = []

    def killed_on_second_part(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".001"):
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs
        calls.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_on_second_part)
    monkeypatch.setattr(writer, "abort", lambda: None)  # a killed process cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        writer.commit()
    if (tmp_path / "demo.tar.000").exists():
        assert parts_list_path(out).exists()


# -- Crash safety: two writers of one destination ----------------------------------------------


def test_second_export_to_an_archive_being_written_does_not_share_its_partial(
    bundle: MemoryBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler.model.plan import TransferPlan

    monkeypatch.setattr(fsafe, "LOCK_WAIT_SECONDS", 0.0)
    out = tmp_path / "demo.tar"
    first = ArchiveTarget(out, None)
    first.begin(TransferPlan(root=bundle.index.descriptor()))
    try:
        with pytest.raises(TransportError, match="another bundler is writing"):
            _export(bundle, ArchiveTarget(out, None))
    finally:
        first.abort()
    _export(bundle, ArchiveTarget(out, None))  # the lock went with the first writer


def test_second_writer_of_a_layout_waits_for_the_first(
    bundle: MemoryBundle, tmp_path: Path
) -> None:
    root = _layout_with(bundle, tmp_path)
    first = LayoutTarget(root, "held")
    first.write_lock.acquire()
    done = threading.Event()
    result: list[BaseException | None] = []

    def second() -> None:
        try:
            _export(bundle, LayoutTarget(root, "second"))
            result.append(None)
        except BaseException as exc:
            result.append(exc)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.3)  # still waiting while the first holds the lock
    first.write_lock.release()
    thread.join(30)
    assert result == [None]


def test_write_lock_is_reentrant_for_a_caller_holding_it_around_a_copy(
    bundle: MemoryBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsafe, "LOCK_WAIT_SECONDS", 0.0)
    root = _layout_with(bundle, tmp_path)
    target = LayoutTarget(root, "signed")
    with target.write_lock:
        _export(bundle, target)  # begin and commit inside the caller's hold
        assert target.write_lock.held
        with pytest.raises(TransportError, match="another bundler is writing"):
            LayoutTarget(root, "other").write_lock.acquire()
    assert not target.write_lock.held
    assert not (root / ".bundler.lock").exists()  # no lock file is left behind


def test_memory_store_reports_no_stray_files() -> None:
    assert MemoryStore().stray_files() == []
