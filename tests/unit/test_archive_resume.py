"""An archive being written survives a cut transfer: a retried blob replaces the cut member,
and an interrupted copy's partial archive is resumed by the next run of the same copy."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from bundler.adapters.archive import ArchiveReader, ArchiveTarget
from bundler.adapters.layout import LayoutDirectory, LayoutSource
from bundler.errors import TransportError
from bundler.model.descriptor import Descriptor
from bundler.services.copy import copy

REF = "example.local/unit/resume:1.0"
LAYER = 3 * 1024 * 1024 + 17


class FlakySource(LayoutSource):
    """Cuts the named blob short with a transport error the first ``failures`` times."""

    def __init__(self, path: Path, big: int, failures: int) -> None:
        super().__init__(LayoutDirectory(path), REF)
        self.big, self.failures = big, failures

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        chunks = super().open_blob(descriptor)
        if descriptor.size != self.big or self.failures <= 0:
            return chunks
        self.failures -= 1

        def cut() -> Iterator[bytes]:
            yield next(chunks)
            raise TransportError("connection reset by the far side")

        return cut()


@pytest.fixture
def layout(tmp_path: Path, synth: ModuleType) -> Path:
    out = tmp_path / "layout"
    synth.write_image(
        out,
        REF,
        [synth.LayerSpec("resume-a", LAYER, level=0), synth.LayerSpec("resume-b", 4096, level=0)],
    )
    return out


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_a_retried_blob_replaces_the_member_cut_short(layout: Path, tmp_path: Path) -> None:
    big = next(
        p.stat().st_size for p in (layout / "blobs/sha256").iterdir() if p.stat().st_size > LAYER
    )
    source = FlakySource(layout, big, failures=1)
    archive = tmp_path / "out.tar"
    copy(source, ArchiveTarget(archive, "x"), parallel=1)
    names = _members(archive)
    assert len(names) == len(set(names))  # no second, cut-short member of the same blob
    reader = ArchiveReader(archive)  # refuses truncated or damaged tars
    reader.close()


def test_an_interrupted_archive_is_resumed_by_the_same_copy(layout: Path, tmp_path: Path) -> None:
    big = next(
        p.stat().st_size for p in (layout / "blobs/sha256").iterdir() if p.stat().st_size > LAYER
    )
    whole = tmp_path / "whole.tar"
    copy(LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(whole, "x"), parallel=1)
    archive = tmp_path / "out.tar"
    with pytest.raises(TransportError):
        copy(FlakySource(layout, big, failures=99), ArchiveTarget(archive, "x"), parallel=1)
    partial = tmp_path / ".out.tar.partial"
    assert not archive.exists() and partial.exists()
    result = copy(
        LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(archive, "x"), parallel=1
    )
    assert result.blobs_skipped >= 1  # the config written before the cut is kept
    assert not partial.exists()
    assert archive.read_bytes() == whole.read_bytes()


def test_a_partial_of_another_copy_is_not_resumed(layout: Path, tmp_path: Path) -> None:
    archive = tmp_path / "out.tar"
    (tmp_path / ".out.tar.partial").write_bytes(b"something else entirely" * 100)
    result = copy(
        LayoutSource(LayoutDirectory(layout), REF), ArchiveTarget(archive, "x"), parallel=1
    )
    assert result.blobs_skipped == 0
    ArchiveReader(archive).close()
