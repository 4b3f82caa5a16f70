"""The verification kernel: every trust decision bundler makes, and nothing else.

It takes bytes and parsed objects that the orchestrator (``bundler.services.verify``) gathered,
does no I/O, and either raises :class:`VerificationError` naming the step that failed or returns
a :class:`VerifiedBundle`, the only proof promotion accepts. The step numbers are the ones in
docs/verification.md and in the test names.

  1. The index is a bundle: an OCI index of bundler's artifactType with one chart and one lock.
  2. Signatures: the cosign simple-signing signatures found for the index digest are checked;
     only a valid signature, over this exact digest, by a key the policy trusts, counts, and
     each key counts once.
  3. The lock: its bytes are the ones the index pins, and it names exactly the chart and the
     images the index pins, by the same digests; the index holds nothing else.
  4. Policy: a rule for this bundle's name exists, admits its version, and every role it
     requires has signed with at least its threshold of distinct keys (and the identity, if the
     rule names one).
  5. Content: every manifest and every blob under the index is present with the size and digest
     it is pinned by, and the chart archive's own Chart.yaml names the chart the lock names.
  6. Nothing extra: a layout or archive holds nothing the signature does not cover (every
     signature layer beside the bundle verifies under a trusted key), and no name given to the
     bundle contradicts the signed lock (another version, or one of its images' names).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, NoReturn

from bundler.errors import ManifestError, VerificationError
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_IMAGE_REF,
    ANNOTATION_ROLE,
    LOCK_MEDIA_TYPE,
    ROLE_CHART,
    ROLE_IMAGE,
    ROLE_LOCK,
    BundleLock,
    BundleView,
    helm_tag,
)
from bundler.model.certified import (
    TrustedAuthority,
    certified_name,
    check_rekor_set,
    matched_identity,
)
from bundler.model.chartversion import is_chart_version
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, load_json_strict
from bundler.model.policy import BundleRule, Requirement, TrustedKey, TrustPolicy
from bundler.model.signature import (
    MAX_SIGNATURE_B64_CHARS,
    PAYLOAD_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Verifier,
    check_simple_signature,
    decode_signature,
    parse_payload,
    same_repository,
)


class Step(IntEnum):
    """The six steps, numbered as docs/verification.md numbers them."""

    BUNDLE = 1
    SIGNATURES = 2
    LOCK = 3
    POLICY = 4
    CONTENT = 5
    NOTHING_EXTRA = 6

    @property
    def check(self) -> str:
        """What the step checks, as reports name it."""
        return STEPS[self]


STEPS = {
    Step.BUNDLE: "the index is a bundle",
    Step.SIGNATURES: "signatures by trusted keys",
    Step.LOCK: "the lock matches the index",
    Step.POLICY: "the trust policy is met",
    Step.CONTENT: "every manifest and blob is present and intact",
    Step.NOTHING_EXTRA: "nothing extra beside the signed content",
}


@dataclass(frozen=True)
class SignatureFact:
    """One signature layer found for the index digest, with its payload bytes."""

    media_type: str
    payload: bytes
    signature_b64: str
    origin: str  # where it was found, for messages: "sha256-….sig layer 2"
    problem: str | None = None  # why the layer could not be read (oversized, malformed, ...)
    certificate: str | None = None  # PEM of the signing certificate (cosign's annotation)
    chain: str | None = None  # PEM of the certificates between it and a root
    rekor_bundle: str | None = None  # the Rekor SET, as cosign stores it (keyless signing)


@dataclass(frozen=True)
class Signer:
    """A trusted key whose good signature counted: its policy name, role, key id, identity."""

    key_name: str
    role: str
    key_id: str
    identity: str


@dataclass(frozen=True)
class ChartFacts:
    """What the chart archive itself says: the name and version in its Chart.yaml."""

    archive: Digest  # the digest-checked chart archive these facts were read from
    name: str
    version: str
    problem: str | None = None  # why the archive could not be read: missing, altered, malformed


@dataclass(frozen=True)
class ContentFacts:
    """What the orchestrator found streaming every manifest and blob under the index."""

    manifests: Mapping[Digest, Manifest]  # fetched and digest-checked
    blobs_ok: frozenset[Digest]  # streamed, size and digest checked
    problems: Mapping[Digest, str]  # missing or altered content: what went wrong
    extra: Sequence[str] = ()  # names and blobs in a layout or archive the bundle does not use
    chart: ChartFacts | None = None  # Chart.yaml of the chart archive; required by step 5
    bundle_names: Sequence[str] = ()  # every name the source gives the bundle's digest
    foreign: Sequence[str] = ()  # signatures by keys the policy does not list: not covered
    delta_base: str | None = None  # the base a delta archive names (an unsigned hint)


BLOB_MISSING = "blob is missing"  # a content problem: no blob under that digest at all


class _Token:
    """Only this module can make the results below."""


_UNSPENT: set[_Token] = set()  # tokens minted for one construction each, not yet used
_UNSPENT_LOCK = threading.Lock()


def _mint() -> _Token:
    """A fresh token good for constructing exactly one result."""
    token = _Token()
    with _UNSPENT_LOCK:
        _UNSPENT.add(token)
    return token


class _KernelMade:
    """Refuses construction without a token the kernel minted for this one construction.

    A token is spent by the construction it was minted for, so a result cannot be remade from
    another one's fields (``dataclasses.replace`` copies the spent token); copying and pickling,
    which would bypass construction, are refused outright.
    """

    _token: _Token

    def __post_init__(self) -> None:
        token = self._token
        with _UNSPENT_LOCK:
            spent = not isinstance(token, _Token) or token not in _UNSPENT
            if not spent:
                _UNSPENT.discard(token)
        if spent:
            raise TypeError(f"{type(self).__name__} is made by the verification kernel only")

    def _refuse_copy(self) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} is made by the verification kernel only; "
            "it cannot be copied or pickled"
        )

    def __copy__(self) -> NoReturn:
        self._refuse_copy()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse_copy()

    def __reduce__(self) -> NoReturn:
        self._refuse_copy()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse_copy()

    def __getstate__(self) -> NoReturn:
        self._refuse_copy()


@dataclass(frozen=True)
class SignedBundle(_KernelMade):
    """Steps 1 to 4 passed: the index, its lock and its signatures are trusted."""

    index: Manifest
    lock: BundleLock
    signers: tuple[Signer, ...]
    rule: str
    _token: _Token = field(repr=False, compare=False)
    found: tuple[Signer, ...] = ()  # every valid signer, counted by the rule or not


@dataclass(frozen=True)
class VerifiedBundle(_KernelMade):
    """All six steps passed. Promotion accepts nothing else."""

    digest: Digest
    name: str
    version: str
    lock: BundleLock
    signers: tuple[Signer, ...]
    rule: str
    _token: _Token = field(repr=False, compare=False)
    found: tuple[Signer, ...] = ()  # every valid signer, counted by the rule or not


def _fail(step: Step, message: str) -> VerificationError:
    return VerificationError(step, message)


# Complexity kept: the verification kernel: steps 1 to 4 in order; splitting would scatter them.
def check_signed(  # noqa: C901
    index: Manifest,
    lock_manifest: Manifest | None,
    lock_raw: bytes | None,
    signatures: Sequence[SignatureFact],
    policy: TrustPolicy,
    *,
    lock_problem: str | None = None,
    image_signatures: Mapping[Digest, Sequence[SignatureFact]] | None = None,
) -> SignedBundle:
    """Steps 1 to 4: the index is a bundle, and its signatures and lock satisfy ``policy``.

    The steps run in order and VerificationError carries the number of the first step that
    failed: every step before it ran and passed, none after it ran. ``lock_problem`` (with no
    lock manifest or bytes) is why the orchestrator could not read the lock; it fails step 3,
    after steps 1 and 2 have run.
    """
    # Step 1: the index is a bundle.
    try:
        view = BundleView.of(index)
    except ManifestError as exc:
        raise _fail(Step.BUNDLE, str(exc)) from None

    # Step 2: signatures over this exact digest by trusted keys, each key once.
    signers = _valid_signers("bundle", index.digest, signatures, policy)

    # Step 3: the lock is the one the index pins, and agrees with the index.
    if lock_manifest is None or lock_raw is None:
        raise _fail(Step.LOCK, lock_problem or "the lock was not read")
    if view.lock.digest != lock_manifest.digest:
        raise _fail(
            Step.LOCK, f"lock manifest {lock_manifest.digest} is not the one the index pins"
        )
    layers = [x for x in lock_manifest.layers if x.media_type == LOCK_MEDIA_TYPE]
    if len(layers) != 1 or not layers[0].digest.matches(lock_raw):
        raise _fail(Step.LOCK, "the lock document does not match the digest its manifest pins")
    try:
        lock = BundleLock.from_bytes(lock_raw)
    except ManifestError as exc:
        raise _fail(Step.LOCK, str(exc)) from None
    if lock.chart.manifest != view.chart.digest:
        raise _fail(
            Step.LOCK,
            f"the lock names chart {lock.chart.manifest}, the index pins {view.chart.digest}",
        )
    _refuse_twice(
        "the index pins image", [d.annotations.get(ANNOTATION_IMAGE_REF, "") for d in view.images]
    )
    _refuse_twice("the lock lists image", [i.reference for i in lock.images])
    pinned = {d.annotations.get(ANNOTATION_IMAGE_REF, ""): d.digest for d in view.images}
    locked = {i.reference: i.digest for i in lock.images}
    for ref in sorted(set(pinned) | set(locked)):
        if pinned.get(ref) != locked.get(ref):
            raise _fail(
                Step.LOCK,
                f"image {ref or '(unnamed)'}: the lock says {locked.get(ref)}, "
                f"the index pins {pinned.get(ref)}",
            )
    for child in index.manifests:
        if child.annotations.get(ANNOTATION_ROLE) not in (ROLE_CHART, ROLE_IMAGE, ROLE_LOCK):
            raise _fail(
                Step.LOCK,
                f"the index holds {child.digest}, which is neither the chart, "
                "an image of the lock, nor the lock",
            )

    # Step 4: the policy's rule for this bundle.
    rule = policy.rule_for(lock.name)
    if rule is None:
        raise _fail(Step.POLICY, f"{policy.origin} has no rule for bundle {lock.name!r}")
    if rule.versions is not None and not rule.versions.admits(lock.version):
        raise _fail(
            Step.POLICY,
            f"rule {rule.name!r} admits versions {rule.versions.text!r}, "
            f"not {lock.name} {lock.version}",
        )
    counted = _meet_rule(rule, signers.values())
    if rule.images:
        _check_image_signatures(rule, lock, image_signatures, policy)
    return SignedBundle(index, lock, tuple(counted), rule.name, _mint(), tuple(signers.values()))


def _check_image_signatures(
    rule: BundleRule,
    lock: BundleLock,
    found: Mapping[Digest, Sequence[SignatureFact]] | None,
    policy: TrustPolicy,
) -> None:
    """Step 4 for a rule's ``images``: every image of the lock carries the signatures asked."""
    if found is None:
        raise _fail(Step.POLICY, f"rule {rule.name!r} asks for image signatures; none were read")
    for image in lock.images:
        signers: dict[str, _Accepted] = {}
        for fact in found.get(image.digest, ()):
            accepted, _ = _accepting_key(fact, policy, image.digest)
            if accepted is not None:
                signers.setdefault(accepted.key_id, accepted)
        for requirement in rule.images:
            have = sorted({s.name for s in signers.values() if s.role == requirement.role})
            if len(have) < requirement.threshold:
                raise _fail(
                    Step.POLICY,
                    f"rule {rule.name!r} needs {requirement.threshold} {requirement.role!r} "
                    f"signature(s) on every image; {image.reference} ({image.digest}) has "
                    f"{', '.join(have) or 'none'}",
                )


