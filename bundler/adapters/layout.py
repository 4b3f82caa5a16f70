"""OCI image layout directories: read by streaming, written atomically.

Writes go blob by blob into ``blobs/<alg>/`` through a temporary file that is renamed into
place only after its size and digest check out; ``index.json`` is replaced in one rename at
commit. A crash therefore leaves at most unreferenced, correct blobs, never a ref name that
points at content that is not all there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from bundler.adapters.base import ClosedOnExit, Inventory
from bundler.adapters.files import atomic_write
from bundler.adapters.fsafe import (
    DestinationLock,
    create_temp,
    open_regular,
    real_directory,
    remove_stale,
)
from bundler.adapters.stream import CHUNK_SIZE, VerifiedStream, read_exact
from bundler.errors import ManifestError, NotFoundError, TransportError, UsageError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    load_json_strict,
    parse_manifest,
)
from bundler.model.plan import TransferPlan

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION_DOC = b'{"imageLayoutVersion":"1.0.0"}'
MAX_INDEX_BYTES = 16 * 1024 * 1024
LOCK_FILE = ".bundler.lock"
BLOB_DIRS = ("sha256", "sha512")
# Hidden temporary files a layout writer makes: ``.oci-layout.X.partial`` and
# ``.index.json.X.partial`` at the root (atomic_write), ``.<hex16>-X`` beside blobs.
_ROOT_TEMP = re.compile(r"\.(?:oci-layout|index\.json)\.[A-Za-z0-9_]+\.partial")
_BLOB_TEMP = re.compile(r"\.[0-9a-f]{16}-[A-Za-z0-9_]+")


class LayoutReader(Protocol):
    """Read access to the files of a layout, wherever they are stored (directory or tar)."""

    name: str

    def blob_names(self) -> list[str]:
        """Every blob file the layout holds, as sorted ``blobs/<alg>/<hex>`` paths."""
        ...

    def read_file(self, relpath: str, limit: int) -> bytes:
        """The bytes of ``relpath``; NotFoundError if absent, ManifestError past ``limit`` bytes."""
        ...

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when the blob is there at the descriptor's size (its bytes are not hashed)."""
        ...

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw, unverified chunks of the blob; NotFoundError if it is absent."""
        ...

    def stray_files(self) -> list[str]:
        """What the layout holds beside ``oci-layout``, ``index.json`` and its blob files.

        Hidden files, links, folders under ``blobs/``, other files at the root, data after a
        tar's end: content no manifest can name, reported by verify's step 6.
        """
        ...

    def superseded_indexes(self) -> Iterator[bytes]:
        """Earlier copies of ``index.json`` (an archive signed by appending), oldest first."""
        ...


def blob_relpath(digest: Digest) -> str:
    """``blobs/<alg>/<hex>``: where a layout keeps the blob of ``digest``."""
    # Built only from a validated Digest, so it cannot name anything outside blobs/.
    return f"blobs/{digest.algorithm}/{digest.hex}"


def parse_index(raw: bytes, origin: str) -> list[Descriptor]:
    """The entries of a layout's ``index.json``; ManifestError unless a schemaVersion 2 index."""
    doc = load_json_strict(raw, f"{origin} index.json")
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ManifestError(f"{origin}: index.json is not a schemaVersion 2 image index")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ManifestError(f"{origin}: index.json lacks a 'manifests' list")
    return [Descriptor.from_json(item) for item in manifests]


def check_layout_header(raw: bytes, origin: str) -> None:
    """Refuse (ManifestError) an ``oci-layout`` file other than ``imageLayoutVersion`` 1.0.0."""
    doc = load_json_strict(raw, f"{origin} oci-layout")
    if not isinstance(doc, dict) or doc.get("imageLayoutVersion") != "1.0.0":
        raise ManifestError(f"{origin}: unsupported oci-layout version")


