"""``bundler export`` and ``bundler import``: a bundle across the air gap.

Export writes the bundle, its signatures and (with ``--base``) only what the far side lacks, as
a layout archive, optionally in volumes. Import checks the signatures and the lock against the
trust policy *before* moving any large blob, refuses content the signature does not cover,
checks that the target already holds what a delta left out, then streams every blob into the
target while checking its digest; names are written last, so a rejected or interrupted import
leaves nothing tagged, and a re-run skips what already arrived.

What import writes is what was verified, nothing the medium merely claims: the bundle is named
from its signed lock (``NAME:TAG``, as pack names it) unless the target names it, and a name
contradicting the lock is refused; only signatures that verify under a key of the policy are
copied (from a registry, the others are left behind); a blob the target already holds counts
as present only once its bytes were hashed there (a layout or memory store) or the registry
vouches for it by digest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bundler.adapters.archive import archive_size_bound
from bundler.adapters.base import Source, Target
from bundler.adapters.files import require_free_space
from bundler.adapters.layout import LayoutReader
from bundler.adapters.stream import VerifiedStream
from bundler.errors import IntegrityError, NotFoundError, UsageError
from bundler.model.bundle import (
    ANNOTATION_DELTA_BASE,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
    LOCK_MEDIA_TYPE,
    helm_tag,
)
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan
from bundler.model.policy import TrustPolicy
from bundler.model.signature import SignatureEntry, cosign_signature_tag, signature_manifest
from bundler.services import copy as copy_service
from bundler.services.graph import walk
from bundler.services.overlay import OverlaySource
from bundler.services.signatures import signature_sets
from bundler.services.transports import Location, Transports
from bundler.services.trust import (
    ContentFacts,
    SignedBundle,
    VerifiedBundle,
    check_content,
    check_names,
    signature_trusted,
    signed_name,
)
from bundler.services.verify import (
    bundle_names,
    check_signatures,
    delta_base,
    extra_content,
    open_for_verification,
    read_chart_facts,
    untrusted_signature_content,
)

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What ``export`` wrote: the copy, the ``--base`` of a delta, and the bytes left out."""

    copy: copy_service.CopyResult
    base: str | None = None
    omitted_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``export --output json`` document: the copy's, plus ``base`` and ``omittedBytes``."""
        out = self.copy.to_json()
        out["base"] = self.base
        out["omittedBytes"] = self.omitted_bytes
        return out


def export(
    source_location: Location,
    target_location: Location,
    transports: Transports,
    *,
    base: Location | None = None,
    max_volume_size: int | None = None,
    parallel: int = 4,
    progress: copy_service.Progress | None = None,
) -> ExportResult:
    """Write the bundle ``source_location`` names, with its signatures, to an archive.

    With ``base``, blobs the base also holds are left out, except the lock's; manifests and
    signatures always travel. UsageError for a target that is not an archive (or a memory store);
    TransportError, before anything is written, when the archive's filesystem has too little
    room for it.
    """
    if target_location.kind not in ("archive", "memory"):  # memory: a library's own store
        raise UsageError(f"export writes an archive: --to archive:FILE.tar, not {target_location}")
    with transports.open_source(source_location) as source:
        omit: set[Digest] = set()
        omitted_bytes = 0
        hint: dict[str, str] = {}
        if base is not None:
            with transports.open_source(base) as base_source:
                base_root = base_source.resolve()
                base_blobs = walk(base_source, base_root).blobs
                hint[ANNOTATION_DELTA_BASE] = delta_base_name(base_source.fetch_manifest(base_root))
            content = walk(source, source.resolve())
            manifests, blobs = content.manifests, content.blobs
            # Everything a verifier reads before any large blob always travels: the lock (the
            # manifests and signatures are never left out either), even if the base has it.
            lock_layers = {
                layer.digest
                for m in manifests.values()
                if m.artifact_type == LOCK_MEDIA_TYPE
                for layer in m.layers
            }
            omit = (set(blobs) & set(base_blobs)) - lock_layers
            omitted_bytes = sum(blobs[d].size for d in omit)
        target = transports.open_target(target_location, max_volume_size=max_volume_size)
        copied = copy_service.copy(
            source,
            target,
            parallel=parallel,
            progress=progress,
            omit=omit,
            root_annotations=hint if omit else None,
            before_write=_room_check(target_location),
        )
    return ExportResult(copied, str(base) if base else None, omitted_bytes)


