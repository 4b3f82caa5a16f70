"""What a copy leaves when it is killed late, and resumed copies that must not hang.

A registry makes every tag visible the moment it is written, so the order of the names decides
what a copy killed between two of them leaves behind. And a resumed archive export skips the
blobs its partial file already holds, which must not strand their read-ahead threads.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from memory_bundles import MemoryBundle, signed_bundle

from bundler.adapters.archive import ArchiveTarget
from bundler.adapters.memory import MemoryStore, MemoryTarget
from bundler.model.descriptor import Descriptor
from bundler.model.manifest import Manifest
from bundler.services import copy as copy_service
from bundler.services.copy import COSIGN_SUFFIXES

HERE = Path(__file__).parent


class Killed(Exception):
    """Stands for the SIGKILL that ends a copy between two registry writes."""


class RegistryLikeTarget(MemoryTarget):
    """A memory target whose tags are visible at once, as a registry's are, and that dies."""

    def __init__(self, store: MemoryStore, ref: str | None, kill_at: int | None) -> None:
        super().__init__(store, ref)
        self.kill_at = kill_at
        self.visible: list[str] = []

    def tag(self, tag: str, manifest: Manifest) -> None:
        if self.kill_at is not None and len(self.visible) == self.kill_at:
            raise Killed(tag)
        self.visible.append(tag)


def bundle() -> MemoryBundle:
    return signed_bundle({})


def test_copy_killed_between_tags_never_names_bundle_without_its_signatures() -> None:
    source_bundle = bundle()
    full = RegistryLikeTarget(MemoryStore("dest"), "demo:1.0.0", None)
    copy_service.copy(source_bundle.store.source(source_bundle.tag), full)
    signature_tags = [t for t in full.visible if t.endswith(COSIGN_SUFFIXES)]
    assert len(signature_tags) >= 4  # the index, both images and the chart are signed
    for kill_at in range(len(full.visible)):
        target = RegistryLikeTarget(MemoryStore("dest"), "demo:1.0.0", kill_at)
        with contextlib.suppress(Killed):
            copy_service.copy(source_bundle.store.source(source_bundle.tag), target)
        if "demo:1.0.0" in target.visible:
            assert set(signature_tags) <= set(target.visible), kill_at
    assert full.visible[-1] == "demo:1.0.0"


class TinyChunkStore(MemoryStore):
    """A store whose blobs come out one byte at a time, so each fills a read-ahead queue."""

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        data = b"".join(super().open_blob(descriptor))
        return (data[i : i + 1] for i in range(len(data)))


def resume_export(directory: str, parallel: int) -> None:
    """Export a bundle to an archive, cut the archive back to a partial file, export again.

    Run in a child process by the test below, so that a hang is killed by a timeout.
    """
    stores: dict[str, MemoryStore] = {}
    built = signed_bundle(stores)
    store = TinyChunkStore("tiny")
    store._blobs = built.store.blobs()
    store._index = built.store._index
    path = Path(directory) / "demo.tar"
    copy_service.copy(store.source(built.tag), ArchiveTarget(path, None), parallel=parallel)
    size = path.stat().st_size
    partial = path.parent / f".{path.name}.partial"
    os.replace(path, partial)
    with open(partial, "r+b") as fh:
        fh.truncate(size - 2048)  # every blob but the end-of-archive marker is kept
    result = copy_service.copy(
        store.source(built.tag), ArchiveTarget(path, None), parallel=parallel
    )
    assert result.blobs_skipped > parallel, result.blobs_skipped
    print("resumed", result.blobs_skipped)


def test_resumed_export_with_blobs_in_partial_does_not_hang(tmp_path: Path) -> None:
    # Each blob of the tiny-chunk store is more chunks than the read-ahead queue holds; before
    # the fix the producers of the skipped blobs blocked on their full queues for ever.
    for parallel in (2, 4):
        work = tmp_path / str(parallel)
        work.mkdir()
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "import test_copy_crash as t; t.resume_export(sys.argv[2], int(sys.argv[3]))"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, str(HERE), str(work), str(parallel)],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"resumed export with --parallel {parallel} hung") from None
        assert done.returncode == 0, done.stderr
        assert "resumed" in done.stdout
