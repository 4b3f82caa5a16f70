"""``bundler verify``: gather what the verification kernel needs, in the order it decides.

Signatures are checked before any large blob is read (steps 1 to 4 need only the index, the lock
and the signature payloads); then every manifest and blob is streamed once, in parallel, each
checked against its size and digest (step 5); for a layout or an archive, what else it holds is
listed (step 6). The decisions are all in ``bundler.services.trust``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from bundler.adapters.base import Source
from bundler.adapters.chart import MAX_ARCHIVE_BYTES, load_chart_archive
from bundler.adapters.layout import blob_relpath
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import (
    ChartError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    ReferenceFormatError,
    VerificationError,
)
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_DELTA_BASE,
    ANNOTATION_IMAGE_REF,
    BUNDLE_ARTIFACT_TYPE,
    MAX_LOCK_BYTES,
    BundleView,
)
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan
from bundler.model.policy import TrustPolicy
from bundler.model.reference import Reference
from bundler.model.signature import SIMPLE_SIGNING_MEDIA_TYPE
from bundler.services.copy import COSIGN_SUFFIXES, Progress
from bundler.services.signatures import (
    MAX_PAYLOAD_BYTES,
    signature_facts,
    signature_manifests,
    superseded_signatures,
)
from bundler.services.transports import Location, Transports
from bundler.services.trust import (
    BLOB_MISSING,
    STEPS,
    ChartFacts,
    ContentFacts,
    SignatureFact,
    SignedBundle,
    VerifiedBundle,
    VerifiedImage,
    check_content,
    check_image_content,
    check_signed,
    check_signed_image,
    refuse_unsafe,
    untrusted_signatures,
)


@dataclass
class VerifyReport:
    """The outcome of ``verify``: each step's status and detail, and the bundle if all passed."""

    source: str
    digest: Digest | None = None
    steps: dict[int, tuple[str, str]] = field(default_factory=dict)  # number -> (status, detail)
    bundle: VerifiedBundle | None = None
    error: VerificationError | None = None
    kind: str = "bundle"  # or "image": a plain image or index that sign signed
    image: VerifiedImage | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``verify --output json`` document: source, digest, steps, bundle or error."""
        bundle = self.bundle
        image = self.image
        return {
            "source": self.source,
            "kind": self.kind,
            "digest": str(self.digest) if self.digest else None,
            "verified": bundle is not None or image is not None,
            "bundle": None
            if bundle is None
            else {
                "name": bundle.name,
                "version": bundle.version,
                "rule": bundle.rule,
                "signers": [
                    {"key": s.key_name, "role": s.role, "keyId": s.key_id, "identity": s.identity}
                    for s in bundle.signers
                ],
                "images": [
                    {"reference": i.reference, "digest": str(i.digest)} for i in bundle.lock.images
                ],
            },
            "image": None
            if image is None
            else {
                "name": image.name,
                "rule": image.rule,
                "signers": [
                    {"key": s.key_name, "role": s.role, "keyId": s.key_id, "identity": s.identity}
                    for s in image.signers
                ],
            },
            "steps": [
                {
                    "step": n,
                    "check": STEPS[n],
                    "status": self.steps.get(n, ("not run", ""))[0],
                    "detail": self.steps.get(n, ("", ""))[1],
                }
                for n in sorted(STEPS)
            ],
            "error": str(self.error) if self.error else None,
        }


def open_for_verification(transports: Transports, location: Location) -> Source:
    """Open what is to be verified.

    Content too hostile to open safely (an unsafe archive, a malformed index) is a verification
    failure at step 1, not a lesser error.
    """
    try:
        return transports.open_source(location)
    except VerificationError:
        raise
    except IntegrityError as exc:
        refuse_unsafe(str(location), str(exc))


def verify(
    source: Source,
    policy: TrustPolicy,
    *,
    parallel: int = 4,
    bundles_only: bool = False,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run all six steps; a failed step is recorded in the report, not raised.

    ``progress`` is told of the blobs step 5 reads and of every byte it checks.

    What does not claim to be a bundle (a plain image or index ``sign`` signed) is verified as
    ``cosign verify`` does: its signatures, the policy's rule for its name, and every manifest
    and blob under it (steps 2, 4 and 5; the bundle-only steps do not apply), unless
    ``bundles_only`` (approval and promotion accept only a bundle: step 1 refuses it).
    """
    report = VerifyReport(source.name)
    shown = progress or Progress()
    try:
        root = source.fetch_manifest(source.resolve())
        if bundles_only or root.artifact_type == BUNDLE_ARTIFACT_TYPE:
            report.bundle = _verify(source, root, policy, parallel, report, shown)
        else:
            report.kind = "image"
            report.image = _verify_image(source, root, policy, parallel, report, shown)
    except VerificationError as error:
        report.error = error
        report.steps[error.step] = ("failed", str(error))
    return report


