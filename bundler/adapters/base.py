"""The two faces every transport offers to the copy service."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from bundler.adapters.stream import VerifiedStream
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan

if TYPE_CHECKING:
    from bundler.adapters.fsafe import DestinationLock
    from bundler.adapters.layout import LayoutReader


@dataclass(frozen=True)
class Inventory:
    """Everything a store bundler judges as a whole holds (a layout, an archive, a memory store).

    Verification's step 6 counts it; a delta's absent blobs are found with it.
    """

    entries: Sequence[Descriptor]  # index.json's entries, names and referrers alike
    files: LayoutReader  # its blob files and stray files (hidden files, links, trailing data)


class Source(Protocol):
    """Where content is read from.

    Manifests come back verified against the digest that names them; blob chunks come back raw
    and unverified (the copy service wraps them in a VerifiedStream). ``name`` is the location as
    messages show it.
    """

    name: str

    def resolve(self) -> Descriptor:
        """The descriptor of the artifact the user named (tag or digest resolved)."""
        ...

    def ref_name(self) -> str | None:
        """The tag or layout ref the user named, to carry over when the target names none."""
        ...

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """The manifest ``descriptor`` names; DigestMismatchError if its bytes hash otherwise."""
        ...

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw chunks of a blob; the caller wraps them in a VerifiedStream."""
        ...

    def find_tag(self, tag: str) -> Descriptor | None:
        """Resolve another tag beside the artifact (e.g. cosign's ``sha256-<hex>.sig``)."""
        ...

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``subject`` (OCI 1.1 referrers)."""
        ...

    def inventory(self) -> Inventory | None:
        """All the store holds, where it is a layout, an archive or a memory store.

        None for a registry: it holds what others put there, and only what is asked for counts.
        """
        ...

    def close(self) -> None:
        """Release connections and open files; the source is not used afterwards."""
        ...

    def __enter__(self) -> Self:
        """A source is a context manager: leaving the block closes it."""
        ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the source."""
        ...


class ClosedOnExit:
    """What every source inherits: ``with source:`` closes it at the end of the block."""

    def close(self) -> None:
        """Release what the source holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Target(Protocol):
    """Where content is written.

    Nothing becomes visible under a name before ``commit``. The copy service calls ``begin``,
    then per blob ``has_blob``, ``mount_blob`` or ``put_blob``, then ``put_manifest`` children
    first, ``add_referrer``, ``tag``, and last ``commit``; on any failure it calls ``abort``
    instead. ``parallel_blobs`` says whether blob methods may be called from several threads.
    """

    name: str
    parallel_blobs: bool
    requires_name: bool  # layouts need a ref name; registries accept digest-only pushes

    @property
    def write_lock(self) -> DestinationLock | None:
        """The destination's exclusive writer lock: layouts, archives; else None.

        A caller doing several writes (read, then write back) holds it around them all.
        """
        ...

    def begin(self, plan: TransferPlan) -> None:
        """Prepare for ``plan`` (reach the registry, open the layout) before any blob moves."""
        ...

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when the target already holds the blob, so it need not move."""
        ...

    def mount_blob(self, descriptor: Descriptor, source: Source) -> bool:
        """Try to obtain the blob without moving bytes (same-registry mount)."""
        ...

    def put_blob(self, stream: VerifiedStream) -> None:
        """Write a blob by consuming ``stream``, which raises if size or digest do not match."""
        ...

    def put_manifest(self, manifest: Manifest) -> None:
        """Store ``manifest``'s exact bytes by digest; its children are already in place."""
        ...

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Point ``tag`` at ``manifest`` (visible only after ``commit`` where the target stages)."""
        ...

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Record ``referrer`` as referring to ``subject`` (referrers API or fallback tag index)."""
        ...

    def commit(self) -> None:
        """Publish what was written; after this the copy is visible under its names."""
        ...

    def abort(self, error: BaseException | None = None) -> None:
        """Undo what is safe to undo.

        ``error`` says why (a transport failure may leave resumable state behind).
        """
        ...

    def root_tag(self, source_ref: str | None) -> str | None:
        """The name to give the copied artifact: the user's, else one derived from the source."""
        ...

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw chunks of a blob the target holds (the caller verifies them).

        NotFoundError if it does not, or cannot read it back (an archive being written).
        """
        ...

    def layout(self) -> LayoutReader | None:
        """The files of a layout kept whole (a directory or a memory store), else None.

        Their blobs are plain files: a copy hashes one before counting it as present, and
        ``remove_blob`` may delete one nothing reaches.
        """
        ...

    def remove_blob(self, digest: Digest) -> None:
        """Delete a blob of a :meth:`layout` nothing reaches; elsewhere nothing is deleted."""
        ...
