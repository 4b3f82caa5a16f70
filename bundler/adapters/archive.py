"""Tar archives of OCI image layouts (``archive:FILE.tar``), read and written by streaming.

Writing puts ``oci-layout``, ``index.json`` and every manifest first, then configs, then layers,
so a reader can check the metadata (and, later, signatures) before the big blobs pass by. The
archive is written under a temporary name beside its destination and renamed only at commit.

Reading never extracts: member headers are indexed once, every member is checked (a plain file
or directory, a name inside the layout, no duplicates), and blobs are served straight from their
offsets in the tar, so nothing is written to a temporary directory.

Signing appends (:class:`ArchiveAppender`): the new signature blobs and a new ``index.json``
are written after the last member, over the end-of-archive marker, and the archive's earlier
bytes are never rewritten. So ``index.json`` is the one name that may appear more than once:
the last copy is the layout's index, as tar and skopeo (which extract, later members replacing
earlier ones) see it too, and the earlier copies are kept for verification's step 6 (see
:meth:`ArchiveReader.superseded_indexes`). Every other name still appears at most once.

Either side may be split into volumes (``bundler.adapters.volumes``): the writer then streams into
parts of a maximum size plus a parts list, and the reader, given ``FILE.tar`` that does not exist
but ``FILE.tar.parts.json`` that does (or the parts list itself), checks every part and the whole
and then reads the concatenation in place, without reassembling it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bundler.adapters.fsafe import (
    DestinationLock,
    create_new,
    open_regular,
    remove_stale,
)
from bundler.adapters.layout import (
    INDEX_FILE,
    LAYOUT_VERSION_DOC,
    MAX_INDEX_BYTES,
    OCI_LAYOUT_FILE,
    blob_relpath,
    index_document,
    merge_entries,
    parse_index,
    referrer_entry,
)
from bundler.adapters.stream import CHUNK_SIZE, VerifiedStream
from bundler.adapters.volumes import (
    MIN_VOLUME_SIZE,
    PARTS_LIST_SUFFIX,
    PartsList,
    VolumeSet,
    VolumeWriter,
    parts_list_path,
)
from bundler.errors import (
    ManifestError,
    NotFoundError,
    TransportError,
    UnsafeArchiveError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan

MAX_MEMBERS = 200_000
MAX_INDEX_COPIES = 1000  # index.json once per signature appended; more is refused
MAX_APPEND_BYTES = 64 * 1024 * 1024  # what one sign may append: signatures, never a bundle
MAX_TAIL_BYTES = 64 * 1024 * 1024  # after the end marker, kept in memory while appending
_BLOB_NAME = re.compile(r"^blobs/(sha256|sha512)/([0-9a-f]+)$")
_ALLOWED_DIRS = {".", "blobs", "blobs/sha256", "blobs/sha512"}  # "." from `tar -C dir .`
_INDEX_NAMES = {INDEX_FILE, f"./{INDEX_FILE}"}  # spellings a later copy may supersede


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


# Go's archive/tar reads at most 1 MiB of a PAX or GNU long-name header; tarfile reads any
# size into memory, so a header claiming gigabytes would cost gigabytes. Refuse it first.
MAX_EXTENDED_HEADER_BYTES = 1024 * 1024
_EXTENDED_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extended headers (PAX, GNU long names) are bounded.

    The bound applies before tarfile reads them; pass it as ``tarinfo=`` to ``tarfile.open``.
    """

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise UnsafeArchiveError(
                f"archive member {self.name!r} is an extended header of {self.size} bytes, "
                f"more than {MAX_EXTENDED_HEADER_BYTES}"
            )
        return super()._proc_member(tar)  # type: ignore[misc,no-any-return]


