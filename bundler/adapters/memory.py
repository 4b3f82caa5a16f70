"""OCI image layouts held in memory: the ``oci:`` transport without a disk.

A :class:`MemoryStore` keeps what an OCI layout directory keeps, blobs by digest and the
entries of ``index.json``, in a process's memory. It is read through the same
:class:`~bundler.adapters.layout.LayoutSource` as a directory or an archive (so every manifest
is digest-checked on the way out, and verification treats it as a layout, extra content
included) and written through a :class:`MemoryTarget` with the guarantees of
:class:`~bundler.adapters.layout.LayoutTarget`: a blob is stored only once its verified stream
has been read to the end, and names appear only at ``commit``.

Library users can stage, verify and inspect bundles with it without touching the disk; the
unit tests of the services run against it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from bundler.adapters.layout import (
    INDEX_FILE,
    LAYOUT_VERSION_DOC,
    OCI_LAYOUT_FILE,
    LayoutSource,
    blob_relpath,
    index_document,
    merge_entries,
    parse_index,
    referrer_entry,
)
from bundler.adapters.stream import CHUNK_SIZE, VerifiedStream
from bundler.errors import ManifestError, NotFoundError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan


class MemoryStore:
    """An OCI image layout in memory: blobs by digest, and the committed ``index.json``.

    It is the :class:`~bundler.adapters.layout.LayoutReader` its sources read; :meth:`source`
    and :meth:`target` give its :class:`~bundler.adapters.base.Source` and
    :class:`~bundler.adapters.base.Target` faces. Like a directory, a store that was never
    committed to has no ``index.json`` and cannot be opened as a source.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = f"memory:{name}"
        self._blobs: dict[Digest, bytes] = {}
        self._index: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    # -- the LayoutReader face
    def blob_names(self) -> list[str]:
        """Every blob the store holds, as ``blobs/<alg>/<hex>`` (a layout's file names)."""
        with self._lock:
            return sorted(blob_relpath(d) for d in self._blobs)

    def read_file(self, relpath: str, limit: int) -> bytes:
        """The bytes of ``oci-layout`` or ``index.json``, at most ``limit`` of them."""
        with self._lock:
            if relpath == OCI_LAYOUT_FILE:
                data = LAYOUT_VERSION_DOC
            elif relpath == INDEX_FILE and self._index is not None:
                data = index_document(self._index)
            else:
                raise NotFoundError(f"missing {relpath}")
        if len(data) > limit:
            raise ManifestError(f"{self.name}: {relpath} exceeds {limit} bytes")
        return data

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is here with the size the descriptor declares."""
        with self._lock:
            data = self._blobs.get(descriptor.digest)
        return data is not None and len(data) == descriptor.size

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """The blob's bytes in chunks, raw (the reader wraps them in a VerifiedStream)."""
        with self._lock:
            data = self._blobs.get(descriptor.digest)
        if data is None:
            raise NotFoundError(f"{self.name} lacks blob {descriptor.digest}")
        return _chunks(data)

    def superseded_indexes(self) -> Iterator[bytes]:
        """LayoutReader.superseded_indexes: none; only an appended archive keeps old indexes."""
        return iter(())

    def stray_files(self) -> list[str]:
        """LayoutReader.stray_files: none; a store holds only index.json and blobs by digest."""
        return []

    # -- the Source and Target faces
    def source(self, ref: str | None = None) -> LayoutSource:
        """The store as a source; ``ref`` selects an entry as ``oci:DIR:REF`` does."""
        return LayoutSource(self, ref)

    def target(self, ref: str | None = None) -> MemoryTarget:
        """A target writing into the store; ``ref`` names the copied artifact."""
        return MemoryTarget(self, ref)

    # -- what the store holds
    @property
    def entries(self) -> list[Descriptor]:
        """The committed ``index.json`` entries (none before the first commit)."""
        with self._lock:
            raw = None if self._index is None else index_document(self._index)
        return [] if raw is None else parse_index(raw, self.name)

    def names(self) -> dict[str, Digest]:
        """Every ref name in ``index.json`` with the digest it points at."""
        return {
            ref: entry.digest
            for entry in self.entries
            if (ref := entry.annotations.get(mt.ANNOTATION_REF_NAME)) is not None
        }

    def blobs(self) -> dict[Digest, bytes]:
        """A copy of every blob the store holds (manifests are blobs too)."""
        with self._lock:
            return dict(self._blobs)

    def delete_blob(self, digest: Digest) -> bool:
        """Remove a blob, as deleting its file removes it from a layout; whether it was here.

        Entries naming it stay: a store can hold incomplete content, exactly as a directory
        whose files were removed can, and readers must say what is missing.
        """
        with self._lock:
            return self._blobs.pop(digest, None) is not None

    def replace_blob(self, digest: Digest, data: bytes) -> None:
        """Overwrite the bytes kept under ``digest`` with no check at all.

        This is what anyone who can write to a layout directory can do to its files; it exists
        so that verifiers can be shown altered content. Every other write is checked.
        """
        with self._lock:
            self._blobs[digest] = data

    # -- used by MemoryTarget
    def _store_blob(self, digest: Digest, data: bytes) -> None:
        with self._lock:
            self._blobs[digest] = data

    def _commit(self, new_entries: list[Descriptor]) -> None:
        with self._lock:
            self._index = merge_entries(list(self._index or []), new_entries)


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]