def merge_entries(
    entries: list[dict[str, Any]], new_entries: list[Descriptor]
) -> list[dict[str, Any]]:
    """The ``index.json`` entries ``entries`` with ``new_entries`` added, in order.

    A named entry replaces any entry of the same ref name (a tag moves); an unnamed entry (a
    referrer) replaces the unnamed entry of the same digest. Other entries are kept as they are.
    """
    for new in new_entries:
        ref = new.annotations.get(mt.ANNOTATION_REF_NAME)
        entries = [
            e
            for e in entries
            if not (
                (
                    ref is not None
                    and (e.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == ref
                )
                or (ref is None and e.get("digest") == str(new.digest) and not e.get("annotations"))
            )
        ]
        entries.append(new.to_json())
    return entries


def referrer_entry(referrer: Manifest) -> Descriptor:
    """The unnamed ``index.json`` entry that keeps ``referrer`` in a layout."""
    descriptor = referrer.descriptor()
    artifact_type = referrer.artifact_type or (
        referrer.config.media_type if referrer.config else None
    )
    return Descriptor(
        descriptor.media_type, descriptor.digest, descriptor.size, artifact_type=artifact_type
    )


def index_document(entries: list[dict[str, Any]]) -> bytes:
    """The bytes of an ``index.json`` holding ``entries``."""
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=2).encode() + b"\n"


