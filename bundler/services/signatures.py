"""Finding cosign signatures beside an artifact: the ``sha256-<hex>.sig`` tag and referrers."""

from __future__ import annotations

from dataclasses import dataclass

from bundler.adapters.base import Source
from bundler.adapters.layout import parse_index
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import IntegrityError, ManifestError, NotFoundError
from bundler.model import mediatypes as mt
from bundler.model.certified import (
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    REKOR_BUNDLE_ANNOTATION,
)
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.signature import (
    COSIGN_SIGNATURE_ARTIFACT_TYPE,
    MAX_SIGNATURES,
    SIGNATURE_ANNOTATION,
    SignatureEntry,
    cosign_signature_tag,
    signature_entries,
    signature_manifest,
)
from bundler.services.trust import SignatureFact

MAX_PAYLOAD_BYTES = 64 * 1024


def signature_manifests(source: Source, subject: Digest) -> list[tuple[str, Manifest]]:
    """Signature manifests for ``subject``: under cosign's tag, then OCI referrers."""
    found: list[tuple[str, Manifest]] = []
    tag = cosign_signature_tag(subject)
    descriptor = source.find_tag(tag)
    if descriptor is not None:
        found.append((tag, source.fetch_manifest(descriptor)))
    for referrer in source.referrers(subject):
        if referrer.artifact_type not in (COSIGN_SIGNATURE_ARTIFACT_TYPE, None):
            continue
        manifest = _signature_referrer(source, referrer)
        if manifest is not None and all(m.digest != manifest.digest for _, m in found):
            found.append((f"referrer {referrer.digest.short()}", manifest))
    return found


def _signature_referrer(source: Source, referrer: Descriptor) -> Manifest | None:
    """A referrer that is a signature manifest, else None (an index or other artifact is not)."""
    try:
        manifest = source.fetch_manifest(referrer)
        return manifest if not manifest.is_index and signature_entries(manifest) else None
    except (ManifestError, IntegrityError):
        return None  # not a signature: a layout reports it as content nothing covers


@dataclass(frozen=True)
class SignatureSet:
    """One signature manifest found for a subject: where, the manifest, and its layers' facts.

    ``manifest`` is None when it could not be read as a signature manifest; ``facts`` then holds
    one fact saying why. Otherwise ``layers`` are the manifest's layers and ``facts`` one fact
    per layer, in order (a layer that could not be read carries its ``problem``).
    """

    where: str
    manifest: Manifest | None
    layers: tuple[Descriptor, ...]
    facts: tuple[SignatureFact, ...]


def _problem(where: str, problem: str) -> SignatureFact:
    return SignatureFact("", b"", "", where, problem)


def _layer_fact(source: Source, layer: Descriptor, origin: str) -> SignatureFact:
    try:
        entry = read_entry(source, layer)
    except NotFoundError:
        return _problem(origin, "its payload is missing")
    except (ManifestError, IntegrityError) as exc:
        return _problem(origin, str(exc))
    return SignatureFact(
        layer.media_type,
        entry.payload,
        entry.signature_b64,
        origin,
        certificate=entry.annotations.get(CERTIFICATE_ANNOTATION),
        chain=entry.annotations.get(CHAIN_ANNOTATION),
        rekor_bundle=entry.annotations.get(REKOR_BUNDLE_ANNOTATION),
    )


def _tagged_set(source: Source, subject: Digest) -> SignatureSet | None:
    tag = cosign_signature_tag(subject)
    descriptor = source.find_tag(tag)
    if descriptor is None:
        return None
    try:
        manifest = source.fetch_manifest(descriptor)
    except NotFoundError:
        return SignatureSet(tag, None, (), (_problem(tag, "its manifest is missing"),))
    except (ManifestError, IntegrityError) as exc:
        return SignatureSet(tag, None, (), (_problem(tag, str(exc)),))
    return _set_of(source, tag, manifest)