def _valid_signers(
    what: str, subject: Digest, signatures: Sequence[SignatureFact], policy: TrustPolicy
) -> dict[str, Signer]:
    """Step 2: the trusted keys with a valid signature over exactly ``subject``, each once."""
    signers: dict[str, Signer] = {}
    rejected: list[str] = []
    for fact in signatures:
        accepted_by, why = _accepting_key(fact, policy, subject)
        if accepted_by is None:
            rejected.append(f"{fact.origin}: {why}")
            continue
        signers.setdefault(accepted_by.key_id, _signer(accepted_by, fact))
    if not signers:
        detail = f"{len(signatures)} found: {'; '.join(rejected)}" if rejected else "not signed"
        raise _fail(
            Step.SIGNATURES, f"{what} {subject} has no valid signature by a trusted key ({detail})"
        )
    return signers


def _meet_rule(rule: BundleRule, signers: Iterable[Signer]) -> list[Signer]:
    """Step 4's signature requirements: the signers ``rule`` counts, each role to its threshold."""
    found = list(signers)
    counted = counted_signers(rule, found)
    for requirement in rule.require:
        have = sorted({s.key_name for s in counted if s.role == requirement.role})
        if len(have) < requirement.threshold:
            raise _fail(
                Step.POLICY,
                f"rule {rule.name!r} needs {requirement.threshold} "
                f"{requirement.role!r} signature(s); valid ones: "
                f"{', '.join(have) or 'none'}" + _not_counted(rule, requirement, found, counted),
            )
    return counted


