"""Archives split into volumes for removable media, written and read without reassembly.

An archive ``OUT.tar`` split at ``S`` bytes is the files ``OUT.tar.000``, ``OUT.tar.001``, ...
(each exactly ``S`` bytes but the last) and the parts list ``OUT.tar.parts.json``
(``schemas/parts-list.schema.json``). Concatenated in order, the parts are the ordinary layout
tar, byte for byte, so ``cat OUT.tar.0* > OUT.tar`` gives an archive any tool reads.

Writing (:class:`VolumeWriter`) is a file-like sink that rolls over to the next part at ``S``
bytes and hashes each part and the whole as the bytes pass, in constant memory. Parts are
written under temporary names beside the destination and renamed into place at commit, after
an fsync; the parts list is written last and is the commit marker: without it there is no
split archive.

Reading (:class:`VolumeSet`) parses the parts list strictly, opens every part and checks its
size, then checks every part's sha256 and the whole's sha256 in one sequential pass before
anything in the archive is trusted. Afterwards it serves ``pread`` over the virtual
concatenation from the parts' own file descriptors (held open, so the checked files are the
ones read) and a seekable read-only file object for indexing the tar headers.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import queue
import re
import resource
import stat
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.adapters.files import atomic_write
from bundler.adapters.fsafe import create_temp, open_regular, read_regular
from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    SizeMismatchError,
    TransportError,
    UnsafeArchiveError,
    UsageError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

PARTS_LIST_SUFFIX = ".parts.json"
PARTS_LIST_KIND = "ArchiveParts"
PARTS_LIST_SCHEMA = "parts-list.schema.json"
MIN_VOLUME_SIZE = 1024 * 1024
MAX_PARTS = 100_000
MAX_PARTS_LIST_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_WHOLE_QUEUE = 8  # chunks of _READ_CHUNK waiting for the whole-archive hash
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(?:iB)?$", re.IGNORECASE)


def parse_volume_size(text: str) -> int:
    """Bytes named by ``4G``, ``700M``, ``1.5G``, ``4096K`` or plain ``1048576``.

    K, M, G and T are powers of 1024 (``GiB`` and friends are accepted too). Below
    :data:`MIN_VOLUME_SIZE` is a UsageError. Note that FAT32 caps a file at 4 GiB - 1 byte:
    ``4095M`` fits, ``4G`` does not.
    """
    match = _SIZE.match(text.strip())
    if match is None:
        raise UsageError(
            f"volume size {text!r} is not a size: use bytes or a number with K, M, G or T"
        )
    number, unit = match.groups()
    try:
        size = int(Decimal(number) * _UNITS[unit.upper()])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise UsageError(f"volume size {text!r} is not a size") from None
    if size < MIN_VOLUME_SIZE:
        raise UsageError(f"volume size {text!r} is below the minimum of 1 MiB")
    return size


def parts_list_path(archive: Path) -> Path:
    """Where the parts list of ``archive`` lives: ``archive`` + ``.parts.json``."""
    return archive.with_name(archive.name + PARTS_LIST_SUFFIX)


def part_names(archive_name: str, count: int) -> list[str]:
    """The names of ``count`` parts: ``NAME.000``..., wider when 1000 parts do not suffice."""
    width = max(3, len(str(count - 1)))
    return [f"{archive_name}.{i:0{width}d}" for i in range(count)]


def _plain_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


@dataclass(frozen=True)
class PartEntry:
    """One part of a split archive: its file name beside the parts list, size in bytes, SHA-256."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """The parts list's entry object (``name``, ``size``, ``sha256``)."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class PartsList:
    """The parsed ``OUT.tar.parts.json``: the whole archive and its parts, in order."""

    archive: str
    size: int
    sha256: str
    part_size: int
    parts: tuple[PartEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """The parts list document (schemaVersion 1), parts in order."""
        return {
            "schemaVersion": 1,
            "kind": PARTS_LIST_KIND,
            "archive": self.archive,
            "size": self.size,
            "sha256": self.sha256,
            "partSize": self.part_size,
            "parts": [p.to_json() for p in self.parts],
        }

    def encode(self) -> bytes:
        """Canonical JSON: sorted keys, no insignificant whitespace."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def parse(cls, raw: bytes, origin: str) -> PartsList:
        """A checked parts list, or an error naming what is wrong with it.

        Names that would leave the directory are an UnsafeArchiveError; anything else out of
        shape (JSON, schema, names out of sequence, sizes that do not add up) a ManifestError.
        """
        from bundler.adapters.bundleconfig import load_schema
        from bundler.model.manifest import load_json_strict

        if len(raw) > MAX_PARTS_LIST_BYTES:
            raise ManifestError(f"parts list {origin} exceeds {MAX_PARTS_LIST_BYTES} bytes")
        doc = load_json_strict(raw, f"parts list {origin}")
        if isinstance(doc, dict):
            names: list[Any] = [doc.get("archive")]
            parts = doc.get("parts")
            if isinstance(parts, list):
                names += [p.get("name") for p in parts if isinstance(p, dict)]
            for name in names:
                if isinstance(name, str) and not _plain_name(name):
                    raise UnsafeArchiveError(
                        f"parts list {origin} names {name!r}, which is not a plain file name "
                        "beside it; refusing to look outside its directory"
                    )
        import jsonschema

        validator = jsonschema.Draft202012Validator(load_schema(PARTS_LIST_SCHEMA))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            where = (
                "".join(
                    f"[{p}]" if isinstance(p, int) else f".{p}" for p in errors[0].absolute_path
                ).lstrip(".")
                or "(top level)"
            )
            raise ManifestError(f"parts list {origin}: {where}: {errors[0].message}")
        entries = tuple(PartEntry(p["name"], p["size"], p["sha256"]) for p in doc["parts"])
        result = cls(doc["archive"], doc["size"], doc["sha256"], doc["partSize"], entries)
        result._check_shape(origin)
        return result

    def _check_shape(self, origin: str) -> None:
        expected = part_names(self.archive, len(self.parts))
        for index, (entry, name) in enumerate(zip(self.parts, expected, strict=True)):
            if entry.name != name:
                raise ManifestError(
                    f"parts list {origin}: part {index} is named {entry.name!r}, expected {name!r}"
                )
            last = index == len(self.parts) - 1
            if (entry.size > self.part_size) if last else (entry.size != self.part_size):
                raise ManifestError(
                    f"parts list {origin}: part {entry.name} has {entry.size} bytes; parts of "
                    f"{self.part_size} bytes were expected"
                )
        if sum(p.size for p in self.parts) != self.size:
            raise ManifestError(
                f"parts list {origin}: the parts add up to {sum(p.size for p in self.parts)} "
                f"bytes, not the {self.size} it lists for {self.archive}"
            )


def load_parts_list(path: Path) -> PartsList:
    """Read and check a parts list file (bounded: it is read only up to its size limit)."""
    if os.path.isdir(path):
        raise ManifestError(f"parts list {path} is a directory")
    try:
        raw = read_regular(path, MAX_PARTS_LIST_BYTES, "parts list", follow=True)  # no FIFO
    except FileNotFoundError:
        raise NotFoundError(f"parts list {path} does not exist") from None
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror}") from None
    parts = PartsList.parse(raw, str(path))
    if path.name.endswith(PARTS_LIST_SUFFIX):
        own = path.name[: -len(PARTS_LIST_SUFFIX)]
        if parts.archive != own:
            raise ManifestError(f"parts list {path} is for archive {parts.archive!r}, not {own!r}")
    return parts


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


class VolumeWriter:
    """A write-only file object that splits what it is given into parts of ``part_size``.

    Nothing appears under a final name before :meth:`commit`; :meth:`abort` removes every
    temporary part. Memory stays flat: bytes go straight to the current part's file.
    """

    def __init__(self, path: Path, part_size: int) -> None:
        if part_size < 1:
            raise UsageError(f"volume size {part_size} must be positive")
        self.path = path
        self.part_size = part_size
        self._dir = path.parent
        self._done: list[tuple[str, int, str]] = []  # (temporary path, size, sha256)
        self._fh: io.BufferedWriter | None = None
        self._tmp: str | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._whole = hashlib.sha256()
        self._total = 0
        self._renamed = 0  # parts already under their final names (commit in progress)
        self._closed = False

    # -- the file-object side, as tarfile uses it -----------------------------------------
    def writable(self) -> bool:
        """Always True: a file object tarfile may write to."""
        return True

    def tell(self) -> int:
        """Bytes written so far across all parts: the offset in the whole archive."""
        return self._total

    def flush(self) -> None:
        """Flush the current part's buffer to its file (no fsync; commit does that)."""
        if self._fh is not None:
            self._fh.flush()

    def write(self, data: ReadableBuffer) -> int:
        """Write all of ``data``, starting new parts as each fills; returns ``len(data)``.

        ValueError after commit or abort.
        """
        if self._closed:
            raise ValueError("write to a committed or aborted volume writer")
        view = memoryview(data).cast("B")
        written = len(view)
        try:
            while view:
                if self._fh is None:
                    self._open_part()
                assert self._fh is not None
                piece = view[: self.part_size - self._size]
                self._fh.write(piece)
                self._hash.update(piece)
                self._whole.update(piece)
                self._size += len(piece)
                self._total += len(piece)
                view = view[len(piece) :]
                if self._size == self.part_size:
                    self._finish_part()
        except OSError as exc:
            raise TransportError(
                f"cannot write part {len(self._done)} of {self.path}: {exc.strerror}"
            ) from None
        return written

    # -- parts ------------------------------------------------------------------------------
    def _open_part(self) -> None:
        if len(self._done) >= MAX_PARTS:
            raise UsageError(
                f"{self.path} would need more than {MAX_PARTS} volumes; use a larger size"
            )
        fd, tmp = create_temp(self._dir, f".{self.path.name}.part{len(self._done)}.", ".partial")
        self._tmp = str(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    def _finish_part(self) -> None:
        assert self._fh is not None and self._tmp is not None
        self._fh.flush()
        os.fchmod(self._fh.fileno(), 0o644)  # through the descriptor, never a path
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._done.append((self._tmp, self._size, self._hash.hexdigest()))
        self._fh = None
        self._tmp = None

    def commit(self) -> PartsList:
        """Write the parts list, then move the parts into place, then drop stale parts.

        The new parts list replaces an earlier one atomically before any part takes its final
        name, so final-named volumes are never there without a parts list (a kill during the
        renames leaves the new list and some old parts: a reader refuses that as damaged, and a
        re-run completes it). Parts of a longer earlier export (those its parts list named, and
        nothing else) and a single-file archive of the same name (a reader would prefer it)
        are removed last.
        """
        if self._closed:
            raise UsageError(f"{self.path}: the volumes were already committed or aborted")
        try:
            if self._fh is not None:
                self._finish_part()
            if not self._done:
                raise UsageError(f"{self.path}: nothing was written")
            names = part_names(self.path.name, len(self._done))
            parts = PartsList(
                archive=self.path.name,
                size=self._total,
                sha256=self._whole.hexdigest(),
                part_size=self.part_size,
                parts=tuple(
                    PartEntry(name, size, digest)
                    for name, (_, size, digest) in zip(names, self._done, strict=True)
                ),
            )
            list_path = parts_list_path(self.path)
            earlier = self._earlier_parts(list_path)
            atomic_write(list_path, parts.encode())
            _fsync_dir(self._dir)
            for tmp, name in zip([t for t, _, _ in self._done], names, strict=True):
                os.replace(tmp, self._dir / name)
                self._renamed += 1
            _fsync_dir(self._dir)
            self._remove_stale(earlier - set(names))
            _fsync_dir(self._dir)
        except OSError as exc:
            self.abort()
            raise TransportError(f"cannot finish {self.path}: {exc.strerror}") from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return parts

    def _earlier_parts(self, list_path: Path) -> set[str]:
        """The part names the parts list being replaced named (none if it is absent or bad)."""
        try:
            earlier = load_parts_list(list_path)
        except (NotFoundError, ManifestError, UnsafeArchiveError, TransportError):
            return set()
        return {p.name for p in earlier.parts}

    def _remove_stale(self, stale: set[str]) -> None:
        """Remove the parts an earlier export listed and this one does not (regular files only).

        Other files that merely look like parts (``demo.tar.2024``) are not this writer's.
        """
        for name in stale:
            path = self._dir / name
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(self.path).st_mode):
                os.unlink(self.path)

    def abort(self) -> None:
        """Remove every temporary part; nothing under a final name is touched."""
        self._closed = True
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
            self._fh = None
        leftovers = [tmp for tmp, _, _ in self._done[self._renamed :]]
        if self._tmp is not None:
            leftovers.append(self._tmp)
            self._tmp = None
        self._done.clear()
        for tmp in leftovers:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _ensure_fd_room(count: int, origin: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + 256  # the rest of the program keeps its own descriptors
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and soft < needed:
            raise UsageError(
                f"{origin} has {count} parts, more than this process may open at once "
                f"(limit {soft}); raise the open-file limit (ulimit -n)"
            )


class VolumeSet:
    """The parts of a split archive, checked in full, then read as one run of bytes.

    Opening checks, in this order: the parts list (strictly), that every part exists as a
    regular file of its listed size, then every part's sha256 and the whole's sha256 in one
    sequential pass. Only then is :meth:`pread` or :meth:`open` of any use.
    """

    def __init__(self, list_path: Path) -> None:
        self.list_path = list_path
        self.parts = load_parts_list(list_path)
        self.size = self.parts.size
        self._starts: list[int] = []
        self._fds: list[int] = []
        _ensure_fd_room(len(self.parts.parts), list_path)
        try:
            self._open_parts()
            self._verify()
        except BaseException:
            self.close()
            raise

    def _open_parts(self) -> None:
        offset = 0
        directory = self.list_path.parent
        for entry in self.parts.parts:
            path = directory / entry.name
            try:
                fd = open_regular(path, f"part of {self.list_path}")  # no link, FIFO, device
            except FileNotFoundError:
                raise NotFoundError(f"part {entry.name} of {self.list_path} is missing") from None
            except OSError as exc:
                raise TransportError(f"cannot open part {path}: {exc.strerror}") from None
            self._fds.append(fd)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeArchiveError(f"part {entry.name} of {self.list_path} is not a file")
            if info.st_size != entry.size:
                what = "truncated" if info.st_size < entry.size else "too long"
                raise SizeMismatchError(
                    f"part {entry.name} of {self.list_path} is {what}: {info.st_size} bytes, "
                    f"the parts list says {entry.size}"
                )
            self._starts.append(offset)
            offset += entry.size

    def _verify(self) -> None:
        # Each byte feeds two hashes, the part's and the whole's: the whole's runs on a thread
        # of its own (hashlib lets go of the GIL), so two cores share the work and every byte
        # is still read once. At most _WHOLE_QUEUE chunks wait for that thread.
        whole = hashlib.sha256()
        feed: queue.Queue[bytes | None] = queue.Queue(_WHOLE_QUEUE)

        def hash_whole() -> None:
            while (chunk := feed.get()) is not None:
                whole.update(chunk)

        worker = threading.Thread(target=hash_whole, name="parts-whole", daemon=True)
        worker.start()
        try:
            self._verify_parts(feed)
        finally:
            feed.put(None)
            worker.join()
        if whole.hexdigest() != self.parts.sha256:
            raise DigestMismatchError(
                f"the parts of {self.parts.archive} together have sha256 {whole.hexdigest()}, "
                f"{self.list_path} says {self.parts.sha256}: the parts list or a part was "
                "altered"
            )

    def _verify_parts(self, whole: queue.Queue[bytes | None]) -> None:
        """Every part against its sha256 in one sequential pass; each chunk also to ``whole``."""
        for fd, entry in zip(self._fds, self.parts.parts, strict=True):
            digest = hashlib.sha256()
            offset = 0
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while offset < entry.size:
                chunk = os.pread(fd, min(_READ_CHUNK, entry.size - offset), offset)
                if not chunk:
                    raise SizeMismatchError(
                        f"part {entry.name} of {self.list_path} is truncated: it ended after "
                        f"{offset} of {entry.size} bytes"
                    )
                whole.put(chunk)
                digest.update(chunk)
                offset += len(chunk)
            if digest.hexdigest() != entry.sha256:
                raise DigestMismatchError(
                    f"part {entry.name} of {self.list_path} has sha256 {digest.hexdigest()}, "
                    f"the parts list says {entry.sha256} (damaged, or from another export)"
                )

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of the concatenation (fewer only at its end)."""
        if size <= 0 or offset >= self.size:
            return b""
        if offset < 0:
            raise ValueError("negative offset")
        index = bisect.bisect_right(self._starts, offset) - 1
        pieces: list[bytes] = []
        while size > 0 and index < len(self._fds):
            entry = self.parts.parts[index]
            within = offset - self._starts[index]
            want = min(size, entry.size - within)
            while want > 0:
                chunk = os.pread(self._fds[index], want, within)
                if not chunk:
                    raise TransportError(f"part {entry.name} of {self.list_path} shrank")
                pieces.append(chunk)
                within += len(chunk)
                offset += len(chunk)
                size -= len(chunk)
                want -= len(chunk)
            index += 1
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def open(self) -> VolumeFile:
        """A seekable read-only file object over the concatenation."""
        return VolumeFile(self)

    def close(self) -> None:
        """Close every part's file descriptor; calling it again does nothing."""
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class VolumeFile(io.RawIOBase):
    """Seekable, read-only view of a :class:`VolumeSet` (for tarfile, which reads headers)."""

    def __init__(self, volumes: VolumeSet) -> None:
        super().__init__()
        self._volumes = volumes
        self._pos = 0

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True: tarfile seeks between member headers."""
        return True

    def tell(self) -> int:
        """The current offset in the whole archive."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` as ``io`` defines ``whence``; ValueError for a negative position."""
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._volumes.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` from the current offset across parts; 0 at the end of the archive."""
        view = memoryview(buffer).cast("B")
        data = self._volumes.pread(len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)