def _room_check(target: Location) -> Callable[[TransferPlan], None] | None:
    """For an archive: a check that its directory has room for what the plan writes."""
    if target.kind != "archive" or target.path is None:
        return None
    directory, name = target.path.absolute().parent, target.path.name

    def check(plan: TransferPlan) -> None:
        needed = archive_size_bound(plan)
        free = require_free_space(directory, needed, f"the archive {name}")
        log.info("%s: up to %d bytes to write, %d bytes free", directory, needed, free)

    return check


def delta_base_name(base: Manifest) -> str:
    """How a delta names its base: ``NAME:VERSION@DIGEST`` of a bundle, else the digest."""
    title = base.annotations.get(ANNOTATION_TITLE)
    version = base.annotations.get(ANNOTATION_VERSION)
    if title and version:
        return f"{title}:{helm_tag(version)}@{base.digest}"
    return str(base.digest)


@dataclass
class ImportResult:
    """What ``import`` did: the verified bundle, the copy, and blobs a delta left to the target."""

    verified: VerifiedBundle
    copy: copy_service.CopyResult
    from_target: list[str] = field(default_factory=list)  # blobs a delta left to the target

    def to_json(self) -> dict[str, Any]:
        """The ``import --output json`` document: the copy's, plus the bundle and its signers."""
        out = self.copy.to_json()
        out["verified"] = {
            "name": self.verified.name,
            "version": self.verified.version,
            "signers": [{"key": s.key_name, "role": s.role} for s in self.verified.signers],
        }
        out["alreadyAtTarget"] = len(self.from_target)
        return out