def _refuse_twice(what: str, references: Sequence[str]) -> None:
    """Step 3 is exact: one entry per image reference, in the index and in the lock."""
    twice = sorted(ref for ref, n in Counter(references).items() if n > 1)
    if twice:
        raise _fail(
            Step.LOCK,
            f"{what} {twice[0] or '(unnamed)'} {Counter(references)[twice[0]]} times; "
            "each reference must appear once",
        )


def counted_signers(rule: BundleRule, signers: Iterable[Signer]) -> list[Signer]:
    """The valid signers ``rule`` counts: all of them, or those naming its identity."""
    if rule.identity is None:
        return list(signers)
    return [s for s in signers if same_repository(s.identity, rule.identity)]


def _not_counted(
    rule: BundleRule, requirement: Requirement, signers: Iterable[Signer], counted: Sequence[Signer]
) -> str:
    """For a failed requirement: the valid signatures found that did not count, and why not."""
    why: list[str] = []
    for s in signers:
        if s.role == requirement.role and s in counted:
            continue
        found = f"{s.key_name} (key {s.key_id}, role {s.role!r}, identity {s.identity})"
        if s.role != requirement.role:
            why.append(f"{found}: its key holds role {s.role!r}, not {requirement.role!r}")
        else:
            why.append(f"{found}: the rule counts only identity {rule.identity}")
    return f"; found but not counted: {'; '.join(why)}" if why else ""