NOT_APPLICABLE = "not applicable"


def _verify_image(
    source: Source,
    manifest: Manifest,
    policy: TrustPolicy,
    parallel: int,
    report: VerifyReport,
    progress: Progress,
) -> VerifiedImage:
    report.digest = manifest.digest
    kind = "index" if manifest.is_index else "image"
    report.steps[1] = (NOT_APPLICABLE, f"{manifest.digest} is an {kind}, not a bundle")
    try:
        signed = check_signed_image(
            manifest, image_name(source), signature_facts(source, manifest.digest), policy
        )
    except VerificationError as error:
        _kernel_ran(report, 2, error)
        raise
    report.steps[2] = ("passed", "")
    report.steps[3] = (NOT_APPLICABLE, f"an {kind} has no lock")
    report.steps[4] = ("passed", "")
    manifests, ok, problems, _ = _stream_content(source, manifest, parallel, progress)
    verified = check_image_content(signed, ContentFacts(manifests, frozenset(ok), problems))
    report.steps[5] = ("passed", "")
    report.steps[6] = (NOT_APPLICABLE, "only a bundle is judged with all its store holds")
    return verified


def image_name(source: Source) -> str:
    """The name a policy rule matches for a plain image: its repository's last component."""
    text = source.ref_name() or source.name
    try:
        reference = Reference.parse(text, default_tag=False)
    except ReferenceFormatError:
        return ""
    return reference.repository.rsplit("/", 1)[-1]


def _kernel_ran(report: VerifyReport | None, first: int, error: VerificationError) -> None:
    """A kernel call that started at step ``first`` failed: it ran and passed the steps between."""
    if report is not None:
        for step in range(first, error.step):
            report.steps.setdefault(step, ("passed", ""))


def _verify(
    source: Source,
    index: Manifest,
    policy: TrustPolicy,
    parallel: int,
    report: VerifyReport,
    progress: Progress,
) -> VerifiedBundle:
    signed = check_signatures(source, policy, report, index=index)
    for step in (1, 2, 3, 4):
        report.steps[step] = ("passed", "")
    facts = _content(source, signed, policy, parallel, progress)
    try:
        verified = check_content(signed, facts)
    except VerificationError as error:
        _kernel_ran(report, 5, error)
        raise
    report.steps[5] = ("passed", "")
    ignored = (
        f"not part of the bundle (by keys the policy does not list): {', '.join(facts.foreign)}"
        if facts.foreign
        else ""
    )
    report.steps[6] = ("passed", ignored)
    return verified


def check_signatures(
    source: Source,
    policy: TrustPolicy,
    report: VerifyReport | None = None,
    *,
    index: Manifest | None = None,
) -> SignedBundle:
    """Steps 1 to 4, reading only the index, the lock and the signature payloads.

    What cannot be read is handed to the kernel as a problem of its step, so the steps still
    run in order: an unsigned bundle whose lock is gone fails step 2, not step 3. ``report``
    records the steps the kernel ran and passed, and nothing it did not run.
    """
    if index is None:
        index = source.fetch_manifest(source.resolve())
    if report is not None:
        report.digest = index.digest
    lock_manifest, lock_raw, problem = _read_lock(source, index)
    try:
        return check_signed(
            index,
            lock_manifest,
            lock_raw,
            signature_facts(source, index.digest),
            policy,
            lock_problem=problem,
            image_signatures=_image_signatures(source, index, policy),
        )
    except VerificationError as error:
        _kernel_ran(report, 1, error)
        raise


def _image_signatures(
    source: Source, index: Manifest, policy: TrustPolicy
) -> dict[Digest, list[SignatureFact]] | None:
    """The signatures each pinned image carries, where some rule of ``policy`` asks for them."""
    if not any(rule.images for rule in policy.rules):
        return None
    try:
        view = BundleView.of(index)
    except ManifestError:
        return None  # not a bundle: step 1 refuses it
    return {d.digest: signature_facts(source, d.digest) for d in view.images}


def _read_lock(source: Source, index: Manifest) -> tuple[Manifest | None, bytes | None, str | None]:
    """The lock manifest and bytes the index pins, or why they cannot be read (for step 3).

    An index that is not a bundle pins no lock: the kernel refuses it at step 1.
    """
    try:
        view = BundleView.of(index)
    except ManifestError:
        return None, None, None
    try:
        lock_manifest = source.fetch_manifest(view.lock)
        layer = next(x for x in lock_manifest.layers)
        if layer.size > MAX_LOCK_BYTES:
            return None, None, f"lock document {layer.digest} is {layer.size} bytes"
        lock_raw = read_exact(
            VerifiedStream(source.open_blob(layer), layer, source.name), layer.size
        )
    except (NotFoundError, IntegrityError, StopIteration) as exc:
        if isinstance(exc, VerificationError):
            raise
        return None, None, f"cannot read the lock: {exc}"
    return lock_manifest, lock_raw, None


