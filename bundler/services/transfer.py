"""``bundler export`` and ``bundler import``: a bundle across the air gap.

Export writes the bundle, its signatures and (with ``--base``) only what the far side lacks, as
a layout archive, optionally in volumes. Import checks the signatures and the lock against the
trust policy *before* moving any large blob, refuses content the signature does not cover,
checks that the target already holds what a delta left out, then streams every blob into the
target while checking its digest; names are written last, so a rejected or interrupted import
leaves nothing tagged, and a re-run skips what already arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bundler.adapters.base import Source
from bundler.errors import NotFoundError, UsageError, VerificationError
from bundler.model.bundle import LOCK_MEDIA_TYPE
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.policy import TrustPolicy
from bundler.services import copy as copy_service
from bundler.services.graph import walk
from bundler.services.transports import Location, Transports
from bundler.services.trust import ContentFacts, VerifiedBundle, check_content
from bundler.services.verify import check_signatures, extra_content, open_for_verification


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
    signatures always travel. UsageError for a target that is not an archive (or a memory store).
    """
    if target_location.kind not in ("archive", "memory"):  # memory: a library's own store
        raise UsageError(f"export writes an archive: --to archive:FILE.tar, not {target_location}")
    source = transports.open_source(source_location)
    try:
        omit: set[Digest] = set()
        omitted_bytes = 0
        if base is not None:
            base_source = transports.open_source(base)
            try:
                base_blobs = walk(base_source, base_source.resolve()).blobs
            finally:
                base_source.close()
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
        copied = copy_service.copy(source, target, parallel=parallel, progress=progress, omit=omit)
    finally:
        source.close()
    return ExportResult(copied, str(base) if base else None, omitted_bytes)


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
    source = open_for_verification(transports, source_location)
    try:
        # Steps 1-4 before any large blob moves.
        signed = check_signatures(source, policy)
        content = walk(source, signed.index.descriptor())
        manifests, blobs = content.manifests, content.blobs
        # Step 6: nothing beside the signed content in the archive.
        extra = extra_content(source, signed.index, manifests, set(blobs))
        if extra:
            raise VerificationError(
                6,
                f"content the signature does not cover: {', '.join(extra[:5])}"
                + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""),
            )
        target = transports.open_target(target_location)
        # A delta archive leaves out what the target should already hold: check it all first.
        absent = [d for d in blobs.values() if not _source_has(source, d)]
        missing = [d for d in absent if not target.has_blob(d)]
        if missing:
            listed = ", ".join(str(d.digest) for d in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise NotFoundError(
                f"{source_location} leaves out {len(absent)} blobs and {target.name} lacks "
                f"{len(missing)} of them: {listed}{more}; import the base bundle first"
            )
        # Step 5 happens while streaming: every blob is digest-checked before the target
        # commits it, and names are written only after all of it is in place.
        copied = copy_service.copy(source, target, parallel=parallel, progress=progress)
        facts = ContentFacts(manifests=manifests, blobs_ok=frozenset(blobs), problems={}, extra=())
        verified = check_content(signed, facts)
    finally:
        source.close()
    return ImportResult(verified, copied, [str(d.digest) for d in absent])


def _source_has(source: Source, descriptor: Descriptor) -> bool:
    reader = getattr(source, "reader", None)
    if reader is None:
        return True  # a registry source is asked blob by blob during the copy
    return bool(reader.has_blob(descriptor))