def needed_signers(policy: TrustPolicy, rule: BundleRule, requirement: Requirement) -> str:
    """What would meet ``requirement``: how many signatures, by which keys, as which identity."""
    keys = [f"{k.name} (key {k.key.key_id})" for k in policy.keys if k.role == requirement.role]
    identity = f"identity {rule.identity}" if rule.identity is not None else "any identity"
    return (
        f"{requirement.threshold} {requirement.role!r} signature(s) by "
        f"{', '.join(keys) or 'no key the policy trusts'}, as {identity}"
    )


def approval_problem(
    verified: VerifiedBundle, policy: TrustPolicy, approver: TrustedKey, identity: str
) -> str | None:
    """Why a signature by ``approver`` naming ``identity`` would not count for ``verified``.

    ``verified`` passed every step under ``policy`` with the signature requirements left out
    (approvals are what is being collected). The signature counts when its key holds a role
    the bundle's rule requires and has not counted already, and it names the rule's identity
    (if the rule names one). Every requirement of the other roles must already be met. None
    when the approval may be written (or is already there).
    """
    rule = policy.rule_for(verified.name)
    if rule is None:
        return f"{policy.origin} has no rule for bundle {verified.name!r}"
    counted = verified.signers
    has = {s.key_id for s in counted}
    unmet = [
        r
        for r in rule.require
        if len({s.key_name for s in counted if s.role == r.role}) < r.threshold
    ]
    mine = f"{approver.name} (key {approver.key.key_id}, role {approver.role!r})"
    others = [r for r in unmet if r.role != approver.role]
    required = [r for r in rule.require if r.role == approver.role]
    if approver.key.key_id in has and required:
        if not others:
            return None  # already approved: signing again changes nothing
        return (
            f"{mine} has signed already and counts once; rule {rule.name!r} still needs "
            + "; ".join(needed_signers(policy, rule, r) for r in others)
        )
    if not required:
        reason = f"the rule requires no {approver.role!r} signature"
    elif rule.identity is not None and not same_repository(identity, rule.identity):
        reason = f"the rule counts only identity {rule.identity}"
    else:
        reason = None
    if reason is not None:
        wanted = unmet or list(rule.require)
        return (
            f"an approval by {mine} as {identity} would not count for rule {rule.name!r}: "
            f"{reason}; what counts is "
            + "; ".join(needed_signers(policy, rule, r) for r in wanted)
        )
    if others:
        r = others[0]
        have = sorted({s.key_name for s in counted if s.role == r.role})
        return (
            f"rule {rule.name!r} needs {needed_signers(policy, rule, r)} before {mine} "
            f"can approve; valid ones: {', '.join(have) or 'none'}"
            + _not_counted(rule, r, verified.found, counted)
        )
    return None