def import_bundle(
    source_location: Location,
    target_location: Location,
    transports: Transports,
    policy: TrustPolicy,
    *,
    parallel: int = 4,
    progress: copy_service.Progress | None = None,
) -> ImportResult:
    """Verify a bundle under ``policy`` while copying it into ``target_location``.

    Steps 1 to 4 and 6 pass before any large blob moves; step 5 is the digest check while streaming.
    VerificationError with the failing step; nothing is tagged unless all pass.
    """
    with open_for_verification(transports, source_location) as source:
        # Steps 1-4 before any large blob moves.
        signed = check_signatures(source, policy)
        content = walk(source, signed.index.descriptor())
        manifests, blobs = content.manifests, content.blobs
        # Step 6: nothing beside the signed content in the archive, every signature layer in
        # it verifies, and no name (the source's, or the one the target will get) contradicts
        # the signed lock.
        extra = extra_content(source, signed.index, manifests, set(blobs))
        extra += untrusted_signature_content(source, manifests, policy)[0]  # the rest stays
        check_names(signed, bundle_names(source, signed.index), extra)
        target = transports.open_target(target_location)
        name = target.root_tag(signed_name(signed.lock))  # the target's own name, else the lock's
        check_names(signed, [name] if name else [])
        trusted = trusted_copy_source(source, signed, manifests, policy)
        checked = CheckedTarget(target)
        # A delta archive leaves out what the target should already hold: check it all first.
        # A registry source is asked blob by blob during the copy; a store judged whole says.
        inventory = source.inventory()
        absent = (
            [d for d in blobs.values() if not inventory.files.has_blob(d)]
            if inventory is not None
            else []
        )
        missing = [d for d in absent if not checked.has_blob(d)]
        if missing:
            named = delta_base(source, signed.index)
            base_name = f" {named}" if named else ""
            listed = ", ".join(str(d.digest) for d in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise NotFoundError(
                f"{source_location} leaves out {len(absent)} blobs and {target.name} lacks "
                f"{len(missing)} of them (or holds other bytes under their digests): "
                f"{listed}{more}; import the base bundle{base_name} first"
            )
        # Step 5 for the chart: its Chart.yaml names what the lock names (small: read first,
        # from the target when a delta left it there, checked above).
        archive = signed.lock.chart.archive
        chart = read_chart_facts(
            source, signed, checked if any(d.digest == archive for d in absent) else None
        )
        # Step 5 happens while streaming: every blob is digest-checked before the target
        # commits it; the kernel judges the evidence (blobs streamed or hashed at the target)
        # just before the names are written, so a refusal leaves nothing named.
        verdict: list[VerifiedBundle] = []

        def judge() -> None:
            facts = ContentFacts(manifests, frozenset(checked.verified), {}, (), chart, ())
            verdict.append(check_content(signed, facts))

        checked.before_commit = judge
        copied = copy_service.copy(trusted, checked, parallel=parallel, progress=progress)
    return ImportResult(verdict[0], copied, [str(d.digest) for d in absent])


def trusted_copy_source(
    source: Source, signed: SignedBundle, manifests: dict[Digest, Manifest], policy: TrustPolicy
) -> OverlaySource:
    """What import copies: the bundle named from its lock, with only trusted signatures.

    Every signature manifest of a manifest under the bundle is kept as it is when each of its
    layers verifies under a key of ``policy`` for that manifest; one with some such layers is
    rewritten to hold only them; one with none is left behind, as is every other tag and
    referrer (attestations, SBOMs, junk) the source offers.
    """
    overlay = OverlaySource(
        source,
        root=signed.index.descriptor(),
        ref_name=signed_name(signed.lock),
        inherit_names=False,
    )
    for digest, manifest in manifests.items():
        for found in signature_sets(source, digest):
            if found.manifest is None:
                continue
            good = [
                (layer, fact)
                for layer, fact in zip(found.layers, found.facts, strict=True)
                if signature_trusted(digest, fact, policy)
            ]
            if not good:
                continue
            kept, blobs = found.manifest, {}
            if len(good) != len(found.layers):
                entries = [SignatureEntry.from_layer(layer, fact.payload) for layer, fact in good]
                subject = manifest.descriptor() if found.manifest.subject is not None else None
                kept, config = signature_manifest(entries, subject)
                blobs = {e.descriptor().digest: e.payload for e in entries}
                if kept.config is not None:
                    blobs[kept.config.digest] = config
            if found.where == cosign_signature_tag(digest):
                overlay.add(kept, blobs, found.where)
            else:
                overlay.add_referrer(digest, kept, blobs)
    return overlay


class CheckedTarget:
    """A target that counts as present only blobs whose bytes were checked.

    In a layout or a memory store (files anyone with write access may have altered), a blob
    the target already holds is hashed there before it counts; one that does not hash to its
    digest is written again from the source. A registry computes digests itself and is asked
    by digest. ``verified`` is the evidence step 5 gets: blobs streamed in through a
    VerifiedStream, or checked at the target. ``before_commit`` runs before any name is
    written.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name
        self.parallel_blobs = target.parallel_blobs
        self.requires_name = target.requires_name
        self.verified: set[Digest] = set()
        self.before_commit: Callable[[], None] | None = None
        self._known: dict[Digest, bool] = {}
        self._lock = threading.Lock()
        self._reader = target.layout()  # plain files: hashed before a blob counts
        self.write_lock = target.write_lock

    def _mark(self, digest: Digest, present: bool) -> bool:
        with self._lock:
            self._known[digest] = present
            if present:
                self.verified.add(digest)
        return present

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Target.has_blob, hashing the blob at a layout or memory target before it counts."""
        with self._lock:
            known = self._known.get(descriptor.digest)
        if known is not None:
            return known
        present = self.target.has_blob(descriptor)
        if present and self._reader is not None:
            try:
                stream = VerifiedStream(
                    self._reader.open_blob(descriptor), descriptor, self.target.name
                )
                stream.drain()
            except (IntegrityError, NotFoundError):
                present = False  # other bytes under its digest: written again, if the source has it
        return self._mark(descriptor.digest, present)

    def mount_blob(self, descriptor: Descriptor, source: Source) -> bool:
        """Target.mount_blob (a registry links it by digest)."""
        mounted = self.target.mount_blob(descriptor, source)
        return self._mark(descriptor.digest, True) if mounted else False

    def put_blob(self, stream: VerifiedStream) -> None:
        """Target.put_blob; the blob counts once its verified stream was written to the end."""
        self.target.put_blob(stream)
        self._mark(stream.descriptor.digest, True)

    def put_manifest(self, manifest: Manifest) -> None:
        """Target.put_manifest; in a layout or memory store, over a copy with other bytes."""
        if self._reader is None:
            self.target.put_manifest(manifest)
        elif not self.has_blob(manifest.descriptor()):
            self.put_blob(VerifiedStream([manifest.raw], manifest.descriptor(), "import"))

    def begin(self, plan: TransferPlan) -> None:
        """Target.begin."""
        self.target.begin(plan)

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Target.tag."""
        self.target.tag(tag, manifest)

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Target.add_referrer."""
        self.target.add_referrer(subject, referrer)

    def commit(self) -> None:
        """Target.commit, after ``before_commit`` (the kernel's step 5 and 6 verdict)."""
        if self.before_commit is not None:
            self.before_commit()
        self.target.commit()

    def abort(self, error: BaseException | None = None) -> None:
        """Target.abort."""
        self.target.abort(error)

    def root_tag(self, source_ref: str | None) -> str | None:
        """Target.root_tag."""
        return self.target.root_tag(source_ref)

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw chunks of a blob the target holds (the caller verifies them)."""
        return self.target.open_blob(descriptor)

    def layout(self) -> LayoutReader | None:
        """Target.layout."""
        return self._reader

    def remove_blob(self, digest: Digest) -> None:
        """Target.remove_blob."""
        self.target.remove_blob(digest)
