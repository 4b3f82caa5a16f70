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
from bundler.adapters.layout import LayoutSource, blob_relpath
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import (
    ChartError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    VerificationError,
)
from bundler.model import mediatypes as mt
from bundler.model.bundle import ANNOTATION_IMAGE_REF, MAX_LOCK_BYTES, BundleView
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.plan import TransferPlan
from bundler.model.policy import TrustPolicy
from bundler.model.signature import SIMPLE_SIGNING_MEDIA_TYPE
from bundler.services.copy import COSIGN_SUFFIXES, Progress
from bundler.services.signatures import (
    MAX_PAYLOAD_BYTES,
    signature_facts,
    signature_manifests,
)
from bundler.services.transports import Location, Transports
from bundler.services.trust import (
    STEPS,
    ChartFacts,
    ContentFacts,
    SignedBundle,
    VerifiedBundle,
    check_content,
    check_signed,
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

    def to_json(self) -> dict[str, Any]:
        """The ``verify --output json`` document: source, digest, steps, bundle or error."""
        bundle = self.bundle
        return {
            "source": self.source,
            "digest": str(self.digest) if self.digest else None,
            "verified": bundle is not None,
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
        raise VerificationError(1, f"{location} cannot be read safely: {exc}") from None


def verify(
    source: Source, policy: TrustPolicy, *, parallel: int = 4, progress: Progress | None = None
) -> VerifyReport:
    """Run all six steps; a failed step is recorded in the report, not raised.

    ``progress`` is told of the blobs step 5 reads and of every byte it checks.
    """
    report = VerifyReport(source.name)
    try:
        report.bundle = _verify(source, policy, parallel, report, progress or Progress())
    except VerificationError as error:
        report.error = error
        report.steps[error.step] = ("failed", str(error))
    return report


def _kernel_ran(report: VerifyReport | None, first: int, error: VerificationError) -> None:
    """A kernel call that started at step ``first`` failed: it ran and passed the steps between."""
    if report is not None:
        for step in range(first, error.step):
            report.steps.setdefault(step, ("passed", ""))


def _verify(
    source: Source, policy: TrustPolicy, parallel: int, report: VerifyReport, progress: Progress
) -> VerifiedBundle:
    signed = check_signatures(source, policy, report)
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
    source: Source, policy: TrustPolicy, report: VerifyReport | None = None
) -> SignedBundle:
    """Steps 1 to 4, reading only the index, the lock and the signature payloads.

    What cannot be read is handed to the kernel as a problem of its step, so the steps still
    run in order: an unsigned bundle whose lock is gone fails step 2, not step 3. ``report``
    records the steps the kernel ran and passed, and nothing it did not run.
    """
    root = source.resolve()
    index = source.fetch_manifest(root)
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
        )
    except VerificationError as error:
        _kernel_ran(report, 1, error)
        raise


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


# Complexity kept: step 5 over every manifest and blob: one branch per way content can be bad.
def _content(  # noqa: C901
    source: Source, signed: SignedBundle, policy: TrustPolicy, parallel: int, progress: Progress
) -> ContentFacts:
    index = signed.index
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
                problems[descriptor.digest] = "blob is missing"
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
    extra = extra_content(source, index, manifests, set(blobs))
    junk, foreign = untrusted_signature_content(source, manifests, policy)
    chart = read_chart_facts(source, signed) if not problems else None
    names = bundle_names(source, index)
    return ContentFacts(
        manifests, frozenset(ok), problems, (*extra, *junk), chart, names, tuple(foreign)
    )


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
    if isinstance(source, LayoutSource):
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
    if isinstance(source, LayoutSource):
        for entry in source.entries:
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
    the chart to the target); a missing, altered or malformed chart archive fails step 5.
    """
    locked = signed.lock.chart
    try:
        chart_manifest = source.fetch_manifest(BundleView.of(signed.index).chart)
        layer = next((d for d in chart_manifest.layers if d.digest == locked.archive), None)
        if layer is None:
            raise VerificationError(
                5, f"chart manifest {chart_manifest.digest} holds no archive {locked.archive}"
            )
        if layer.size > MAX_ARCHIVE_BYTES:
            raise VerificationError(5, f"chart archive {layer.digest} is {layer.size} bytes")
        chunks = (blobs or source).open_blob(layer)
        data = read_exact(VerifiedStream(chunks, layer, source.name), layer.size)
        chart = load_chart_archive(data, f"chart archive {layer.digest}")
    except (NotFoundError, IntegrityError, ChartError) as exc:
        if isinstance(exc, VerificationError):
            raise
        raise VerificationError(5, f"cannot read the chart archive: {exc}") from None
    return ChartFacts(layer.digest, chart.metadata.name, chart.metadata.version)


# Complexity kept: step 6: one branch per kind of name or blob a layout may hold beside the bundle.
def extra_content(  # noqa: C901
    source: Source, index: Manifest, manifests: dict[Digest, Manifest], blobs: set[Digest]
) -> list[str]:
    """Names and blobs of a layout or archive that the signed bundle does not account for."""
    if not isinstance(source, LayoutSource):
        return []
    covered: set[Digest] = set(manifests) | blobs
    # Signatures and attestations of covered manifests travel beside them; they and their
    # blobs are expected, not extra (they are checked by their own rules, not covered).
    allowed_tags: dict[str, Digest] = {}
    for digest in list(manifests):
        for suffix in COSIGN_SUFFIXES:
            allowed_tags[digest.tag_form() + suffix] = digest
        for _, signature in signature_manifests(source, digest):
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
    pinned = {d.annotations.get(ANNOTATION_IMAGE_REF): d.digest for d in index.manifests}
    extra: list[str] = []
    for entry in source.entries:
        ref = entry.annotations.get(mt.ANNOTATION_REF_NAME)
        if entry.digest == index.digest:
            continue
        if entry.digest in covered and (ref is None or ref in allowed_tags):
            continue  # a signature: under its tag, or as an unnamed referrer
        if ref is not None and pinned.get(ref) == entry.digest:
            continue
        extra.append(f"name {ref or '(unnamed)'} -> {entry.digest}")
    for name in source.reader.blob_names():
        algorithm, _, hexpart = name.removeprefix("blobs/").partition("/")
        if f"blobs/{algorithm}/{hexpart}" != blob_relpath(Digest(algorithm, hexpart)):
            continue
        if Digest(algorithm, hexpart) not in covered:
            extra.append(f"blob {algorithm}:{hexpart}")
    extra.extend(source.reader.stray_files())  # hidden files, links, data after a tar's end
    return extra