@dataclass(frozen=True)
class _Accepted:
    """Who made a signature that counts: a trusted key, or a certificate a trusted CA issued."""

    name: str
    role: str
    key_id: str


def _accepting_key(
    fact: SignatureFact, policy: TrustPolicy, subject: Digest
) -> tuple[_Accepted | None, str]:
    """The trusted key or certified identity that made ``fact`` for ``subject``, else why not."""
    if fact.problem is not None:
        return None, fact.problem
    reasons: set[str] = set()
    for trusted in policy.keys:
        reason = check_simple_signature(
            fact.media_type, fact.payload, fact.signature_b64, trusted.key, subject, None
        )
        if reason is None:
            return _Accepted(trusted.name, trusted.role, trusted.key.key_id), ""
        reasons.add(reason)
    certified_why: list[str] = []
    if fact.certificate is not None:
        for authority in policy.authorities:
            accepted, why = _certified_signer(fact, authority, subject)
            if accepted is not None:
                return accepted, ""
            certified_why.append(f"{authority.name}: {why}")
    if "digest" in reasons:
        return None, "payload for another digest"
    if certified_why:
        return None, "; ".join(certified_why)
    if reasons == {"mediatype"}:
        return None, "not a simple-signing signature"
    return None, "no trusted key made it"


def _certified_signer(
    fact: SignatureFact, trusted: TrustedAuthority, subject: Digest
) -> tuple[_Accepted | None, str]:
    """A certificate-based signature, checked offline: SET, path, identity, then the signature.

    With a Rekor key the SET is required and the certificate must be valid when the entry was
    logged; without one, now.
    """
    assert fact.certificate is not None
    from datetime import UTC, datetime

    from bundler.adapters.x509 import certificate_der

    at = datetime.now(UTC)
    der = certificate_der(fact.certificate.encode())
    if der is None:
        return None, "the certificate annotation is not one PEM certificate"
    if trusted.rekor is not None:
        if fact.rekor_bundle is None:
            return None, "no Rekor SET (dev.sigstore.cosign/bundle) where the policy needs one"
        logged = check_rekor_set(
            fact.rekor_bundle,
            trusted.rekor,
            fact.payload,
            fact.signature_b64,
            der,
            certificate_der,
        )
        if isinstance(logged, str):
            return None, logged
        at = logged.integrated_time
    certified = trusted.authority.certify(fact.certificate, fact.chain, at)
    if isinstance(certified, str):
        return None, certified
    identity, why = matched_identity(trusted, certified)
    if identity is None:
        return None, why
    reason = check_simple_signature(
        fact.media_type, fact.payload, fact.signature_b64, certified.key, subject, None
    )
    if reason is not None:
        return None, {
            "digest": "payload for another digest",
            "mediatype": "not a simple-signing signature",
        }.get(reason, "the certificate's key did not make it")
    return _Accepted(certified_name(trusted, certified), trusted.role, certified.fingerprint), ""