class LayoutSource(ClosedOnExit):
    """A :class:`~bundler.adapters.base.Source` over any :class:`LayoutReader`.

    ``ref`` selects the index.json entry whose ``org.opencontainers.image.ref.name`` equals it;
    a ``sha256:...`` ref selects by digest; no ref selects the only entry, if there is one.
    """

    def __init__(self, reader: LayoutReader, ref: str | None) -> None:
        self.reader = reader
        self.ref = ref
        self.name = f"{reader.name}:{ref}" if ref else reader.name
        try:
            header = reader.read_file(OCI_LAYOUT_FILE, 4096)
            raw_index = reader.read_file(INDEX_FILE, MAX_INDEX_BYTES)
        except NotFoundError as exc:
            raise NotFoundError(f"{reader.name} is not a complete OCI layout: {exc}") from None
        check_layout_header(header, reader.name)
        self.entries = parse_index(raw_index, reader.name)
        self._referrers: list[tuple[Digest, Descriptor]] | None = None
        self._selected: Descriptor | None = None

    def _by_ref(self, ref: str) -> Descriptor | None:
        found = [d for d in self.entries if d.annotations.get(mt.ANNOTATION_REF_NAME) == ref]
        if len(found) > 1:
            raise ManifestError(f"{self.reader.name}: ref {ref!r} names several manifests")
        return found[0] if found else None

    def resolve(self) -> Descriptor:
        """Source.resolve: the entry ``ref`` selects; else the one bundle or the only manifest.

        UsageError naming the refs when there is no ref and several candidates; NotFoundError for a
        ref or digest the index does not hold.
        """
        if self.ref is None:
            from bundler.model.bundle import BUNDLE_ARTIFACT_TYPE  # needed without a ref only

            named = [d for d in self.entries if d.media_type in mt.MANIFESTS]
            bundles = [d for d in named if d.artifact_type == BUNDLE_ARTIFACT_TYPE]
            if len(bundles) == 1:
                self._selected = bundles[0]  # a bundle archive: the bundle, not its images
                return bundles[0]
            if len(named) != 1:
                refs = sorted(
                    d.annotations.get(mt.ANNOTATION_REF_NAME, str(d.digest)) for d in named
                )
                raise UsageError(
                    f"{self.reader.name} holds {len(named)} manifests; name one as "
                    f"{self.reader.name}:REF (refs: {', '.join(refs[:10]) or 'none'})"
                )
            self._selected = named[0]
            return named[0]
        if self.ref.startswith(("sha256:", "sha512:")):
            digest = Digest.parse(self.ref)
            for d in self.entries:
                if d.digest == digest:
                    return d
            raise NotFoundError(f"{self.reader.name} has no manifest {digest}")
        found = self._by_ref(self.ref)
        if found is None:
            raise NotFoundError(f"{self.reader.name} has no ref {self.ref!r}")
        return found

    def ref_name(self) -> str | None:
        """Source.ref_name: the ref given, else the ref name of the entry chosen without one."""
        if self.ref and not self.ref.startswith(("sha256:", "sha512:")):
            return self.ref
        if self._selected is not None:  # chosen without a ref: carry its own name over
            return self._selected.annotations.get(mt.ANNOTATION_REF_NAME)
        return None

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """Source.fetch_manifest: read the manifest's blob, bounded and verified by digest."""
        if descriptor.size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest {descriptor.digest} in {self.reader.name} is {descriptor.size} bytes"
            )
        stream = VerifiedStream(self.reader.open_blob(descriptor), descriptor, self.reader.name)
        raw = read_exact(stream, descriptor.size)
        return parse_manifest(raw, media_type=descriptor.media_type, expected=descriptor.digest)

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Source.open_blob: the reader's raw chunks."""
        return self.reader.open_blob(descriptor)

    def find_tag(self, tag: str) -> Descriptor | None:
        """Source.find_tag: the entry whose ref name is ``tag``; ManifestError if several are."""
        return self._by_ref(tag)

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Source.referrers: untagged index entries whose manifest has ``subject`` as its subject.

        The index is scanned once, on the first call.
        """
        if self._referrers is None:
            self._referrers = self._scan_referrers()
        return [d for s, d in self._referrers if s == subject]

    def _scan_referrers(self) -> list[tuple[Digest, Descriptor]]:
        found: list[tuple[Digest, Descriptor]] = []
        for entry in self.entries:
            if entry.media_type not in mt.MANIFESTS or entry.size > MAX_MANIFEST_BYTES:
                continue
            if mt.ANNOTATION_REF_NAME in entry.annotations:
                continue  # tagged content is reached through its tag, not as a referrer
            if not self.reader.has_blob(entry):
                continue
            manifest = self.fetch_manifest(entry)
            if manifest.subject is not None:
                found.append(
                    (
                        manifest.subject.digest,
                        Descriptor(
                            manifest.media_type,
                            manifest.digest,
                            manifest.size,
                            dict(manifest.annotations),
                            artifact_type=manifest.artifact_type
                            or (manifest.config.media_type if manifest.config else None),
                        ),
                    )
                )
        return found

    def inventory(self) -> Inventory:
        """Source.inventory: the index's entries, and the reader's blob and stray files."""
        return Inventory(tuple(self.entries), self.reader)

    def close(self) -> None:
        """Source.close: close the reader when it has anything to close (an archive does)."""
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


class LayoutDirectory:
    """An OCI image layout directory on disk (reader face)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"oci:{path}"

    def read_file(self, relpath: str, limit: int) -> bytes:
        """LayoutReader.read_file, from disk; TransportError for any other read failure."""
        target = self.path / relpath
        try:
            fd = open_regular(target, relpath)  # never a link, a FIFO or a device
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError:
            raise NotFoundError(f"missing {relpath}") from None
        except OSError as exc:
            raise TransportError(f"cannot read {target}: {exc.strerror}") from None
        if len(data) > limit:
            raise ManifestError(f"{self.name}: {relpath} exceeds {limit} bytes")
        return data

    def blob_names(self) -> list[str]:
        """Every blob file the layout holds (``blobs/<alg>/<hex>``), temporary files aside.

        Only regular files in real directories count; links and hidden files are
        :meth:`stray_files`.
        """
        return sorted(
            f"blobs/{alg}/{entry.name}"
            for alg, entry in self._blob_dir_entries()
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
        )

    def _blob_dir_entries(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        root = self.path / "blobs"
        if not _is_real_dir(root):
            return
        for alg in sorted(os.scandir(root), key=lambda e: e.name):
            if alg.is_dir(follow_symlinks=False):
                for entry in os.scandir(alg.path):
                    yield alg.name, entry

    def superseded_indexes(self) -> Iterator[bytes]:
        """LayoutReader.superseded_indexes: none; only an appended archive keeps old indexes."""
        return iter(())

    def stray_files(self) -> list[str]:
        """LayoutReader.stray_files: hidden files, links, folders and other files, by path."""
        stray: list[str] = []
        if _is_real_dir(self.path):
            for entry in os.scandir(self.path):
                if entry.name in (OCI_LAYOUT_FILE, INDEX_FILE):
                    if not entry.is_file(follow_symlinks=False):
                        stray.append(f"{_entry_kind(entry)} {entry.name}")
                elif entry.name == "blobs" and entry.is_dir(follow_symlinks=False):
                    stray += self._stray_in_blobs()
                elif not (entry.name == LOCK_FILE and _empty_file(entry)):
                    stray.append(f"{_entry_kind(entry)} {entry.name}")
        return sorted(stray)

    def _stray_in_blobs(self) -> list[str]:
        stray = [
            f"{_entry_kind(e)} blobs/{e.name}"
            for e in os.scandir(self.path / "blobs")
            if not (e.name in BLOB_DIRS and e.is_dir(follow_symlinks=False))
        ]
        for alg, entry in self._blob_dir_entries():
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                stray.append(f"{_entry_kind(entry)} blobs/{alg}/{entry.name}")
        return stray

    def blob_path(self, digest: Digest) -> Path:
        """The path of the blob of ``digest`` inside the layout directory."""
        return self.path / blob_relpath(digest)

    def has_blob(self, descriptor: Descriptor) -> bool:
        """LayoutReader.has_blob: a regular file (not a link) of the size; bytes not hashed."""
        try:
            info = os.lstat(self.blob_path(descriptor.digest))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == descriptor.size

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """LayoutReader.open_blob: the file in ``CHUNK_SIZE`` chunks, closed when exhausted."""
        path = self.blob_path(descriptor.digest)
        try:
            fd = _open_blob_file(path, f"blob of {self.name}")
        except FileNotFoundError:
            raise NotFoundError(f"{self.name} lacks blob {descriptor.digest}") from None
        except OSError as exc:
            raise TransportError(f"cannot read {path}: {exc.strerror}") from None
        return _file_chunks(os.fdopen(fd, "rb"))


def _open_blob_file(path: Path, what: str) -> int:
    """A blob's file: never through a link; a regular file, or a FIFO (read as a stream).

    A FIFO blob is still read (opened blocking, as before): test harnesses stall copies with
    them. Its bytes are verified like any blob's; a device or a folder is refused.
    """
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.lstat(path).st_mode):
            return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    return open_regular(path, what)  # no link, no device, no folder


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _empty_file(entry: os.DirEntry[str]) -> bool:
    return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size == 0


