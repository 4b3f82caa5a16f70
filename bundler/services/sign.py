"""``bundler sign`` and ``bundler approve``: add a cosign simple-signing signature.

The signature goes where cosign and skopeo look for it: one more layer in the manifest under
the ``sha256-<hex>.sig`` tag of each signed digest (earlier signers' layers are kept), in the
registry repository, or in the layout or archive beside the bundle, so it travels with it.
By default every manifest the bundle pins is signed too, as ``cosign sign --recursive`` does,
because skopeo and podman check each image they copy out of an index, not the index.
An archive is added to in place: the signatures and a new ``index.json`` are appended to it
(``ArchiveAppender``), so signing costs what the signatures weigh, not what the bundle does.
"""

from __future__ import annotations

import base64
import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from bundler.adapters.base import Source, Target
from bundler.adapters.crypto import SigningKey
from bundler.adapters.layout import LayoutReader, LayoutSource, blob_relpath
from bundler.errors import BundlerError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.signature import (
    SignatureEntry,
    cosign_signature_tag,
    decode_signature,
    signature_entries,
    signature_manifest,
    simple_signing_payload,
)
from bundler.services import copy as copy_service
from bundler.services.graph import walk
from bundler.services.overlay import OverlaySource
from bundler.services.signatures import read_entry, signature_manifests
from bundler.services.transports import Location, Transports
from bundler.services.trust import check_unchanged


@dataclass
class SignResult:
    """What ``sign`` did: the signed digest, key and identity, manifests signed, tags written."""

    digest: Digest
    target: str
    key_id: str
    identity: str
    signed: list[Digest] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    already_signed: list[Digest] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The ``sign --output json`` document (camelCase keys, digests as strings)."""
        return {
            "digest": str(self.digest),
            "target": self.target,
            "keyId": self.key_id,
            "identity": self.identity,
            "signed": [str(d) for d in self.signed],
            "tags": self.tags,
            "alreadySigned": [str(d) for d in self.already_signed],
        }


def default_identity(location: Location, source: Source, index: Manifest) -> str:
    """The repository a signature names: the registry repository, else the bundle's name."""
    if location.reference is not None:
        return location.reference.name
    title = index.annotations.get("org.opencontainers.image.title")
    return title or source.ref_name() or str(index.digest)


def _subjects(source: Source, index: Manifest, recursive: bool) -> list[Manifest]:
    """The index, then (recursive) every manifest it pins."""
    if not recursive:
        return [index]
    return list(walk(source, index.descriptor()).manifests.values())  # the index comes first


def sign(
    location: Location,
    key: SigningKey,
    transports: Transports,
    *,
    recursive: bool = True,
    identity: str | None = None,
    annotations: dict[str, str] | None = None,
    expected: Digest | None = None,
) -> SignResult:
    """Sign what ``location`` names.

    With ``expected``, sign only if it still resolves to that digest: an approval signs exactly
    the bundle that was verified, even if a tag moved since. A subject that already carries a
    good signature by ``key`` over the same payload is not signed again (re-signing changes
    nothing; ``already_signed`` lists them). In a layout or an archive, the existing signatures
    are read and the new manifests written under the destination's exclusive lock, so two
    signers at once never lose one another's signature.
    """
    # An archive is added to in place (a split archive is refused before anything is read).
    target = transports.open_target(_as_target(location), append=True)
    transports.open_source(location).close()  # a missing source fails here, creating nothing
    # The source is read under the lock: no lost update.
    with _write_lock(target), transports.open_source(location) as source:
        return _sign_locked(
            location,
            source,
            target,
            key,
            transports,
            recursive,
            identity,
            annotations,
            expected,
        )


def _write_lock(target: Target) -> AbstractContextManager[object]:
    """The destination's exclusive writer lock where it has one (layouts, archives)."""
    return target.write_lock or contextlib.nullcontext()