def signature_trusted(subject: Digest, fact: SignatureFact, policy: TrustPolicy) -> bool:
    """True when a key of ``policy`` made the signature ``fact`` for ``subject``."""
    return _accepting_key(fact, policy, subject)[0] is not None


def _foreign_signature(fact: SignatureFact, subject: Digest) -> bool:
    """A well-formed cosign signature of ``subject`` by some key, only not one we know."""
    if fact.problem is not None or fact.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
        return False
    if not fact.signature_b64 or len(fact.signature_b64) > MAX_SIGNATURE_B64_CHARS:
        return False
    try:
        if not decode_signature(fact.signature_b64):
            return False
        claim = parse_payload(fact.payload)
    except (binascii.Error, ValueError, ManifestError):
        return False
    return claim.type == PAYLOAD_TYPE and claim.digest == subject


def untrusted_signatures(
    subject: Digest, signatures: Sequence[SignatureFact], policy: TrustPolicy
) -> tuple[list[str], list[str]]:
    """The signature layers stored for ``subject`` that no key of ``policy`` made for it.

    Returns ``(junk, foreign)``. Junk is what cannot be a signature of ``subject`` at all (a
    "simplesigning" layer whose payload is not a cosign claim for it, an unreadable or
    oversized layer, a bad signature encoding): content nothing covers, refused at step 6.
    Foreign is a well-formed claim for ``subject`` by a key the policy does not list (another
    signer, an upstream signature): not part of the verified bundle, reported, and never
    copied by import.
    """
    junk: list[str] = []
    foreign: list[str] = []
    for fact in signatures:
        trusted, why = _accepting_key(fact, policy, subject)
        if trusted is not None:
            continue
        if _foreign_signature(fact, subject):
            foreign.append(f"signature {fact.origin}")
        else:
            junk.append(f"signature {fact.origin} ({why})")
    return junk, foreign


def _version_tag(name: str) -> str | None:
    """The tag part of a name (``demo:1.0.0``, ``host:5000/x/demo:1.0.0``, ``1.0.0``)."""
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[colon + 1 :]
    return name if slash < 0 else None


def _names_a_version(tag: str) -> bool:
    return is_chart_version(tag.replace("_", "+"))


def name_problem(lock: BundleLock, name: str) -> str | None:
    """Why ``name`` cannot name the bundle ``lock`` describes, or None when it may.

    Names are not signed, so a name may not claim what the lock contradicts: one of the bundle's
    images' references, or a version-shaped tag other than the lock's version (in Helm's
    ``_`` form or as written; build metadata counts).
    """
    if name in {i.reference for i in lock.images}:
        return f"the bundle is named {name}, the reference of one of its own images"
    tag = _version_tag(name)
    versions = (helm_tag(lock.version), lock.version)
    if tag is not None and _names_a_version(tag) and tag not in versions:
        return (
            f"the bundle is named {name}, but its signed lock says {lock.name} {lock.version} "
            f"(expected the tag {helm_tag(lock.version)})"
        )
    return None


def signed_name(lock: BundleLock) -> str:
    """The name a bundle carries where nothing else names it: ``NAME:TAG`` as pack writes it."""
    return f"{lock.name}:{helm_tag(lock.version)}"


def check_names(signed: SignedBundle, names: Sequence[str], extra: Sequence[str] = ()) -> None:
    """Step 6 on its own: nothing uncovered (``extra``), no name that contradicts the lock."""
    for name in names:
        problem = name_problem(signed.lock, name)
        if problem is not None:
            raise _fail(Step.NOTHING_EXTRA, f"{problem}; names are not signed, the lock is")
    if extra:
        raise _fail(
            Step.NOTHING_EXTRA,
            f"content the signature does not cover: {', '.join(extra[:5])}"
            + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""),
        )