def _entry_kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "folder"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "special file"


def _file_chunks(fh: Any) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk


def _adoptable(path: Path) -> bool:
    """True for a directory holding nothing but what a killed or concurrent writer starts with.

    That is bundler's lock file, its hidden temporary ``oci-layout``/``index.json`` files, and a
    ``blobs/<alg>/`` skeleton of plain files: a layout whose creation did not finish.
    """
    for entry in os.scandir(path):
        if entry.name == LOCK_FILE or _ROOT_TEMP.fullmatch(entry.name):
            if not entry.is_file(follow_symlinks=False):
                return False
        elif entry.name == "blobs" and entry.is_dir(follow_symlinks=False):
            for alg in os.scandir(entry.path):
                if alg.name not in BLOB_DIRS or not alg.is_dir(follow_symlinks=False):
                    return False
                if not all(b.is_file(follow_symlinks=False) for b in os.scandir(alg.path)):
                    return False
        else:
            return False
    return True


class LayoutTarget:
    """Writes into an OCI layout directory; ``commit`` publishes the ref names.

    ``write_lock`` (a :class:`~bundler.adapters.fsafe.DestinationLock` on ``DIR/.bundler.lock``)
    is held from ``begin`` to ``commit`` or ``abort``: writers of one layout go one at a time, a
    second waiting for the first. A caller that reads the layout before writing it back (sign,
    approve) holds it around both with ``with target.write_lock:``. Acquiring it creates the
    directory if need be. The layout's own files and folders (``oci-layout``, ``index.json``,
    ``blobs``, ``blobs/<alg>``) are never written through a link.
    """

    parallel_blobs = True
    requires_name = True

    def __init__(
        self, path: Path, ref: str | None, *, write_lock: DestinationLock | None = None
    ) -> None:
        self.directory = LayoutDirectory(path)
        self.path = path
        self.ref = ref
        self.name = f"oci:{path}:{ref}" if ref else f"oci:{path}"
        self._new_entries: list[Descriptor] = []
        self._created_dir = False
        self._locked = False
        # A lock the caller holds already for this layout (one promotion writing several
        # images into it) is shared, not taken a second time.
        self.write_lock = write_lock or DestinationLock(
            path / LOCK_FILE, f"layout {path}", self._make_dir
        )
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} exists and is not a directory")
        self._check_is_layout()

    def _check_is_layout(self) -> None:
        path = self.path
        if (
            path.is_dir()
            and not os.path.lexists(path / OCI_LAYOUT_FILE)
            and any(path.iterdir())
            and not _adoptable(path)
        ):
            raise UsageError(f"{path} is a non-empty directory that is not an OCI layout")

    def _make_dir(self) -> None:
        try:
            self.path.mkdir(parents=True)
            self._created_dir = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise TransportError(f"cannot create {self.path}: {exc.strerror}") from None

    def root_tag(self, source_ref: str | None) -> str | None:
        """Target.root_tag: the ref given after ``oci:DIR:``, else the source's ref name."""
        return self.ref or source_ref

    def begin(self, plan: TransferPlan) -> None:
        """Target.begin: take ``write_lock``, create the directory, write or check ``oci-layout``.

        A directory a killed or concurrent writer was creating (only bundler's hidden files and
        an empty skeleton in it) is adopted. UnsafeArchiveError for a linked ``oci-layout``,
        ``blobs`` or ``blobs/<alg>``.
        """
        self.write_lock.acquire()
        self._locked = True
        try:
            self._check_is_layout()  # again, now that no other writer is half-way through
            for sub in ("blobs", *(f"blobs/{alg}" for alg in BLOB_DIRS)):
                real_directory(self.path / sub, f"layout folder {sub} of")
            header = self.path / OCI_LAYOUT_FILE
            if os.path.lexists(header):
                check_layout_header(self.directory.read_file(OCI_LAYOUT_FILE, 4096), self.name)
            else:
                atomic_write(header, LAYOUT_VERSION_DOC)
        except OSError as exc:
            self._unlock()
            raise TransportError(f"cannot prepare {self.path}: {exc.strerror}") from None
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        """Release the hold ``begin`` took, once."""
        if self._locked:
            self._locked = False
            self.write_lock.release()

    def _blob_dir(self, digest: Digest) -> Path:
        """``blobs/<alg>``, created if need be; UnsafeArchiveError if it or ``blobs`` is a link."""
        blobs = self.path / "blobs"
        folder = blobs / digest.algorithm
        for sub in (blobs, folder):
            if not real_directory(sub, "layout folder"):
                with contextlib.suppress(FileExistsError):
                    sub.mkdir()
                real_directory(sub, "layout folder")  # created by us, or by a racing link
        return folder

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Target.has_blob: the blob file exists at its size."""
        return self.directory.has_blob(descriptor)

    def mount_blob(self, descriptor: Descriptor, source: object) -> bool:
        """Target.mount_blob: always False; a directory has nothing to mount from."""
        return False

    def put_blob(self, stream: VerifiedStream) -> None:
        """Target.put_blob: write to a temporary file, fsync, and rename into ``blobs/``.

        A blob that fails verification or the disk leaves no file behind; TransportError for disk
        failures.
        """
        digest = stream.descriptor.digest
        final = self.directory.blob_path(digest)
        try:
            fd, tmp = create_temp(self._blob_dir(digest), f".{digest.hex[:16]}-")
        except OSError as exc:
            raise TransportError(f"cannot write into {final.parent}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in stream:
                    out.write(chunk)
                out.flush()
                os.fchmod(out.fileno(), 0o644)  # through the descriptor, never a path
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TransportError(f"cannot write {final}: {exc.strerror}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_manifest(self, manifest: Manifest) -> None:
        """Target.put_manifest: store the manifest as a blob, unless it is already there."""
        descriptor = manifest.descriptor()
        if self.has_blob(descriptor):
            return
        self.put_blob(VerifiedStream([manifest.raw], descriptor, "memory"))

    def remove_blob(self, digest: Digest) -> None:
        """Delete a blob this target's copy made garbage (a superseded signature manifest).

        Never through a linked ``blobs`` folder; a link or folder under the blob's name stays.
        """
        path = self.directory.blob_path(digest)
        if not (real_directory(path.parent.parent) and real_directory(path.parent)):
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Target.open_blob: the layout's file of the blob."""
        return self.directory.open_blob(descriptor)

    def layout(self) -> LayoutDirectory:
        """Target.layout: the directory written into."""
        return self.directory

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Target.tag: staged as an ``index.json`` entry with the ref name; written at commit."""
        self._new_entries.append(
            manifest.descriptor().with_annotations({mt.ANNOTATION_REF_NAME: tag})
        )

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Target.add_referrer: staged as an untagged ``index.json`` entry; written at commit."""
        self._new_entries.append(referrer_entry(referrer))

    def commit(self) -> None:
        """Target.commit: merge the staged entries into ``index.json``, then release the lock.

        ``write_lock`` is held (since ``begin``), so no other writer's entries are lost. An
        existing corrupt index is refused (ManifestError), not overwritten; a linked or special
        ``index.json`` is an UnsafeArchiveError. Hidden temporary files a killed writer left in
        the layout are removed after the commit.
        """
        index_path = self.path / INDEX_FILE
        try:
            if not self._locked:  # a commit without begin (nothing written) still serialises
                self.write_lock.acquire()
                self._locked = True
            entries: list[dict[str, Any]] = []
            if os.path.lexists(index_path):
                raw = self.directory.read_file(INDEX_FILE, MAX_INDEX_BYTES)
                parse_index(raw, self.name)  # refuse to build on a corrupt index
                doc = json.loads(raw)
                entries = list(doc["manifests"])
            atomic_write(index_path, index_document(merge_entries(entries, self._new_entries)))
            self._remove_own_leftovers()
        except OSError as exc:
            raise TransportError(f"cannot write {index_path}: {exc.strerror}") from None
        finally:
            self._unlock()

    def _remove_own_leftovers(self) -> None:
        """Hidden temporary files of killed writers (regular files only; the lock is held)."""
        remove_stale(self.path, lambda name: _ROOT_TEMP.fullmatch(name) is not None)
        for alg in BLOB_DIRS:
            remove_stale(
                self.path / "blobs" / alg, lambda name: _BLOB_TEMP.fullmatch(name) is not None
            )

    def abort(self, error: BaseException | None = None) -> None:
        """Target.abort: keep written blobs for a re-run; drop a directory this copy created."""
        # Blobs already written are correct and content-addressed; leaving them lets a re-run
        # skip them. A directory this copy created and never committed goes away entirely,
        # under the lock (a writer waiting on it then sees its lock file gone and starts over).
        try:
            if self._created_dir and not os.path.lexists(self.path / INDEX_FILE):
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self._unlock()