def _content(
    source: Source, signed: SignedBundle, policy: TrustPolicy, parallel: int, progress: Progress
) -> ContentFacts:
    index = signed.index
    manifests, ok, problems, blobs = _stream_content(source, index, parallel, progress)
    extra = extra_content(source, index, manifests, blobs)
    junk, foreign = untrusted_signature_content(source, manifests, policy)
    chart = read_chart_facts(source, signed) if not problems else None
    names = bundle_names(source, index)
    return ContentFacts(
        manifests,
        frozenset(ok),
        problems,
        (*extra, *junk),
        chart,
        names,
        tuple(foreign),
        delta_base(source, index),
    )


# Complexity kept: step 5 over every manifest and blob: one branch per way content can be bad.
def _stream_content(  # noqa: C901
    source: Source, index: Manifest, parallel: int, progress: Progress
) -> tuple[dict[Digest, Manifest], set[Digest], dict[Digest, str], set[Digest]]:
    """Every manifest fetched and every blob streamed under ``index``, once each, in parallel.

    Returns the manifests, the blobs whose size and digest checked out, what was missing or
    altered (by digest), and every blob digest under ``index``.
    """
    manifests: dict[Digest, Manifest] = {index.digest: index}
    problems: dict[Digest, str] = {}
    blobs: dict[Digest, Descriptor] = {}
    stack = [index]
    while stack:
        manifest = stack.pop()
        for child in manifest.manifests:
            if child.media_type not in mt.MANIFESTS:
                blobs.setdefault(child.digest, child)
                continue
            if child.digest in manifests or child.digest in problems:
                continue
            try:
                found = source.fetch_manifest(child)
            except NotFoundError:
                problems[child.digest] = "manifest is missing"
                continue
            except IntegrityError as exc:
                problems[child.digest] = str(exc)
                continue
            manifests[child.digest] = found
            stack.append(found)
        for blob in manifest.blobs():
            blobs.setdefault(blob.digest, blob)
    ok: set[Digest] = set()
    lock = threading.Lock()

    def check(descriptor: Descriptor) -> None:
        try:
            VerifiedStream(
                source.open_blob(descriptor), descriptor, source.name, progress.advance
            ).drain()
        except NotFoundError:
            with lock:
                problems[descriptor.digest] = BLOB_MISSING
            return
        except IntegrityError as exc:
            with lock:
                problems[descriptor.digest] = str(exc)
            return
        with lock:
            ok.add(descriptor.digest)

    ordered = sorted(blobs.values(), key=lambda d: d.size, reverse=True)
    checked = TransferPlan(index.descriptor(), list(manifests.values()), dict(blobs))
    progress.checking(f"checking {len(manifests)} manifests, {len(blobs)} blobs", checked)
    with ThreadPoolExecutor(max_workers=max(parallel, 1), thread_name_prefix="verify") as pool:
        for future in [pool.submit(check, d) for d in ordered]:
            future.result()
    return manifests, ok, problems, set(blobs)


def untrusted_signature_content(
    source: Source, manifests: dict[Digest, Manifest], policy: TrustPolicy
) -> tuple[list[str], list[str]]:
    """Step 6 for signatures: the layers a layout keeps beside ``manifests`` no trusted key made.

    Returns ``(junk, foreign)`` as the kernel sorts them (``untrusted_signatures``): junk
    "simplesigning" layers and unreadable ones are content nothing covers; well-formed
    signatures by keys the policy does not list are not part of the verified bundle (import
    leaves them behind). Only a layout (directory, archive, memory store) is judged: a
    registry holds what others put there, and import copies from it only what verifies.
    """
    junk: list[str] = []
    foreign: list[str] = []
    if source.inventory() is not None:
        for digest in manifests:
            bad, other = untrusted_signatures(digest, signature_facts(source, digest), policy)
            junk += bad
            foreign += other
    return junk, foreign


def bundle_names(source: Source, index: Manifest) -> tuple[str, ...]:
    """Every name ``source`` gives the bundle: the one asked for, and a layout's names of it."""
    names: list[str] = []
    asked = source.ref_name()
    if asked is not None and not asked.startswith(("sha256:", "sha512:")):
        names.append(asked)
    inventory = source.inventory()
    for entry in inventory.entries if inventory is not None else ():
        ref = entry.annotations.get(mt.ANNOTATION_REF_NAME)
        if entry.digest == index.digest and ref is not None and ref not in names:
            names.append(ref)
    return tuple(names)