def check_chart(signed: SignedBundle, chart: ChartFacts | None) -> None:
    """Step 5, the chart: its archive's Chart.yaml names the chart the lock names."""
    locked = signed.lock.chart
    if chart is not None and chart.problem is not None:
        raise _fail(Step.CONTENT, f"cannot read the chart archive: {chart.problem}")
    if chart is None or chart.archive != locked.archive:
        raise _fail(Step.CONTENT, f"the Chart.yaml of chart archive {locked.archive} was not read")
    if (chart.name, chart.version) != (locked.name, locked.version):
        raise _fail(
            Step.CONTENT,
            f"the chart archive is {chart.name} {chart.version}, but the lock says "
            f"{locked.name} {locked.version}",
        )


def check_content(signed: SignedBundle, facts: ContentFacts) -> VerifiedBundle:
    """Steps 5 and 6: all content under the index is present and intact, and nothing extra.

    VerificationError carries the number of the first step that failed.
    """
    index = signed.index
    # Step 5: every manifest and blob under the index, present and intact.
    if facts.problems and facts.delta_base is not None:
        missing = [d for d, problem in facts.problems.items() if problem == BLOB_MISSING]
        if len(missing) == len(facts.problems):
            raise _fail(
                Step.CONTENT,
                f"a delta archive: it leaves out {len(missing)} blobs that its base "
                f"{facts.delta_base} holds; import it where the base is (bundler import), "
                "which checks every blob, or verify the bundle there",
            )
    for digest, problem in sorted(facts.problems.items()):
        raise _fail(Step.CONTENT, f"{digest}: {problem}")
    for manifest in _reachable(index, facts.manifests):
        for blob in manifest.blobs():
            if blob.digest not in facts.blobs_ok:
                raise _fail(
                    Step.CONTENT, f"blob {blob.digest} of {manifest.digest} was not verified"
                )
    check_chart(signed, facts.chart)
    # Step 6: nothing beside what the signature covers, and no name the lock contradicts.
    check_names(signed, facts.bundle_names, facts.extra)
    lock = signed.lock
    return VerifiedBundle(
        index.digest,
        lock.name,
        lock.version,
        lock,
        signed.signers,
        signed.rule,
        _mint(),
        signed.found,
    )


def _reachable(index: Manifest, manifests: Mapping[Digest, Manifest]) -> list[Manifest]:
    out: list[Manifest] = []
    seen: set[Digest] = set()
    stack = [index]
    while stack:
        manifest = stack.pop()
        if manifest.digest in seen:
            continue
        seen.add(manifest.digest)
        out.append(manifest)
        for child in manifest.manifests:
            if child.media_type not in mt.MANIFESTS:
                continue
            found = manifests.get(child.digest)
            if found is None:
                raise _fail(
                    Step.CONTENT, f"manifest {child.digest} under {manifest.digest} is missing"
                )
            stack.append(found)
    return out


def _signer(trusted: _Accepted, fact: SignatureFact) -> Signer:
    identity = parse_payload(fact.payload).identity
    return Signer(trusted.name, trusted.role, trusted.key_id, identity)


def refuse_unsafe(location: str, problem: str) -> NoReturn:
    """Step 1 for content too hostile to open (an unsafe archive, a malformed index)."""
    raise _fail(Step.BUNDLE, f"{location} cannot be read safely: {problem}")


def check_unchanged(location: str, found: Digest, verified: Digest) -> None:
    """What is about to be signed is still what was verified (no swap in between)."""
    if found != verified:
        raise _fail(
            Step.SIGNATURES,
            f"{location} now resolves to {found}, not the verified {verified}; nothing was signed",
        )


def approval_policy(policy: TrustPolicy) -> TrustPolicy:
    """``policy`` with the signature requirements left out: what a bundle meets before approval.

    Approvals are what is being collected, so every other step must pass as under ``policy``;
    :func:`check_approval` then judges the signatures against the full rule.
    """
    return replace(policy, rules=tuple(replace(rule, require=()) for rule in policy.rules))


def check_approval(
    verified: VerifiedBundle, policy: TrustPolicy, approver: TrustedKey, identity: str
) -> None:
    """Step 4 before an approval is written: a signature by ``approver`` as ``identity`` counts.

    ``verified`` passed every step under :func:`approval_policy` of ``policy``. Refuses, naming
    why (role, identity, key) and what would count, when the approval would not count.
    """
    problem = approval_problem(verified, policy, approver, identity)
    if problem is not None:
        raise _fail(Step.POLICY, f"{problem}; nothing was signed")