def safe_member_name(name: str, what: str = "archive member") -> str:
    """The normalised form of a relative member name, or UnsafeArchiveError."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise UnsafeArchiveError(f"{what} {name!r} has an absolute or odd path")
    norm = posixpath.normpath(name)
    if norm.startswith("../") or norm == ".." or "/../" in f"/{norm}/":
        raise UnsafeArchiveError(f"{what} {name!r} escapes the archive root")
    return norm


def scan_tar(
    source: int | IO[bytes] | io.RawIOBase, path: Path
) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """Each member's checked, normalised name and header, in order, without extracting.

    ``source`` is a file descriptor (duplicated, so the caller's stays open and unmoved) or a
    seekable binary file object positioned at the start of the tar (left open). tarfile seeks
    over the data of a regular file, so this reads only headers. The member count is bounded;
    a damaged tar is an UnsafeArchiveError.
    """
    if isinstance(source, int):
        with os.fdopen(os.dup(source), "rb") as fh:
            yield from _scan_fileobj(fh, path)
    else:
        yield from _scan_fileobj(source, path)


def _scan_fileobj(
    fh: IO[bytes] | io.RawIOBase, path: Path
) -> Iterator[tuple[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(  # noqa: SIM115 - closed with fh
            fileobj=fh, mode="r:", tarinfo=BoundedTarInfo
        )
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{path} is not a tar archive: {exc}") from None
    except RecursionError:  # a chain of extended headers, each naming the next
        raise UnsafeArchiveError(f"{path} chains too many extended headers") from None
    count = 0
    try:
        for info in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise UnsafeArchiveError(f"{path} has more than {MAX_MEMBERS} members")
            yield safe_member_name(info.name), info
            # Drop the member list tarfile keeps: callers hold their own compact index.
            tar.members = []  # type: ignore[attr-defined]
        # tarfile stops quietly at a header cut short, as if the archive had ended there: an
        # archive cut at or inside a header would read as one with fewer members. Require the
        # end-of-archive marker (a zero block) where the members stop.
        fh.seek(tar.offset)
        marker = fh.read(tarfile.BLOCKSIZE)
        if marker is None or len(marker) < tarfile.BLOCKSIZE or marker.strip(b"\0"):
            raise UnsafeArchiveError(
                f"{path} is truncated or damaged after {count} members: no end-of-archive "
                "marker where they stop"
            )
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{path} is a damaged tar archive: {exc}") from None
    except RecursionError:  # a chain of extended headers, each naming the next
        raise UnsafeArchiveError(f"{path} chains too many extended headers") from None


def index_members(
    members: Iterator[tuple[str, tarfile.TarInfo]], path: Path
) -> tuple[dict[str, _Member], list[_Member], int]:
    """Check every member of a layout tar; its files by name, earlier index copies, and end.

    Only plain files and the layout's directories, under a layout's names, are allowed. A name
    may appear once, except ``index.json``: a later copy supersedes an earlier one (an appended
    signature), and the earlier copies come back in order, at most :data:`MAX_INDEX_COPIES` in
    all. Every copy must then be spelt ``index.json`` or ``./index.json``, names every tar tool
    extracts to the same file (``blobs/../index.json`` twice is refused: tools differ on it).
    The end is where the last member's data and padding stop.
    """
    files: dict[str, _Member] = {}
    superseded: list[_Member] = []
    plain_index = True  # every index.json so far spelt plainly: a later copy may supersede it
    end = 0
    for name, info in members:
        end = max(end, info.offset_data + info.size + (-info.size % tarfile.BLOCKSIZE))
        if info.isdir():
            if name not in _ALLOWED_DIRS:
                raise UnsafeArchiveError(
                    f"archive member {info.name!r} is not part of an OCI layout"
                )
            continue
        if not info.isreg():
            kind = "link" if info.issym() or info.islnk() else "special file"
            raise UnsafeArchiveError(
                f"archive member {info.name!r} is a {kind}; only plain files allowed"
            )
        if name not in (OCI_LAYOUT_FILE, INDEX_FILE) and not _BLOB_NAME.match(name):
            raise UnsafeArchiveError(f"archive member {info.name!r} is not part of an OCI layout")
        if name == INDEX_FILE and name in files and plain_index and info.name in _INDEX_NAMES:
            superseded.append(files[name])  # an appended index.json: the later one counts
            if len(superseded) >= MAX_INDEX_COPIES:
                raise UnsafeArchiveError(
                    f"{path} holds more than {MAX_INDEX_COPIES} copies of {INDEX_FILE}"
                )
        elif name in files:
            raise UnsafeArchiveError(
                f"archive member {name!r} appears twice; refusing the ambiguity"
            )
        if name == INDEX_FILE:
            plain_index = plain_index and info.name in _INDEX_NAMES
        files[name] = _Member(info.offset_data, info.size)
    return files, superseded, end


class ArchiveReader:
    """Random access to the files of a layout tar, without extracting it.

    ``path`` names a single-file archive, or a split one: ``FILE.tar`` when only
    ``FILE.tar.parts.json`` exists, or that parts list itself. A split archive is checked in
    full (every part and the whole, see :class:`~bundler.adapters.volumes.VolumeSet`) before
    its members are indexed; ``volumes`` is then its VolumeSet, else None.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"archive:{path}"
        self._members: dict[str, _Member] = {}
        self._superseded: list[_Member] = []  # earlier copies of index.json, in order
        self._end = 0  # where the last member's data (and padding) ends
        self._fd = -1
        self.volumes: VolumeSet | None = None
        if path.name.endswith(PARTS_LIST_SUFFIX):
            self.volumes = VolumeSet(path)
        else:
            try:
                self._fd = open_regular(path, "archive", follow=True)  # no FIFO, no device
            except FileNotFoundError:
                if not parts_list_path(path).exists():
                    raise NotFoundError(f"archive {path} does not exist") from None
                self.volumes = VolumeSet(parts_list_path(path))
            except OSError as exc:
                raise TransportError(f"cannot open {path}: {exc.strerror}") from None
        try:
            self._index_members()
        except BaseException:
            self.close()
            raise

    def _pread(self, size: int, offset: int) -> bytes:
        if self.volumes is not None:
            return self.volumes.pread(size, offset)
        return os.pread(self._fd, size, offset)

    def _index_members(self) -> None:
        if self.volumes is not None:
            with self.volumes.open() as view:
                self._index(scan_tar(view, self.path))
        else:
            self._index(scan_tar(self._fd, self.path))

    def _index(self, members: Iterator[tuple[str, tarfile.TarInfo]]) -> None:
        self._members, self._superseded, self._end = index_members(members, self.path)

    def blob_names(self) -> list[str]:
        """Every blob file the archive holds (``blobs/<alg>/<hex>``)."""
        return sorted(n for n in self._members if n.startswith("blobs/"))

    def superseded_indexes(self) -> Iterator[bytes]:
        """The earlier copies of ``index.json``, oldest first, read one at a time when asked.

        Appending a signature leaves the index it replaced in the archive; verification looks
        at what those named (a signature manifest a later one replaced) to account for every
        blob. A copy over :data:`MAX_INDEX_BYTES` comes back empty (it names nothing).
        """
        for member in self._superseded:
            yield self._pread(member.size, member.offset) if member.size <= MAX_INDEX_BYTES else b""

    def stray_files(self) -> list[str]:
        """LayoutReader.stray_files: data after the end-of-archive marker, if any is not zeros.

        Members other than a layout's are refused when the archive is opened; what follows the
        marker is no member at all, so tar tools skip it and only this reports it. Zero padding
        of any length (record padding, a larger blocking factor) is not data.
        """
        size = self.volumes.size if self.volumes is not None else os.fstat(self._fd).st_size
        offset = self._end
        while offset < size:
            chunk = self._pread(min(CHUNK_SIZE, size - offset), offset)
            if not chunk:
                break
            if chunk.strip(b"\0"):
                return [
                    f"data after the end-of-archive marker ({size - self._end} bytes follow it)"
                ]
            offset += len(chunk)
        return []

    def read_file(self, relpath: str, limit: int) -> bytes:
        """Member ``relpath``'s bytes; NotFoundError if absent, ManifestError over ``limit``."""
        member = self._members.get(relpath)
        if member is None:
            raise NotFoundError(f"missing {relpath}")
        if member.size > limit:
            raise ManifestError(f"{self.name}: {relpath} exceeds {limit} bytes")
        return self._pread(member.size, member.offset)

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when ``blobs/<alg>/<hex>`` is there at the descriptor's size (not hashed)."""
        member = self._members.get(blob_relpath(descriptor.digest))
        return member is not None and member.size == descriptor.size

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw chunks of the blob, read in place from its offset; NotFoundError if it is absent."""
        member = self._members.get(blob_relpath(descriptor.digest))
        if member is None:
            raise NotFoundError(f"{self.name} lacks blob {descriptor.digest}")
        return self._chunks(member)

    def _chunks(self, member: _Member) -> Iterator[bytes]:
        offset, remaining = member.offset, member.size
        while remaining > 0:
            chunk = self._pread(min(CHUNK_SIZE, remaining), offset)
            if not chunk:
                raise TransportError(f"{self.name} is truncated")
            offset += len(chunk)
            remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        """Close the archive file or its volumes; calling it again does nothing."""
        if self.volumes is not None:
            self.volumes.close()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class _TarWriter:
    """Writes tar members straight from their chunks: header, data, padding.

    The bytes are what ``tarfile`` writes (PAX headers from ``TarInfo.tobuf``, two zero blocks
    and record padding at the end), without its file-object copy loop in between.
    """

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.offset = 0

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.offset += len(data)

    def add(self, name: str, size: int, chunks: Iterable[bytes], mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.type = size, mode, 0, tarfile.REGTYPE
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        written = 0
        for chunk in chunks:
            self._write(chunk)
            written += len(chunk)
        if written != size:  # a VerifiedStream raises first; this guards every other caller
            raise TransportError(f"{name}: wrote {written} bytes of {size}")
        if size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))


def _own_temp_pattern(archive_name: str) -> re.Pattern[str]:
    """The hidden temporary files a writer of ``archive_name`` makes beside it.

    ``.NAME.partial`` (a single-file archive growing), ``.NAME.partN.<random>.partial`` (a
    volume before commit) and ``.NAME.parts.json.<random>.partial`` (the parts list being
    written), ``<random>`` being the temporary file's random suffix.
    """
    return re.compile(
        re.escape(f".{archive_name}")
        + r"(?:\.part[0-9]+\.[A-Za-z0-9_]+|\.parts\.json\.[A-Za-z0-9_]+)?\.partial"
    )


class ArchiveTarget:
    """Writes a layout tar; the file appears under its name only at ``commit``.

    With ``max_volume_size`` the same tar is split into volumes of that many bytes
    (``FILE.tar.000``, ...) plus ``FILE.tar.parts.json``, written last at commit; ``parts`` is
    then the committed parts list.

    ``write_lock`` (a :class:`~bundler.adapters.fsafe.DestinationLock` on ``.FILE.tar.lock``
    beside it) is held from ``begin`` to ``commit`` or ``abort``, so two writers of one archive
    never share its partial file; a caller that reads the archive before writing it back (sign,
    approve) holds it around both with ``with target.write_lock:``.
    """

    parallel_blobs = False
    requires_name = True

    def __init__(self, path: Path, ref: str | None, max_volume_size: int | None = None) -> None:
        self.path = path
        self.ref = ref
        self.name = f"archive:{path}"
        self.max_volume_size = max_volume_size
        self.parts: PartsList | None = None
        if max_volume_size is not None:
            if max_volume_size < MIN_VOLUME_SIZE:
                raise UsageError(f"volume size {max_volume_size} is below the minimum of 1 MiB")
            if path.name.endswith(PARTS_LIST_SUFFIX):
                raise UsageError(f"{path}: name the archive (FILE.tar), not its parts list")
        if path.exists() and path.is_dir():
            raise UsageError(f"{path} is a directory, not an archive file")
        if not path.parent.exists():
            raise UsageError(f"directory {path.parent} does not exist")
        self._tar: _TarWriter | None = None
        self._tmp: str | None = None
        self._written: set[Digest] = set()
        self._plan: TransferPlan | None = None
        self._fh: Any = None
        self._broken: str | None = None  # why writing cannot go on, once it cannot
        self.write_lock = DestinationLock(path.parent / f".{path.name}.lock", f"archive {path}")
        self._locked = False

    def root_tag(self, source_ref: str | None) -> str | None:
        """Target.root_tag: the ref given after ``archive:FILE:``, else the source's ref name."""
        return self.ref or source_ref

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Target.open_blob: an archive being written is not read back."""
        raise NotFoundError(f"{self.name}: an archive being written cannot be read back")

    def layout(self) -> None:
        """Target.layout: none; an archive is written as one stream."""
        return None

    def remove_blob(self, digest: Digest) -> None:
        """Target.remove_blob: nothing; an archive holds only what its writer put in."""

    def appender(self) -> ArchiveAppender:
        """A target adding to this archive in place (sign, approve), sharing ``write_lock``.

        NotFoundError if the archive does not exist; UsageError for a split archive or a
        maximum volume size.
        """
        if self.max_volume_size is not None:
            raise UsageError(f"{self.name}: a maximum volume size does not apply to appending")
        return ArchiveAppender(self.path, self.ref, self.write_lock)

    @property
    def partial_path(self) -> Path:
        """Where a single-file archive grows until commit; kept if a transfer dies midway."""
        return self.path.parent / f".{self.path.name}.partial"

    def _header(self, plan: TransferPlan) -> bytes:
        """oci-layout, index.json and every manifest: the same bytes for the same plan."""
        entries: list[dict[str, Any]] = []
        for assignment in plan.tags:
            entries.append(
                assignment.descriptor.with_annotations(
                    {**assignment.annotations, mt.ANNOTATION_REF_NAME: assignment.tag}
                ).to_json()
            )
        tagged = {a.descriptor.digest for a in plan.tags}
        for referrers in plan.referrers.values():
            for referrer in referrers:
                if referrer.digest not in tagged:
                    d = referrer.descriptor()
                    artifact_type = referrer.artifact_type or (
                        referrer.config.media_type if referrer.config else None
                    )
                    entries.append(
                        Descriptor(
                            d.media_type, d.digest, d.size, artifact_type=artifact_type
                        ).to_json()
                    )
        index = (
            json.dumps(
                {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}, indent=2
            ).encode()
            + b"\n"
        )
        out = io.BytesIO()
        writer = _TarWriter(out)
        writer.add(OCI_LAYOUT_FILE, len(LAYOUT_VERSION_DOC), [LAYOUT_VERSION_DOC])
        writer.add(INDEX_FILE, len(index), [index])
        writer.add_dir("blobs")
        writer.add_dir("blobs/sha256")
        seen: set[Digest] = set()
        for manifest in plan.manifests:
            if manifest.digest not in seen:
                seen.add(manifest.digest)
                writer.add(blob_relpath(manifest.digest), manifest.size, [manifest.raw])
        self._written = seen
        return out.getvalue()

    def begin(self, plan: TransferPlan) -> None:
        """Target.begin: write the layout header, index and every manifest before any blob.

        Takes ``write_lock`` first (held until ``commit`` or ``abort``). A ``.partial`` file left
        by an interrupted run of the same copy is resumed if it is a regular file of this user
        (never through a link): its verified whole blobs are kept. TransportError if the file
        cannot be created, UnsafeArchiveError if something else is planted under its name.
        """
        self._plan = plan
        header = self._header(plan)
        self.write_lock.acquire()
        self._locked = True
        try:
            self._open(header, plan)
        except BaseException:
            self._unlock()
            raise

    def _open(self, header: bytes, plan: TransferPlan) -> None:
        try:
            if self.max_volume_size is not None:
                self._fh = VolumeWriter(self.path, self.max_volume_size)
                self._tar = _TarWriter(self._fh)
                self._tar._write(header)
                return
            partial = self.partial_path
            fd, existed = self._open_partial(partial)
            self._tmp = str(partial)
            self._fh = os.fdopen(fd, "r+b")
            offset = self._resume(fd, header, plan) if existed else None
            self._tar = _TarWriter(self._fh)
            if offset is None:
                self._fh.truncate(0)
                self._tar._write(header)
            else:
                self._fh.truncate(offset)
                self._fh.seek(offset)
                self._tar.offset = offset
        except OSError as exc:
            raise TransportError(f"cannot create {self.path}: {exc.strerror}") from None

    def _open_partial(self, partial: Path) -> tuple[int, bool]:
        """The partial file, created anew (O_EXCL|O_NOFOLLOW) or, if one is there, reopened.

        Only a regular file of this user is reopened, without following a link; anything else
        under that hidden name was not left by bundler and is refused.
        """
        try:
            return create_new(partial, 0o600), False
        except FileExistsError:
            pass
        fd = open_regular(partial, "partial archive", write=True)
        owner = os.fstat(fd).st_uid
        if owner != os.getuid():
            os.close(fd)
            raise UnsafeArchiveError(
                f"partial archive {partial} belongs to uid {owner}, not this user; remove it "
                "and run again"
            )
        return fd, True

    def _resume(self, fd: int, header: bytes, plan: TransferPlan) -> int | None:
        """Keep what an interrupted run of the same copy wrote.

        That is the same header, then whole blobs that still hash to their names. Returns where
        to go on, or None to start over.
        """
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            if fh.read(len(header)) != header:
                return None
            end = len(header)
            size = os.fstat(fh.fileno()).st_size
            fh.seek(end)
            try:
                tar = tarfile.open(fileobj=fh, mode="r:")  # noqa: SIM115 - closed with fh
                for info in tar:
                    tar.members = []  # type: ignore[attr-defined]
                    match = _BLOB_NAME.match(info.name)
                    if not info.isreg() or not match or info.offset_data + info.size > size:
                        break
                    digest = Digest(match.group(1), match.group(2))
                    wanted = plan.blobs.get(digest)
                    if wanted is None or wanted.size != info.size:
                        break
                    hasher = digest.hasher()
                    left, at = info.size, info.offset_data
                    while left:
                        chunk = os.pread(fh.fileno(), min(CHUNK_SIZE, left), at)
                        if not chunk:
                            break
                        hasher.update(chunk)
                        left -= len(chunk)
                        at += len(chunk)
                    if left or hasher.hexdigest() != digest.hex:
                        break
                    self._written.add(digest)
                    end = info.offset_data + info.size + (-info.size % tarfile.BLOCKSIZE)
            except (tarfile.TarError, OSError):
                pass  # keep what was verified up to here
        return end

    def _write_blob(self, digest: Digest, size: int, chunks: Iterable[bytes]) -> None:
        if digest in self._written:
            return
        assert self._tar is not None
        self._tar.add(blob_relpath(digest), size, chunks)
        self._written.add(digest)

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Target.has_blob: True for blobs written in this run (or kept from a resumed one)."""
        return descriptor.digest in self._written

    def mount_blob(self, descriptor: Descriptor, source: object) -> bool:
        """Target.mount_blob: always False; a tar has nothing to mount from."""
        return False

    def put_blob(self, stream: VerifiedStream) -> None:
        """Target.put_blob: append the blob as a tar member, verified as it streams.

        A member cut short is rewound so the archive only ever ends in whole members; after a cut in
        a split archive (earlier volumes are closed) every later put raises TransportError.
        """
        d = stream.descriptor
        assert self._tar is not None
        start = self._tar.offset
        if self._broken is not None:
            raise TransportError(
                f"{self.name}: cannot go on after an earlier blob was cut off ({self._broken})"
            )
        try:
            self._write_blob(d.digest, d.size, stream)  # the stream checks size and digest
        except TransportError as exc:
            self._rewind(start, str(exc))  # a retry must not follow a member cut short
            raise
        except OSError as exc:  # the disk: full, over a size limit, gone
            error = TransportError(f"cannot write {self.path}: {exc.strerror or exc}")
            self._rewind(start, str(error))
            raise error from None
        except BaseException as exc:
            self._rewind(start, str(exc) or type(exc).__name__)
            raise

    def _rewind(self, offset: int, why: str) -> None:
        """Drop a member cut short, so the archive ends with whole members only."""
        assert self._tar is not None
        if isinstance(self._fh, VolumeWriter):
            self._broken = why  # earlier volumes are closed: no going back across them
            return
        try:
            self._fh.flush()
            self._fh.truncate(offset)
            self._fh.seek(offset)
            self._tar.offset = offset
        except OSError:
            self._broken = why

    def put_manifest(self, manifest: Manifest) -> None:
        """Target.put_manifest: ``begin`` wrote it already; ManifestError for an unplanned one."""
        if manifest.digest not in self._written:
            raise ManifestError(f"manifest {manifest.digest} was not planned for {self.name}")

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Target.tag: ``begin`` wrote planned tags to index.json; UsageError for others."""
        assert self._plan is not None
        if not any(a.tag == tag for a in self._plan.tags):
            raise UsageError(f"tag {tag!r} was not planned for {self.name}")

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Target.add_referrer: nothing to do, ``begin`` already put referrers in ``index.json``."""
        pass  # recorded in index.json by begin()

    def commit(self) -> None:
        """Target.commit: end the tar, fsync, rename it to its name (split: write parts list).

        TransportError if the disk fails; the partial archive is then removed.
        """
        if isinstance(self._fh, VolumeWriter):
            self._commit_volumes(self._fh)
            return
        if self._tar is None or self._tmp is None:
            raise UsageError(f"{self.name}: nothing was written")
        try:
            self._tar.close()
            self._fh.flush()
            os.fchmod(self._fh.fileno(), 0o644)  # through the descriptor, never a path
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise TransportError(f"cannot finish {self.path}: {exc.strerror}") from None
        self._tmp = None
        self._finished()

    def _unlock(self) -> None:
        """Release the hold ``begin`` took, once, however many clean-ups call this."""
        if self._locked:
            self._locked = False
            self.write_lock.release()

    def _finished(self) -> None:
        """After a commit: drop hidden temporary files a killed writer of this archive left."""
        pattern = _own_temp_pattern(self.path.name)
        remove_stale(self.path.parent, lambda name: pattern.fullmatch(name) is not None)
        self._unlock()

    def _commit_volumes(self, writer: VolumeWriter) -> None:
        assert self._tar is not None
        try:
            self._tar.close()
        except OSError as exc:
            writer.abort()
            self._unlock()
            raise TransportError(f"cannot finish {self.path}: {exc.strerror}") from None
        except BaseException:
            writer.abort()
            self._unlock()
            raise
        try:
            self.parts = writer.commit()  # aborts by itself on failure
        except BaseException:
            self._unlock()
            raise
        self._finished()

    def abort(self, error: BaseException | None = None) -> None:
        """Drop what was written, except after a transport failure.

        Then the partial archive stays (hidden, never under the archive's name) and a re-run of
        the same copy resumes.
        """
        try:
            if isinstance(self._fh, VolumeWriter):
                self._fh.abort()
                return
            if self._fh is not None:
                with contextlib.suppress(Exception):
                    self._fh.close()
            if self._tmp is not None:
                if not isinstance(error, TransportError):
                    with contextlib.suppress(OSError):
                        os.unlink(self._tmp)
                self._tmp = None
        finally:
            self._unlock()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class ArchiveAppender:
    """Adds members after the last one of an existing single-file archive, in place.

    ``sign`` and ``approve`` write through it: the manifests and blobs the archive lacks (the
    new signatures) go after its last member, then a new ``index.json`` (the last one's entries
    with the new names merged in, as a layout's commit merges them), then a new end-of-archive
    marker. The archive's existing bytes are neither read (beyond the member headers, the last
    ``index.json`` and the end marker) nor rewritten, so the cost is that of the signatures,
    not of the bundle. Blobs already in the archive are taken as they are (by name and size):
    checking them is verification's job.

    Crash safety: everything appended except its first two blocks is written and fsynced while
    the old end-of-archive marker (two zero blocks) still stands where the last member ends, so
    every tar reader still sees the archive as it was; then those two blocks go in one write
    and are fsynced. A failure or interruption before the end (``abort``) truncates the file
    back and writes its old tail again: byte for byte what it was. A ``kill -9`` before the
    last write leaves bytes after the old marker, which tar readers skip, verification's step
    6 reports, and the next sign writes over (whatever follows the marker is no member).

    A split archive (volumes and a parts list) is refused with a UsageError: appending would
    change the last volume and the SHA-256 of the whole, which only reading every volume
    again could give.
    """

    # Blob calls may come from several threads: the copy then asks has_blob first for each
    # blob, and no blob the archive holds is read ahead (a sequential target's read-ahead
    # would start reading every layer before learning it is not needed).
    parallel_blobs = True
    requires_name = True

    def __init__(self, path: Path, ref: str | None, write_lock: DestinationLock) -> None:
        self.path = path
        self.ref = ref
        self.name = f"archive:{path}"
        self.write_lock = write_lock
        self.appended = 0  # bytes the committed append added to the archive
        if path.name.endswith(PARTS_LIST_SUFFIX) or (
            not path.exists() and parts_list_path(path).exists()
        ):
            name = path.name.removesuffix(PARTS_LIST_SUFFIX)
            raise UsageError(
                f"{path} is split into volumes; signatures are added to single-file archives "
                f"only. Sign before splitting (sign, then export --max-volume-size), or join "
                f"the volumes (cat {name}.0* > {name}), sign that, and export it again"
            )
        if not path.exists():
            raise NotFoundError(f"archive {path} does not exist")
        self._fd = -1
        self._locked = False
        self._size = 0  # the archive's length before the append
        self._end = 0  # where its last member ends: the appended members start there
        self._members: dict[str, _Member] = {}
        self._entries: list[dict[str, Any]] = []
        self._new: list[tuple[str, bytes]] = []  # (member name, bytes), in order
        self._new_names: set[str] = set()
        self._new_bytes = 0
        self._guard = threading.Lock()  # over the new members: blob calls come from threads
        self._new_entries: list[Descriptor] = []
        self._touched = False  # bytes past the old end were written: abort restores them
        self._old_tail = b""  # the bytes after the last member before the append

    def root_tag(self, source_ref: str | None) -> str | None:
        """Target.root_tag: the ref given after ``archive:FILE:``, else the source's ref name."""
        return self.ref or source_ref

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Target.open_blob: what is being appended is not read back."""
        raise NotFoundError(f"{self.name}: an archive being appended to is not read back")

    def layout(self) -> None:
        """Target.layout: none; an archive is added to, never pruned."""
        return None

    def remove_blob(self, digest: Digest) -> None:
        """Target.remove_blob: nothing; bytes already in an archive stay (readers skip them)."""

    def begin(self, plan: TransferPlan) -> None:
        """Target.begin: take the lock, open the archive read-write, index it, check its end.

        UnsafeArchiveError for an archive the reader would refuse, or with more than
        :data:`MAX_TAIL_BYTES` after its end-of-archive marker; UsageError when it already
        holds :data:`MAX_INDEX_COPIES` copies of ``index.json``.
        """
        self.write_lock.acquire()
        self._locked = True
        try:
            self._open()
        except BaseException:
            self._close()
            raise

    def _open(self) -> None:
        try:
            self._fd = open_regular(self.path, "archive", write=True, follow=True)
            self._size = os.fstat(self._fd).st_size
        except FileNotFoundError:
            raise NotFoundError(f"archive {self.path} does not exist") from None
        except OSError as exc:
            raise TransportError(f"cannot open {self.path}: {exc.strerror}") from None
        self._members, superseded, self._end = index_members(
            scan_tar(self._fd, self.path), self.path
        )
        if len(superseded) + 1 >= MAX_INDEX_COPIES:
            raise UsageError(
                f"{self.path} was signed {len(superseded)} times already; export it again "
                "(bundler export archive:FILE --to archive:NEW) to start a fresh archive"
            )
        # Whatever follows the end marker is no member (tar readers stop there; step 6 reports
        # anything but zeros): the append writes over it. It is kept to put back on failure.
        if self._size - self._end > MAX_TAIL_BYTES:
            raise UnsafeArchiveError(
                f"{self.path} holds {self._size - self._end} bytes after its end-of-archive "
                "marker; refusing to append over them"
            )
        self._old_tail = os.pread(self._fd, self._size - self._end, self._end)
        index = self._members.get(INDEX_FILE)
        if index is None or OCI_LAYOUT_FILE not in self._members:
            raise NotFoundError(f"{self.name} is not a complete OCI layout")
        if index.size > MAX_INDEX_BYTES:
            raise ManifestError(f"{self.name}: {INDEX_FILE} exceeds {MAX_INDEX_BYTES} bytes")
        raw = os.pread(self._fd, index.size, index.offset)
        parse_index(raw, self.name)  # refuse to build on a corrupt index
        self._entries = list(json.loads(raw)["manifests"])

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Target.has_blob: the archive holds the blob at its size, or this append adds it."""
        name = blob_relpath(descriptor.digest)
        member = self._members.get(name)
        with self._guard:
            added = name in self._new_names
        return added or (member is not None and member.size == descriptor.size)

    def mount_blob(self, descriptor: Descriptor, source: object) -> bool:
        """Target.mount_blob: always False; a tar has nothing to mount from."""
        return False

    def _add(self, name: str, data: bytes) -> None:
        with self._guard:
            if name not in self._new_names:
                self._add_new(name, data)

    def _add_new(self, name: str, data: bytes) -> None:
        if name in self._members:
            raise UnsafeArchiveError(
                f"{self.name} holds {name} at another size than its digest names; refusing "
                "to add a second copy"
            )
        self._new_bytes += len(data)
        if self._new_bytes > MAX_APPEND_BYTES:
            raise UsageError(
                f"{self.name}: more than {MAX_APPEND_BYTES} bytes to append; only signatures "
                "are added to an archive in place"
            )
        self._new.append((name, data))
        self._new_names.add(name)

    def put_blob(self, stream: VerifiedStream) -> None:
        """Target.put_blob: kept in memory (bounded), appended at commit; verified as it streams."""
        if self._new_bytes + stream.descriptor.size > MAX_APPEND_BYTES:  # before reading it
            raise UsageError(
                f"{self.name}: more than {MAX_APPEND_BYTES} bytes to append; only signatures "
                "are added to an archive in place"
            )
        data = b"".join(stream)  # the stream checks size and digest
        self._add(blob_relpath(stream.descriptor.digest), data)

    def put_manifest(self, manifest: Manifest) -> None:
        """Target.put_manifest: appended at commit, unless the archive holds it already."""
        if not self.has_blob(manifest.descriptor()):
            self._add(blob_relpath(manifest.digest), manifest.raw)

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Target.tag: a named entry of the new ``index.json``."""
        self._new_entries.append(
            manifest.descriptor().with_annotations({mt.ANNOTATION_REF_NAME: tag})
        )

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Target.add_referrer: an unnamed entry of the new ``index.json``."""
        self._new_entries.append(referrer_entry(referrer))

    def _tail(self) -> bytes:
        out = io.BytesIO()
        writer = _TarWriter(out)
        writer.offset = self._end  # record padding counts from the start of the archive
        for name, data in self._new:
            writer.add(name, len(data), [data])
        index = index_document(merge_entries(self._entries, self._new_entries))
        writer.add(INDEX_FILE, len(index), [index])
        writer.close()
        return out.getvalue()

    def commit(self) -> None:
        """Target.commit: append the new members, the new index and the end marker; fsync.

        TransportError if the disk fails; the archive is then restored to what it was.
        """
        if self._fd < 0:
            raise UsageError(f"{self.name}: nothing was begun")
        tail = self._tail()
        head = 2 * tarfile.BLOCKSIZE  # overwrites the old end-of-archive marker, last
        try:
            self._touched = True
            _pwrite_all(self._fd, tail[head:], self._end + head)
            os.ftruncate(self._fd, self._end + len(tail))
            os.fsync(self._fd)
            _pwrite_all(self._fd, tail[:head], self._end)
            os.fsync(self._fd)
        except OSError as exc:
            self.abort()
            raise TransportError(f"cannot append to {self.path}: {exc.strerror}") from None
        self._touched = False
        self.appended = len(tail) - (self._size - self._end)
        self._close()

    def abort(self, error: BaseException | None = None) -> None:
        """Target.abort: put the archive back as it was, byte for byte; release the lock."""
        try:
            if self._touched and self._fd >= 0:
                self._touched = False
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._end)  # the appended bytes go ...
                    _pwrite_all(self._fd, self._old_tail, self._end)  # ... the old tail is back
                    os.fsync(self._fd)
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._locked:
            self._locked = False
            self.write_lock.release()


def archive_size_bound(plan: TransferPlan) -> int:
    """At most how many bytes the archive of ``plan`` takes on disk (a tar of its members).

    Each manifest and blob is a member: a header block (and one more for a long name) and its
    bytes padded to 512; plus the layout files, the index naming every manifest and tag, the
    end-of-archive blocks and the tar record padding.
    """
    block = 512
    sizes = [len(m.raw) for m in plan.manifests] + [d.size for d in plan.blobs.values()]
    members = sum(2 * block + -(-size // block) * block for size in sizes)
    index = 1024 * (len(plan.manifests) + len(plan.tags)) + 64 * 1024
    return members + index + 20 * block