def signature_sets(source: Source, subject: Digest) -> list[SignatureSet]:
    """Every signature manifest stored for ``subject``, each layer's payload read (bounded).

    Nothing here raises for hostile content: an index under the ``.sig`` tag, an unreadable
    manifest, an oversized or missing layer become facts with a ``problem``, so the verifier
    reports them and decides on the valid signatures beside them.
    """
    tagged = _tagged_set(source, subject)
    sets = [tagged] if tagged is not None else []
    for referrer in source.referrers(subject):
        if referrer.artifact_type not in (COSIGN_SIGNATURE_ARTIFACT_TYPE, None):
            continue
        found = _signature_referrer(source, referrer)
        if found is not None and all(
            s.manifest is None or s.manifest.digest != found.digest for s in sets
        ):
            sets.append(_set_of(source, f"referrer {referrer.digest.short()}", found))
    return sets


def _set_of(source: Source, where: str, manifest: Manifest) -> SignatureSet:
    if manifest.is_index:
        problem = f"{manifest.digest} is an index, not a signature manifest"
        return SignatureSet(where, None, (), (_problem(where, problem),))
    if len(manifest.layers) > MAX_SIGNATURES:
        problem = f"{len(manifest.layers)} layers, more than {MAX_SIGNATURES} signatures"
        return SignatureSet(where, None, (), (_problem(where, problem),))
    facts = tuple(
        _layer_fact(source, layer, f"{where} layer {number}")
        for number, layer in enumerate(manifest.layers, start=1)
    )
    return SignatureSet(where, manifest, manifest.layers, facts)


def read_entry(source: Source, layer: Descriptor) -> SignatureEntry:
    """One signature layer with its payload bytes (bounded, digest-checked)."""
    if layer.size > MAX_PAYLOAD_BYTES:
        raise ManifestError(f"signature payload {layer.digest} is {layer.size} bytes")
    payload = read_exact(VerifiedStream(source.open_blob(layer), layer, source.name), layer.size)
    annotations = dict(layer.annotations)
    signature = annotations.pop(SIGNATURE_ANNOTATION, "")
    return SignatureEntry(payload, signature, annotations)


def signature_facts(source: Source, subject: Digest) -> list[SignatureFact]:
    """Every signature layer stored for ``subject`` (cosign tag and referrers), payloads read.

    Layers that cannot be read (missing, oversized, altered) and manifests that are not
    signature manifests come back as facts with a ``problem``; nothing is verified here.
    """
    return [fact for found in signature_sets(source, subject) for fact in found.facts]


def superseded_signatures(source: Source, current: dict[str, Manifest]) -> set[Digest]:
    """In an archive signed by appending: the signature manifests a later signature replaced.

    ``current`` maps each cosign ``.sig`` tag of the bundle to the signature manifest it names
    now. A manifest an earlier copy of ``index.json`` named under one of those tags is returned
    (with its config) only if it is byte for byte the signature manifest bundler makes of its
    layers, and every one of its layers (payload and signature) is a layer of the manifest the
    tag names now: it then holds nothing the current signatures do not show. Anything else an
    earlier index named is not returned, so its blobs stay content nothing covers (step 6).
    Other sources have no earlier indexes: the empty set.
    """
    inventory = source.inventory()
    if inventory is None or not current:
        return set()
    found: set[Digest] = set()
    for raw in inventory.files.superseded_indexes():
        try:
            entries = parse_index(raw, inventory.files.name)
        except ManifestError:
            continue  # names nothing, so it accounts for nothing
        for entry in entries:
            now = current.get(entry.annotations.get(mt.ANNOTATION_REF_NAME, ""))
            if now is None or entry.digest == now.digest or entry.digest in found:
                continue
            old = _replaced_signature(source, entry, now)
            if old is not None:
                found.add(old.digest)
                found.update(d.digest for d in ([old.config] if old.config else []))
    return found


def _replaced_signature(source: Source, entry: Descriptor, now: Manifest) -> Manifest | None:
    """The manifest ``entry`` names, if it is bundler's signature manifest of layers ``now`` has."""
    try:
        old = source.fetch_manifest(entry)
        kept = [layer.to_json() for layer in now.layers]
        if old.is_index or not old.layers or len(old.layers) > MAX_SIGNATURES:
            return None
        if any(layer.to_json() not in kept for layer in old.layers):
            return None
        again, _ = signature_manifest([read_entry(source, layer) for layer in old.layers])
    except (NotFoundError, IntegrityError):
        return None
    return old if again.digest == old.digest else None