class MemoryTarget:
    """Writes into a :class:`MemoryStore`, as a layout target writes into a directory.

    Blobs are stored only once their verified stream is exhausted; names appear at ``commit``.
    """

    parallel_blobs = True
    requires_name = True
    write_lock = None  # one process: the store's own lock orders writers

    def __init__(self, store: MemoryStore, ref: str | None) -> None:
        self.store = store
        self.ref = ref
        self.name = f"{store.name}:{ref}" if ref else store.name
        self._new_entries: list[Descriptor] = []

    def root_tag(self, source_ref: str | None) -> str | None:
        """The user's ref, else the one the source was named by."""
        return self.ref or source_ref

    def begin(self, plan: TransferPlan) -> None:
        """Nothing to prepare: the store exists."""

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the store already holds the blob (a re-run skips it)."""
        return self.store.has_blob(descriptor)

    def mount_blob(self, descriptor: Descriptor, source: object) -> bool:
        """Memory has nothing to mount from; the bytes are copied."""
        return False

    def put_blob(self, stream: VerifiedStream) -> None:
        """Store the blob once its stream has been read to the end (size and digest checked)."""
        data = b"".join(stream)  # a VerifiedStream raises on a bad byte or a bad ending
        self.store._store_blob(stream.descriptor.digest, data)

    def put_manifest(self, manifest: Manifest) -> None:
        """Store a manifest's exact bytes as the blob of its digest."""
        descriptor = manifest.descriptor()
        if self.has_blob(descriptor):
            return
        self.put_blob(VerifiedStream([manifest.raw], descriptor, "memory"))

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Name ``manifest`` ``tag`` at commit."""
        self._new_entries.append(
            manifest.descriptor().with_annotations({mt.ANNOTATION_REF_NAME: tag})
        )

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Keep ``referrer`` as an unnamed entry at commit, as a layout does."""
        self._new_entries.append(referrer_entry(referrer))

    def commit(self) -> None:
        """Publish the names in one step."""
        self.store._commit(self._new_entries)

    def abort(self, error: BaseException | None = None) -> None:
        """Publish nothing; blobs already stored are correct and a re-run skips them."""
        self._new_entries = []

    def remove_blob(self, digest: Digest) -> None:
        """Drop a blob this target's copy made garbage (a superseded signature manifest)."""
        self.store.delete_blob(digest)

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Target.open_blob: the store's bytes of the blob."""
        return self.store.open_blob(descriptor)

    def layout(self) -> MemoryStore:
        """Target.layout: the store itself."""
        return self.store