class BlobOpener(Protocol):
    """Anything blobs can be read from (a source, or a target holding what a delta left out)."""

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Raw chunks of the blob; the caller verifies them."""
        ...


def read_chart_facts(
    source: Source, signed: SignedBundle, blobs: BlobOpener | None = None
) -> ChartFacts:
    """The name and version in the Chart.yaml of the chart archive the lock pins (step 5).

    The archive is read bounded and digest-checked (from ``blobs`` when given: a delta leaves
    the chart to the target); what makes it missing, altered or malformed is the facts'
    ``problem``, which fails step 5 in the kernel.
    """
    locked = signed.lock.chart
    try:
        chart_manifest = source.fetch_manifest(BundleView.of(signed.index).chart)
        layer = next((d for d in chart_manifest.layers if d.digest == locked.archive), None)
        if layer is None:
            problem = f"chart manifest {chart_manifest.digest} holds no archive {locked.archive}"
            return ChartFacts(locked.archive, "", "", problem)
        if layer.size > MAX_ARCHIVE_BYTES:
            return ChartFacts(layer.digest, "", "", f"it is {layer.size} bytes")
        chunks = (blobs or source).open_blob(layer)
        data = read_exact(VerifiedStream(chunks, layer, source.name), layer.size)
        chart = load_chart_archive(data, f"chart archive {layer.digest}")
    except (NotFoundError, IntegrityError, ChartError) as exc:
        return ChartFacts(locked.archive, "", "", str(exc))
    return ChartFacts(layer.digest, chart.metadata.name, chart.metadata.version)


# Complexity kept: step 6: one branch per kind of name or blob a layout may hold beside the bundle.
def extra_content(  # noqa: C901
    source: Source, index: Manifest, manifests: dict[Digest, Manifest], blobs: set[Digest]
) -> list[str]:
    """Names and blobs of a layout or archive that the signed bundle does not account for."""
    inventory = source.inventory()
    if inventory is None:
        return []
    covered: set[Digest] = set(manifests) | blobs
    # Signatures and attestations of covered manifests travel beside them; they and their
    # blobs are expected, not extra (they are checked by their own rules, not covered).
    allowed_tags: dict[str, Digest] = {}
    current: dict[str, Manifest] = {}  # .sig tag -> the signature manifest it names
    for digest in list(manifests):
        for suffix in COSIGN_SUFFIXES:
            allowed_tags[digest.tag_form() + suffix] = digest
        for where, signature in signature_manifests(source, digest):
            # Only a true signature manifest is expected here: an image manifest whose every
            # layer is a simple-signing payload. Anything else under a signature's name is a
            # way to smuggle content in, and stays uncovered.
            if (
                signature.is_index
                or not signature.layers
                or any(
                    layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or layer.size > MAX_PAYLOAD_BYTES
                    for layer in signature.layers
                )
                or (signature.config is not None and signature.config.size > MAX_PAYLOAD_BYTES)
            ):
                continue
            covered.add(signature.digest)
            covered.update(b.digest for b in signature.blobs())
            if where.endswith(".sig"):
                current[where] = signature
    covered |= superseded_signatures(source, current)  # replaced by an appended signature
    pinned = {d.annotations.get(ANNOTATION_IMAGE_REF): d.digest for d in index.manifests}
    extra: list[str] = []
    for entry in inventory.entries:
        ref = entry.annotations.get(mt.ANNOTATION_REF_NAME)
        if entry.digest == index.digest:
            continue
        if entry.digest in covered and (ref is None or ref in allowed_tags):
            continue  # a signature: under its tag, or as an unnamed referrer
        if ref is not None and pinned.get(ref) == entry.digest:
            continue
        extra.append(f"name {ref or '(unnamed)'} -> {entry.digest}")
    for name in inventory.files.blob_names():
        algorithm, _, hexpart = name.removeprefix("blobs/").partition("/")
        if f"blobs/{algorithm}/{hexpart}" != blob_relpath(Digest(algorithm, hexpart)):
            continue
        if Digest(algorithm, hexpart) not in covered:
            extra.append(f"blob {algorithm}:{hexpart}")
    extra.extend(inventory.files.stray_files())  # hidden files, links, data after a tar's end
    return extra


def delta_base(source: Source, index: Manifest) -> str | None:
    """The base a delta archive was made against (an unsigned hint on its name), else None."""
    inventory = source.inventory()
    for entry in inventory.entries if inventory is not None else ():
        if entry.digest == index.digest and ANNOTATION_DELTA_BASE in entry.annotations:
            return entry.annotations[ANNOTATION_DELTA_BASE]
    return None