def _sign_locked(
    location: Location,
    source: Source,
    target: Target,
    key: SigningKey,
    transports: Transports,
    recursive: bool,
    identity: str | None,
    annotations: dict[str, str] | None,
    expected: Digest | None,
) -> SignResult:
    index = source.fetch_manifest(source.resolve())
    if expected is not None:
        check_unchanged(str(location), index.digest, expected)
    claim = identity or default_identity(location, source, index)
    overlay = OverlaySource(source)
    result = SignResult(index.digest, target.name, key.public.key_id, claim)
    as_referrer = _registry_has_referrers_api(location, transports, index)
    superseded: list[tuple[Manifest, list[SignatureEntry]]] = []
    for subject in _subjects(source, index, recursive):
        payload = simple_signing_payload(subject.digest, claim)
        existing, entries = _existing_signatures(source, subject.digest)
        if _signed_by(entries, payload, key):
            result.already_signed.append(subject.digest)  # kept as it is
            continue
        if existing is not None:
            superseded.append((existing, entries))
        entry = SignatureEntry(
            payload, base64.b64encode(key.sign(payload)).decode(), dict(annotations or {})
        )
        manifest, config = signature_manifest([*entries, entry])
        blobs = {manifest.config.digest: config} if manifest.config else {}
        blobs.update({e.descriptor().digest: e.payload for e in [*entries, entry]})
        tag = cosign_signature_tag(subject.digest)
        overlay.add(manifest, blobs, tag)
        if as_referrer:
            # The same signatures, also as an OCI 1.1 referrer where the registry has the
            # API (cosign's OCI 1.1 mode); verifiers read both and count each key once.
            referrer, _ = signature_manifest([*entries, entry], subject.descriptor())
            overlay.add_referrer(subject.digest, referrer, blobs)
        result.signed.append(subject.digest)
        result.tags.append(tag)
    if not result.signed:
        return result  # every subject already carries this key's signature: nothing to write
    reader = target.layout()
    before = set(reader.blob_names()) if reader is not None else set()
    try:
        copied = copy_service.copy(overlay, target)
    except BaseException:
        if reader is not None:
            _remove_unreferenced(target, reader, overlay.written_blobs(), before)
        raise
    result.target = copied.target
    if reader is not None:
        _drop_superseded(target, reader, superseded)
    return result


def _existing_signatures(
    source: Source, subject: Digest
) -> tuple[Manifest | None, list[SignatureEntry]]:
    """The signature manifest under ``subject``'s cosign tag (else a referrer), with its entries."""
    for _, existing in signature_manifests(source, subject)[:1]:
        return existing, [read_entry(source, layer) for layer in signature_entries(existing)]
    return None, []


def _signed_by(entries: list[SignatureEntry], payload: bytes, key: SigningKey) -> bool:
    """Whether one of ``entries`` is a good signature by ``key`` over exactly ``payload``."""
    for entry in entries:
        if entry.payload != payload:
            continue
        try:
            signature = decode_signature(entry.signature_b64)
        except ValueError:
            continue
        if key.public.verify(payload, signature):
            return True
    return False


def _reachable(reader: LayoutReader) -> set[Digest] | None:
    """Every blob some name or referrer entry of the layout reaches; None if unsure.

    Unsure (a missing or unreadable manifest) means nothing may be deleted.
    """
    try:
        source = LayoutSource(reader, None)
        reached: set[Digest] = set()
        for entry in source.entries:
            reached.add(entry.digest)
            if entry.media_type not in mt.MANIFESTS:
                continue
            graph = walk(source, entry)
            reached |= graph.digests()
            reached.update(m.subject.digest for m in graph.manifests.values() if m.subject)
    except BundlerError:
        return None
    return reached


def _remove_unreferenced(
    target: Target, reader: LayoutReader, candidates: set[Digest], before: set[str]
) -> None:
    """After a failed or interrupted sign: remove the blobs it wrote that nothing names.

    Only blobs that were not in the layout before this sign began are candidates, so nothing
    another writer put there is touched; a layout left so has nothing step 6 would count.
    """
    new = {d for d in candidates if blob_relpath(d) not in before}
    new = {d for d in new if blob_relpath(d) in set(reader.blob_names())}
    if not new:
        return
    reached = _reachable(reader)
    if reached is None:
        return
    for digest in new - reached:
        target.remove_blob(digest)


def _drop_superseded(
    target: Target, reader: LayoutReader, old: list[tuple[Manifest, list[SignatureEntry]]]
) -> None:
    """In a layout, the signature manifests just replaced are garbage: remove them.

    A blob is removed only if no name or referrer of the layout reaches it any more. A config
    goes only with a manifest bundler itself would have written for those signatures, so a
    tampered signature manifest cannot have bundler delete what its ``config`` points at.
    Payload layers are reused by the new manifests and stay.
    """
    if not old:
        return
    reached = _reachable(reader)
    if reached is None:
        return
    for manifest, entries in old:
        candidates = [manifest.digest]
        if manifest.config is not None and _bundler_wrote(manifest, entries):
            candidates.append(manifest.config.digest)
        for digest in candidates:
            if digest not in reached:
                target.remove_blob(digest)


def _bundler_wrote(manifest: Manifest, entries: list[SignatureEntry]) -> bool:
    """Whether ``manifest`` is byte for byte the signature manifest bundler makes of ``entries``."""
    try:
        again, _ = signature_manifest(entries)
    except BundlerError:
        return False
    return again.digest == manifest.digest


def _registry_has_referrers_api(
    location: Location, transports: Transports, index: Manifest
) -> bool:
    if location.reference is None:
        return False
    return transports.has_referrers_api(location.reference, index.descriptor())


def _as_target(location: Location) -> Location:
    """Write back where the artifact is: a registry tag (never a digest), a layout, an archive."""
    from dataclasses import replace

    if location.reference is not None and location.reference.digest is not None:
        return replace(location, reference=location.reference.with_digest(None))
    return location
