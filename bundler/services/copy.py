"""Copy one OCI artifact, with everything under it and everything that refers to it.

1. Plan: walk the graph from the named artifact, fetching and verifying every manifest
   (children of indexes, configs and layers of images, OCI referrers, cosign's
   ``sha256-<hex>.sig/.att/.sbom`` tags). No blob moves yet.
2. Blobs: each one is skipped if the target has it, mounted if the target can link it from the
   source, else streamed through a :class:`VerifiedStream` (parallel where the target allows).
3. Manifests: written children first, by digest.
4. Names: referrer indexes, then cosign's tags, then the artifact's own name, last, so no name
   ever points at incomplete content or at content whose signatures are not all there yet.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from bundler.adapters.base import Source, Target
from bundler.adapters.stream import VerifiedStream
from bundler.errors import ManifestError, TransportError, UsageError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TagAssignment, TransferPlan

log = logging.getLogger(__name__)

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
MAX_DEPTH = 8
MAX_MANIFESTS = 10_000
BLOB_ATTEMPTS = 3


class Progress:
    """Receives progress events; the CLI renders them, tests may count them."""

    def planned(self, plan: TransferPlan) -> None:
        """Called once with the plan, before any blob moves; the default does nothing."""
        pass

    def checking(self, what: str, plan: TransferPlan) -> None:
        """Called before the blobs of ``plan`` are read to be checked, not moved.

        ``what`` says what is checked; ``advance`` then counts the bytes read. The default does
        nothing.
        """
        pass

    def advance(self, nbytes: int) -> None:
        """Called from blob threads as ``nbytes`` more bytes arrive; the default does nothing."""
        pass

    def not_moved(self, nbytes: int) -> None:
        """Called from blob threads for a blob of ``nbytes`` already there or mounted.

        No byte of it moves, so ``advance`` is not called for it; the default does nothing.
        """
        pass


@dataclass
class CopyResult:
    """What one copy did: manifests, blobs copied, skipped, mounted or omitted, and bytes."""

    source: str
    target: str
    digest: Digest
    media_type: str
    tag: str | None
    manifests: int = 0
    blobs: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    referrers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    blobs_omitted: int = 0
    plan: TransferPlan | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        """The ``--output json`` form of the result (the plan itself is not included)."""
        return {
            "source": self.source,
            "target": self.target,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "tag": self.tag,
            "manifests": self.manifests,
            "blobs": {
                "total": self.blobs,
                "copied": self.blobs_copied,
                "skipped": self.blobs_skipped,
                "mounted": self.blobs_mounted,
                "omitted": self.blobs_omitted,
            },
            "bytes": {"total": self.bytes_total, "copied": self.bytes_copied},
            "referrers": self.referrers,
            "tags": self.tags,
            "seconds": round(self.seconds, 3),
        }


# Complexity kept: the graph walk with its bounds and referrer lookups; read as one plan step.
def plan_copy(source: Source, *, with_referrers: bool = True) -> TransferPlan:  # noqa: C901
    """Step 1: the whole graph, every manifest verified, before any blob moves."""
    root = source.resolve()
    plan = TransferPlan(root=root)
    seen: set[Digest] = set()

    # Complexity kept: one node of the walk: its bounds, children, referrers and cosign tags.
    def visit(descriptor: Descriptor, depth: int) -> Manifest | None:  # noqa: C901
        if descriptor.digest in seen:
            return None
        if depth > MAX_DEPTH:
            raise ManifestError(f"{source.name}: graph deeper than {MAX_DEPTH} levels")
        if len(seen) >= MAX_MANIFESTS:
            raise ManifestError(f"{source.name}: more than {MAX_MANIFESTS} manifests")
        seen.add(descriptor.digest)
        manifest = source.fetch_manifest(descriptor)
        if manifest.is_index:
            for child in manifest.manifests:
                if child.media_type in mt.MANIFESTS:
                    visit(child, depth + 1)
                else:
                    plan.blobs.setdefault(child.digest, child)
        else:
            for blob in manifest.blobs():
                plan.blobs.setdefault(blob.digest, blob)
        plan.manifests.append(manifest)
        if with_referrers:
            for ref_desc in source.referrers(manifest.digest):
                referrer = visit(ref_desc, depth + 1)
                if referrer is not None:
                    plan.referrers.setdefault(manifest.digest, []).append(referrer)
            for suffix in COSIGN_SUFFIXES:
                tag = manifest.digest.tag_form() + suffix
                found = source.find_tag(tag)
                if found is not None:
                    visit(found, depth + 1)
                    plan.tags.append(TagAssignment(tag, found))
        return manifest

    visit(root, 0)
    return plan


def copy(
    source: Source,
    target: Target,
    *,
    with_referrers: bool = True,
    parallel: int = 4,
    progress: Progress | None = None,
    omit: set[Digest] | None = None,
    root_annotations: Mapping[str, str] | None = None,
    before_write: Callable[[TransferPlan], None] | None = None,
) -> CopyResult:
    """Copy the artifact ``source`` names into ``target``.

    In a layout or an archive, a bundle's images are also named by their references, so other
    tools find them (``skopeo copy oci-archive:FILE:REF``). ``omit`` names blobs deliberately
    left out (a delta export: the far side already has them); every manifest is still written.
    ``root_annotations`` go with the artifact's name where the target keeps them (an archive's
    ``index.json`` entry): unsigned hints, such as the base a delta was made against.
    """
    started = time.monotonic()
    progress = progress or Progress()
    plan = plan_copy(source, with_referrers=with_referrers)
    root_manifest = next(m for m in plan.manifests if m.digest == plan.root.digest)
    root_tag = target.root_tag(source.ref_name())
    if root_tag is None and target.requires_name:
        raise UsageError(f"name the copy in {target.name}: add :REF to the location")
    if root_tag is not None:
        plan.tags.insert(0, TagAssignment(root_tag, plan.root, dict(root_annotations or {})))
    if target.requires_name:
        from bundler.model.bundle import image_names  # the bundle model: only layouts, archives

        taken = {a.tag for a in plan.tags}
        plan.tags.extend(
            TagAssignment(name, d) for name, d in image_names(root_manifest) if name not in taken
        )
    result = CopyResult(
        source=source.name,
        target=target.name,
        digest=plan.root.digest,
        media_type=root_manifest.media_type,
        tag=root_tag,
        manifests=len(plan.manifests),
        blobs=len(plan.blobs),
        bytes_total=plan.blob_bytes,
        plan=plan,
    )
    plan = _leave_out(plan, omit or set(), result)
    if before_write is not None:
        before_write(plan)  # may refuse the copy: nothing is written yet
    progress.planned(plan)
    log.info(
        "%s -> %s: %d manifests, %d blobs (%d bytes), %d referrers",
        source.name,
        target.name,
        len(plan.manifests),
        len(plan.blobs),
        plan.blob_bytes,
        sum(len(r) for r in plan.referrers.values()),
    )
    try:
        target.begin(plan)
        _copy_blobs(source, target, plan, result, progress, parallel)
        log.info(
            "%s: %d blobs copied (%d bytes), %d already there, %d mounted",
            target.name,
            result.blobs_copied,
            result.bytes_copied,
            result.blobs_skipped,
            result.blobs_mounted,
        )
        for manifest in plan.manifests:  # step 3: children first
            target.put_manifest(manifest)
        for subject, referrers in plan.referrers.items():  # step 4: names last
            for referrer in referrers:
                target.add_referrer(subject, referrer)
                result.referrers.append(str(referrer.digest))
        by_digest = {m.digest: m for m in plan.manifests}
        for assignment in name_order(plan.tags, root_tag):
            target.tag(assignment.tag, by_digest[assignment.descriptor.digest])
            result.tags.append(assignment.tag)
        target.commit()
    except BaseException as error:
        target.abort(error)
        raise
    result.seconds = time.monotonic() - started
    return result


def _leave_out(plan: TransferPlan, omit: set[Digest], result: CopyResult) -> TransferPlan:
    """``plan`` without the blobs of ``omit`` (counted in ``result``); manifests all stay."""
    left_out = {d for d in omit if d in plan.blobs}
    if not left_out:
        return plan
    result.blobs_omitted = len(left_out)
    return replace(plan, blobs={d: b for d, b in plan.blobs.items() if d not in left_out})


def name_order(tags: list[TagAssignment], root_tag: str | None) -> list[TagAssignment]:
    """The order names are written in: signatures and attestations first, the artifact last.

    A registry makes each tag visible at once, so a copy killed between two tags must never
    leave the artifact's own name pointing at content whose ``sha256-<hex>.sig/.att/.sbom``
    tags are not all there yet: cosign's tags come first, then the image names of a bundle,
    and the name the user asked for last of all.
    """
    cosign = [a for a in tags if a.tag != root_tag and a.tag.endswith(COSIGN_SUFFIXES)]
    others = [a for a in tags if a.tag != root_tag and not a.tag.endswith(COSIGN_SUFFIXES)]
    root = [a for a in tags if a.tag == root_tag]
    return cosign + others + root


def _blob_order(plan: TransferPlan) -> list[Descriptor]:
    configs = {m.config.digest for m in plan.manifests if m.config is not None}
    small = [d for d in plan.blobs.values() if d.digest in configs]
    large = [d for d in plan.blobs.values() if d.digest not in configs]
    large.sort(key=lambda d: d.size, reverse=True)
    return small + large


# Complexity kept: skip, mount or stream per blob, and the thread pool's failure handling, together.
def _copy_blobs(  # noqa: C901
    source: Source,
    target: Target,
    plan: TransferPlan,
    result: CopyResult,
    progress: Progress,
    parallel: int,
) -> None:
    lock = threading.Lock()

    def one(descriptor: Descriptor, ahead: _ReadAhead | None = None) -> None:
        if target.has_blob(descriptor):
            outcome = "skipped"
        elif target.mount_blob(descriptor, source):
            outcome = "mounted"
        else:
            _transfer(source, target, descriptor, progress, ahead)
            outcome = "copied"
        if outcome != "copied":
            progress.not_moved(descriptor.size)
        with lock:
            if outcome == "copied":
                result.blobs_copied += 1
                result.bytes_copied += descriptor.size
            elif outcome == "mounted":
                result.blobs_mounted += 1
            else:
                result.blobs_skipped += 1

    order = _blob_order(plan)
    if not target.parallel_blobs and parallel > 1 and len(order) > 1:
        _sequential_with_read_ahead(source, order, one, parallel - 1)
        return
    if parallel <= 1 or len(order) <= 1:
        for descriptor in order:
            one(descriptor)
        return
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="blob")
    try:
        futures: list[Future[None]] = [pool.submit(one, d) for d in order]
        _done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                exc = future.exception()
                assert exc is not None
                raise exc
    except BaseException:
        # Ctrl-C or a failed blob: drop the queue, and let the transfers in flight end (bounded
        # by the timeouts) before the target is aborted, so none writes after the clean-up.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _ReadAhead:
    """Reads one blob's chunks in a background thread into a small bounded queue.

    A sequential target (an archive is one stream) writes blob N while blobs N+1.. are already
    arriving, so the source's latency overlaps the writing. At most ``QUEUE_CHUNKS`` chunks of
    each blob wait in memory. The chunks are raw: the consumer still verifies them.
    """

    QUEUE_CHUNKS = 8
    _END = object()

    def __init__(self, source: Source, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self._queue: queue.Queue[object] = queue.Queue(self.QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._source = source

    def produce(self) -> None:
        # The digest is checked here, on the reading thread, so hashing overlaps the writing;
        # a mismatch reaches the consumer as an exception after the last chunk.
        try:
            chunks = VerifiedStream(
                self._source.open_blob(self.descriptor), self.descriptor, self._source.name
            )
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def chunks(self) -> Iterator[bytes]:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    raise TransportError(f"{self.descriptor.digest}: read-ahead stopped") from None
                continue
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def cancel(self) -> None:
        self._stop.set()


def _sequential_with_read_ahead(
    source: Source,
    order: list[Descriptor],
    one: Callable[[Descriptor, _ReadAhead | None], None],
    depth: int,
) -> None:
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="read-ahead")
    started: dict[int, _ReadAhead] = {}

    def start(i: int) -> None:
        if i < len(order) and i not in started:
            ahead = _ReadAhead(source, order[i])
            started[i] = ahead
            pool.submit(ahead.produce)

    try:
        for i, descriptor in enumerate(order):
            for j in range(i, i + depth):
                start(j)
            ahead = started.pop(i)
            try:
                one(descriptor, ahead)
            finally:
                # A blob the target already has (kept from a resumed partial) is never read
                # from the queue: its producer must stop, or it holds a reader thread forever
                # and every later blob waits for it. The same on a failure or Ctrl-C.
                ahead.cancel()
    finally:
        for ahead in started.values():
            ahead.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _transfer(
    source: Source,
    target: Target,
    descriptor: Descriptor,
    progress: Progress,
    ahead: _ReadAhead | None = None,
) -> None:
    """Stream one blob; transient failures restart it from the source, bad content never."""
    for attempt in range(1, BLOB_ATTEMPTS + 1):
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            progress.advance(n)

        if ahead is not None and attempt == 1:
            # Already digest-checked by the read-ahead thread; the size is checked again here.
            stream = VerifiedStream(
                ahead.chunks(), descriptor, source.name, count, verify_digest=False
            )
        else:
            if ahead is not None:
                ahead.cancel()
            stream = VerifiedStream(source.open_blob(descriptor), descriptor, source.name, count)
        try:
            target.put_blob(stream)
            return
        except TransportError:
            progress.advance(-sent)
            if attempt == BLOB_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