@dataclass(frozen=True)
class RecordFact:
    """One promotion record attached to a chart: its digest-checked bytes and signature."""

    record: bytes
    signature_b64: str


def check_promotion(
    name: str, chart: Manifest, records: Sequence[RecordFact], key: Verifier
) -> dict[str, Any]:
    """A promoted chart's record: signed by ``key`` over exactly its bytes, naming this chart.

    Step 1: ``chart`` (found at ``name``) is a Helm chart manifest. Step 2: one of
    ``records`` is signed by ``key`` and names ``chart``'s digest. Returns that record.
    """
    if chart.is_index or chart.config is None or chart.config.media_type != mt.HELM_CONFIG:
        raise _fail(Step.BUNDLE, f"{name} is not a Helm chart")
    for fact in records:
        try:
            signature = base64.b64decode(fact.signature_b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if not key.verify(fact.record, signature):
            continue
        try:
            doc = load_json_strict(fact.record, "promotion record")
        except ManifestError:
            continue
        named = doc.get("chart") if isinstance(doc, dict) else None
        if isinstance(named, dict) and named.get("digest") == str(chart.digest):
            assert isinstance(doc, dict)
            return doc
    raise _fail(
        Step.SIGNATURES,
        f"chart {chart.digest} has no promotion record signed by {key.key_id}"
        f" ({len(records)} record(s) found)",
    )


# ---------------------------------------------------------------- plain images (cosign verify)
@dataclass(frozen=True)
class SignedImage(_KernelMade):
    """Steps 2 and 4 passed for a plain image or index ``sign`` signed (not a bundle)."""

    manifest: Manifest
    name: str
    signers: tuple[Signer, ...]
    rule: str
    _token: _Token = field(repr=False, compare=False)


@dataclass(frozen=True)
class VerifiedImage(_KernelMade):
    """A plain image or index: signed as the policy asks, every manifest and blob intact.

    Not a bundle: approval, import and promotion accept only a :class:`VerifiedBundle`.
    """

    digest: Digest
    name: str
    signers: tuple[Signer, ...]
    rule: str
    _token: _Token = field(repr=False, compare=False)


def check_signed_image(
    manifest: Manifest, name: str, signatures: Sequence[SignatureFact], policy: TrustPolicy
) -> SignedImage:
    """Steps 2 and 4 for what is not a bundle, as ``cosign verify`` checks an image.

    Step 2: valid signatures over exactly its digest by trusted keys. Step 4: the policy's rule
    for ``name`` (the repository's last component; ``--key`` policies match any) is met; a rule
    that admits only some versions cannot admit an image, which has none.
    """
    signers = _valid_signers("image", manifest.digest, signatures, policy)
    rule = policy.rule_for(name)
    if rule is None:
        raise _fail(Step.POLICY, f"{policy.origin} has no rule for {name or 'an unnamed image'!r}")
    if rule.versions is not None:
        raise _fail(
            Step.POLICY,
            f"rule {rule.name!r} admits versions {rule.versions.text!r}; "
            f"{manifest.digest} is an image, not a bundle, and has no version",
        )
    counted = _meet_rule(rule, signers.values())
    return SignedImage(manifest, name, tuple(counted), rule.name, _mint())


def check_image_content(signed: SignedImage, facts: ContentFacts) -> VerifiedImage:
    """Step 5 for a plain image or index: every manifest and blob under it, present and intact."""
    for digest, problem in sorted(facts.problems.items()):
        raise _fail(Step.CONTENT, f"{digest}: {problem}")
    for manifest in _reachable(signed.manifest, facts.manifests):
        for blob in manifest.blobs():
            if blob.digest not in facts.blobs_ok:
                raise _fail(
                    Step.CONTENT, f"blob {blob.digest} of {manifest.digest} was not verified"
                )
    return VerifiedImage(signed.manifest.digest, signed.name, signed.signers, signed.rule, _mint())
