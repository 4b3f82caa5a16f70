"""The verification kernel, one test per attack, without I/O.

A tiny bundle (a chart, two images, the lock) is built in memory with the model helpers and
signed with freshly generated keys; each test changes one thing an attacker controls and calls
``check_signed`` / ``check_content`` directly. Test names carry the step number of
docs/verification.md that must refuse the attack. The policy sanity checks (``check_policy``,
``load_trust_policy``) are here too: an empty or contradictory policy must never read as
"accept everything".
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bundler.adapters.crypto import PrivateKey, generate_key
from bundler.adapters.trustpolicy import load_trust_policy
from bundler.errors import ConfigError, NotFoundError, VerificationError
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    LOCK_MEDIA_TYPE,
    ROLE_CHART,
    ROLE_IMAGE,
    ROLE_LOCK,
    Blob,
    BundleEntry,
    BundleLock,
    BundleView,
    LockedChart,
    LockedImage,
    bundle_index,
    chart_manifest,
    lock_manifest,
)
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.policy import (
    BundleRule,
    Requirement,
    TrustedKey,
    TrustPolicy,
    VersionRange,
    check_policy,
)
from bundler.model.signature import simple_signing_payload
from bundler.services import trust
from bundler.services.trust import (
    ChartFacts,
    ContentFacts,
    SignatureFact,
    SignedBundle,
    VerifiedBundle,
    approval_problem,
    check_content,
    check_signed,
)

NAME, VERSION = "demo", "1.0.0"
WEB_REF = "example.local/demo/web:1.0.0"
API_REF = "example.local/demo/api:1.0.0"
IDENTITY = "registry.example/vendor/demo"

VENDOR = generate_key("ecdsa-p256")
VENDOR_2 = generate_key("ed25519")
APPROVER = generate_key("ecdsa-p256")
STRANGER = generate_key("ecdsa-p256")


# ------------------------------------------------------------------------ a tiny bundle
def _image(seed: str) -> tuple[Manifest, dict[Digest, bytes]]:
    config = Blob.of(mt.OCI_CONFIG, json.dumps({"seed": seed, "rootfs": {}}).encode())
    layer = Blob.of("application/vnd.oci.image.layer.v1.tar+gzip", f"layer {seed}".encode())
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": [layer.descriptor.to_json()],
    }
    manifest = parse_manifest(json.dumps(doc).encode(), media_type=mt.OCI_MANIFEST)
    return manifest, {config.descriptor.digest: config.data, layer.descriptor.digest: layer.data}


@dataclass(frozen=True)
class Bundle:
    index: Manifest
    lock_manifest: Manifest
    lock_raw: bytes
    manifests: dict[Digest, Manifest]
    blobs: dict[Digest, bytes]
    images: dict[str, Manifest]

    def facts(self, **changes: object) -> ContentFacts:
        """Content as the orchestrator finds it when nothing is wrong, with ``changes``."""
        chart = BundleLock.from_bytes(self.lock_raw).chart  # what its Chart.yaml says, intact
        facts = ChartFacts(chart.archive, chart.name, chart.version)
        base = ContentFacts(dict(self.manifests), frozenset(self.blobs), {}, (), facts)
        return replace(base, **changes)  # type: ignore[arg-type]


def build_bundle(
    *,
    name: str = NAME,
    version: str = VERSION,
    lock_images: dict[str, Digest] | None = None,
    extra_entries: Sequence[BundleEntry] = (),
    extra_locked: Sequence[tuple[str, Digest]] = (),
) -> Bundle:
    """A bundle of the chart and two images. ``lock_images`` overrides what the lock says;
    ``extra_entries`` are added to the index after the lock and ``extra_locked`` to the lock's
    images (an attacker's additions)."""
    manifests: dict[Digest, Manifest] = {}
    blobs: dict[Digest, bytes] = {}
    config = Blob.of(mt.HELM_CONFIG, json.dumps({"name": name, "version": version}).encode())
    archive = Blob.of(mt.HELM_CHART, b"\x1f\x8b chart archive of " + name.encode())
    chart = chart_manifest(config, archive, {})
    manifests[chart.digest] = chart
    blobs.update({config.descriptor.digest: config.data, archive.descriptor.digest: archive.data})
    images: dict[str, Manifest] = {}
    for ref in (API_REF, WEB_REF):
        image, image_blobs = _image(ref)
        images[ref] = image
        manifests[image.digest] = image
        blobs.update(image_blobs)
    pinned = {ref: image.digest for ref, image in images.items()}
    locked = pinned if lock_images is None else lock_images
    lock = BundleLock(
        name=name,
        version=version,
        chart=LockedChart(
            name, version, version, chart.digest, archive.descriptor.digest, "directory"
        ),
        images=tuple(
            LockedImage(ref, digest, mt.OCI_MANIFEST, 100, ("linux/amd64",))
            for ref, digest in (*locked.items(), *extra_locked)
        ),
        rendered=True,
    )
    lock_blob = Blob.of(LOCK_MEDIA_TYPE, lock.to_bytes())
    lock_m = lock_manifest(lock_blob)
    manifests[lock_m.digest] = lock_m
    blobs[lock_blob.descriptor.digest] = lock_blob.data
    blobs[lock_m.config.digest] = b"{}"  # type: ignore[union-attr]
    entries = [
        BundleEntry(ROLE_CHART, chart),
        *(BundleEntry(ROLE_IMAGE, image, image_ref=ref) for ref, image in images.items()),
        BundleEntry(ROLE_LOCK, lock_m),
        *extra_entries,
    ]
    index = bundle_index(entries, {"org.opencontainers.image.title": name})
    manifests[index.digest] = index
    return Bundle(index, lock_m, lock_blob.data, manifests, blobs, images)


def sign(
    key: PrivateKey,
    digest: Digest,
    *,
    identity: str = IDENTITY,
    origin: str = "sha256-x.sig layer 1",
) -> SignatureFact:
    payload = simple_signing_payload(digest, identity)
    return SignatureFact(
        mt.COSIGN_SIMPLESIGNING, payload, base64.b64encode(key.sign(payload)).decode(), origin
    )


def policy(
    *rules: BundleRule, keys: Sequence[tuple[str, str, PrivateKey]] | None = None
) -> TrustPolicy:
    trusted = keys if keys is not None else [("vendor-release", "vendor", VENDOR)]
    return TrustPolicy(
        keys=tuple(TrustedKey(name, role, key.public) for name, role, key in trusted),
        rules=rules or (BundleRule(NAME, (Requirement("vendor"),)),),
        origin="test policy",
    )


TWO_VENDORS_AND_APPROVER = [
    ("vendor-release", "vendor", VENDOR),
    ("vendor-backup", "vendor", VENDOR_2),
    ("secops-alice", "approval", APPROVER),
]


def refused(step: int, call: object, *args: object) -> str:
    """Run ``call(*args)``; it must refuse at ``step``. Returns the message."""
    with pytest.raises(VerificationError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.step == step, str(caught.value)
    message = str(caught.value)
    assert message.startswith(f"verification step {step} failed: ")
    return message


def signed_ok(
    bundle: Bundle, signatures: Sequence[SignatureFact], trust_policy: TrustPolicy | None = None
) -> SignedBundle:
    return check_signed(
        bundle.index, bundle.lock_manifest, bundle.lock_raw, signatures, trust_policy or policy()
    )


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return build_bundle()


# ----------------------------------------------------------------------- the good case
def test_a_signed_intact_bundle_is_verified(bundle: Bundle) -> None:
    signed = signed_ok(bundle, [sign(VENDOR, bundle.index.digest)])
    verified = check_content(signed, bundle.facts())
    assert isinstance(verified, VerifiedBundle)
    assert (verified.digest, verified.name, verified.version) == (
        bundle.index.digest,
        NAME,
        VERSION,
    )
    assert [(s.key_name, s.role, s.identity) for s in verified.signers] == [
        ("vendor-release", "vendor", IDENTITY)
    ]
    assert verified.rule == NAME


# ---------------------------------------------------------------- step 1: it is a bundle
def test_step1_plain_image_index_is_refused(bundle: Bundle) -> None:
    doc = json.loads(bundle.index.raw)
    del doc["artifactType"]
    plain = parse_manifest(json.dumps(doc).encode(), media_type=mt.OCI_INDEX)
    message = refused(
        1,
        check_signed,
        plain,
        bundle.lock_manifest,
        bundle.lock_raw,
        [sign(VENDOR, plain.digest)],
        policy(),
    )
    assert str(plain.digest) in message


def test_step1_index_with_two_locks_is_refused(bundle: Bundle) -> None:
    second = build_bundle(version="1.0.1")
    forged = build_bundle(extra_entries=[BundleEntry(ROLE_LOCK, second.lock_manifest)])
    message = refused(
        1,
        check_signed,
        forged.index,
        forged.lock_manifest,
        forged.lock_raw,
        [sign(VENDOR, forged.index.digest)],
        policy(),
    )
    assert "exactly one chart and one lock" in message


# --------------------------------------------------------------- step 2: signatures
def test_step2_unsigned_bundle_is_refused(bundle: Bundle) -> None:
    message = refused(2, signed_ok, bundle, [])
    assert str(bundle.index.digest) in message
    assert "not signed" in message


def test_step2_signature_by_untrusted_key_is_refused(bundle: Bundle) -> None:
    fact = sign(STRANGER, bundle.index.digest, origin="sha256-abc.sig layer 1")
    message = refused(2, signed_ok, bundle, [fact])
    assert "sha256-abc.sig layer 1: no trusted key made it" in message


def test_step2_payload_for_another_digest_is_refused(bundle: Bundle) -> None:
    """A valid vendor signature moved over from another bundle."""
    other = build_bundle(version="0.9.0")
    moved = sign(VENDOR, other.index.digest, origin="sha256-moved.sig layer 1")
    message = refused(2, signed_ok, bundle, [moved])
    assert "sha256-moved.sig layer 1: payload for another digest" in message


def test_step2_payload_altered_after_signing_is_refused(bundle: Bundle) -> None:
    good = sign(VENDOR, bundle.index.digest)
    altered = replace(good, payload=good.payload.replace(IDENTITY.encode(), b"evil.example/x"))
    message = refused(2, signed_ok, bundle, [altered])
    assert "no trusted key made it" in message


def test_step2_signature_of_another_media_type_does_not_count(bundle: Bundle) -> None:
    good = sign(VENDOR, bundle.index.digest)
    message = refused(2, signed_ok, bundle, [replace(good, media_type="application/json")])
    assert "not a simple-signing signature" in message


def test_step2_garbage_signature_does_not_count(bundle: Bundle) -> None:
    good = sign(VENDOR, bundle.index.digest)
    for bad in ("", "not base64!", base64.b64encode(b"\x00" * 70).decode()):
        refused(2, signed_ok, bundle, [replace(good, signature_b64=bad)])


def test_step2_same_signature_twice_counts_once(bundle: Bundle) -> None:
    """Threshold 2 of the vendor role: one vendor key's signature, found twice, is one."""
    rule = BundleRule(NAME, (Requirement("vendor", 2),))
    trust_policy = policy(rule, keys=TWO_VENDORS_AND_APPROVER)
    fact = sign(VENDOR, bundle.index.digest)
    again = replace(fact, origin="referrer sha256:abc layer 1")
    message = refused(4, signed_ok, bundle, [fact, again], trust_policy)
    assert "needs 2 'vendor' signature(s); valid ones: vendor-release" in message
    # The same key signing twice (two different payload bytes) is still one key.
    resigned = sign(VENDOR, bundle.index.digest, identity="registry.example/mirror/demo")
    refused(4, signed_ok, bundle, [fact, resigned], trust_policy)
    # Two distinct vendor keys meet it.
    both = signed_ok(bundle, [fact, sign(VENDOR_2, bundle.index.digest)], trust_policy)
    assert sorted(s.key_name for s in both.signers) == ["vendor-backup", "vendor-release"]


def test_step2_one_valid_signature_among_bad_ones_counts(bundle: Bundle) -> None:
    junk = [
        sign(STRANGER, bundle.index.digest),
        sign(VENDOR, build_bundle(version="0.1.0").index.digest),
    ]
    signed = signed_ok(bundle, [*junk, sign(VENDOR, bundle.index.digest)])
    assert [s.key_name for s in signed.signers] == ["vendor-release"]


# ----------------------------------------------------------------------- step 3: lock
def test_step3_swapped_image_digest_in_lock_is_refused() -> None:
    honest = build_bundle()
    evil_digest = Digest.of(b"an image the vendor never shipped")
    forged = build_bundle(
        lock_images={API_REF: evil_digest, WEB_REF: honest.images[WEB_REF].digest}
    )
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert API_REF in message and str(evil_digest) in message


def test_step3_added_child_in_index_is_refused() -> None:
    smuggled, _ = _image("smuggled")
    forged = build_bundle(
        extra_entries=[BundleEntry(ROLE_IMAGE, smuggled, image_ref="evil.example/miner:1")]
    )
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert "evil.example/miner:1" in message and str(smuggled.digest) in message


def test_step3_child_without_a_role_in_index_is_refused() -> None:
    smuggled, _ = _image("no-role")
    forged = build_bundle(extra_entries=[BundleEntry("sidecar", smuggled)])
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert str(smuggled.digest) in message


def test_step3_index_pinning_one_reference_twice_is_refused() -> None:
    """The lock lists the api image once; the index pins it twice under its reference."""
    honest = build_bundle()
    again = BundleEntry(ROLE_IMAGE, honest.images[API_REF], image_ref=API_REF)
    forged = build_bundle(extra_entries=[again])
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert f"the index pins image {API_REF} 2 times" in message


def test_step3_index_pinning_one_reference_to_two_images_is_refused() -> None:
    other, _ = _image("another api")
    forged = build_bundle(extra_entries=[BundleEntry(ROLE_IMAGE, other, image_ref=API_REF)])
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert f"the index pins image {API_REF} 2 times" in message


def test_step3_lock_listing_one_reference_twice_is_refused() -> None:
    honest = build_bundle()
    forged = build_bundle(extra_locked=[(WEB_REF, honest.images[WEB_REF].digest)])
    message = refused(3, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert f"the lock lists image {WEB_REF} 2 times" in message


def test_an_index_with_two_charts_is_refused() -> None:
    """Two chart entries are not a bundle: refused at step 1, before the lock is read."""
    honest = build_bundle()
    chart = honest.manifests[BundleView.of(honest.index).chart.digest]
    forged = build_bundle(extra_entries=[BundleEntry(ROLE_CHART, chart)])
    message = refused(1, signed_ok, forged, [sign(VENDOR, forged.index.digest)])
    assert "exactly one chart and one lock (has 2 and 1)" in message


def test_step3_lock_of_another_bundle_is_refused(bundle: Bundle) -> None:
    other = build_bundle(version="2.0.0")
    message = refused(
        3,
        check_signed,
        bundle.index,
        other.lock_manifest,
        other.lock_raw,
        [sign(VENDOR, bundle.index.digest)],
        policy(),
    )
    assert str(other.lock_manifest.digest) in message


def test_step3_lock_bytes_not_matching_their_manifest_are_refused(bundle: Bundle) -> None:
    tampered = bundle.lock_raw.replace(b'"rendered":true', b'"rendered":false')
    message = refused(
        3,
        check_signed,
        bundle.index,
        bundle.lock_manifest,
        tampered,
        [sign(VENDOR, bundle.index.digest)],
        policy(),
    )
    assert "does not match the digest" in message


# --------------------------------------------------------------------- step 4: policy
def test_step4_threshold_not_met(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor", 2),))
    message = refused(
        4,
        signed_ok,
        bundle,
        [sign(VENDOR, bundle.index.digest)],
        policy(rule, keys=TWO_VENDORS_AND_APPROVER),
    )
    assert f"rule {NAME!r} needs 2 'vendor' signature(s)" in message


def test_step4_required_role_missing(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor"), Requirement("approval")))
    trust_policy = policy(rule, keys=TWO_VENDORS_AND_APPROVER)
    message = refused(4, signed_ok, bundle, [sign(VENDOR, bundle.index.digest)], trust_policy)
    assert f"rule {NAME!r} needs 1 'approval' signature(s); valid ones: none" in message
    signed = signed_ok(
        bundle,
        [sign(VENDOR, bundle.index.digest), sign(APPROVER, bundle.index.digest)],
        trust_policy,
    )
    assert sorted(s.role for s in signed.signers) == ["approval", "vendor"]


def test_step4_approval_cannot_stand_in_for_vendor(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor"), Requirement("approval")))
    message = refused(
        4,
        signed_ok,
        bundle,
        [sign(APPROVER, bundle.index.digest)],
        policy(rule, keys=TWO_VENDORS_AND_APPROVER),
    )
    assert "'vendor' signature(s); valid ones: none" in message


def test_step4_version_outside_range(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor"),), VersionRange.parse(">=2.0.0 <3.0.0"))
    message = refused(4, signed_ok, bundle, [sign(VENDOR, bundle.index.digest)], policy(rule))
    assert f"admits versions '>=2.0.0 <3.0.0', not {NAME} {VERSION}" in message


def test_step4_no_rule_for_bundle_name(bundle: Bundle) -> None:
    rule = BundleRule("other-*", (Requirement("vendor"),))
    message = refused(4, signed_ok, bundle, [sign(VENDOR, bundle.index.digest)], policy(rule))
    assert f"no rule for bundle {NAME!r}" in message


def test_step4_first_matching_rule_applies(bundle: Bundle) -> None:
    strict = BundleRule("de*", (Requirement("vendor"), Requirement("approval")))
    loose = BundleRule(NAME, (Requirement("vendor"),))
    message = refused(
        4,
        signed_ok,
        bundle,
        [sign(VENDOR, bundle.index.digest)],
        policy(strict, loose, keys=TWO_VENDORS_AND_APPROVER),
    )
    assert "rule 'de*'" in message


def test_step4_identity_mismatch_when_rule_names_identity(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor"),), identity=IDENTITY)
    elsewhere = sign(VENDOR, bundle.index.digest, identity="evil.example/vendor/demo")
    message = refused(4, signed_ok, bundle, [elsewhere], policy(rule))
    assert "valid ones: none" in message
    # The same key's signature naming the rule's repository (with a tag) counts.
    signed = signed_ok(
        bundle, [sign(VENDOR, bundle.index.digest, identity=IDENTITY + ":1.0.0")], policy(rule)
    )
    assert [s.key_name for s in signed.signers] == ["vendor-release"]


# -------------------------------------------------------------------- step 5: content
@pytest.fixture(scope="module")
def signed(bundle: Bundle) -> SignedBundle:
    return signed_ok(bundle, [sign(VENDOR, bundle.index.digest)])


def _a_layer(bundle: Bundle) -> Digest:
    return bundle.images[API_REF].layers[0].digest


def test_step5_missing_blob(bundle: Bundle, signed: SignedBundle) -> None:
    layer = _a_layer(bundle)
    facts = bundle.facts(
        blobs_ok=frozenset(bundle.blobs) - {layer}, problems={layer: "blob is missing"}
    )
    message = refused(5, check_content, signed, facts)
    assert f"{layer}: blob is missing" in message


def test_step5_blob_never_checked_is_refused(bundle: Bundle, signed: SignedBundle) -> None:
    """No problem reported, but no proof either: unverified is not verified."""
    layer = _a_layer(bundle)
    message = refused(
        5, check_content, signed, bundle.facts(blobs_ok=frozenset(bundle.blobs) - {layer})
    )
    assert f"blob {layer} of {bundle.images[API_REF].digest} was not verified" in message


def test_step5_altered_blob(bundle: Bundle, signed: SignedBundle) -> None:
    layer = _a_layer(bundle)
    facts = bundle.facts(
        blobs_ok=frozenset(bundle.blobs) - {layer},
        problems={layer: f"bytes do not hash to {layer}"},
    )
    message = refused(5, check_content, signed, facts)
    assert str(layer) in message


def test_step5_missing_child_manifest(bundle: Bundle, signed: SignedBundle) -> None:
    image = bundle.images[WEB_REF]
    manifests = {d: m for d, m in bundle.manifests.items() if d != image.digest}
    message = refused(5, check_content, signed, bundle.facts(manifests=manifests))
    assert f"manifest {image.digest} under {bundle.index.digest} is missing" in message


# ------------------------------------------------------------------ step 6: nothing extra
def test_step6_extra_content_is_refused(bundle: Bundle, signed: SignedBundle) -> None:
    extra = tuple(f"blob sha256:{n:064x}" for n in range(7))
    message = refused(6, check_content, signed, bundle.facts(extra=("name evil:1 -> x", *extra)))
    assert "name evil:1 -> x" in message and "and 3 more" in message


# --------------------------------------------------------------- the verified bundle type
def test_verified_bundle_cannot_be_forged(bundle: Bundle, signed: SignedBundle) -> None:
    fields = dict(
        digest=bundle.index.digest,
        name=NAME,
        version=VERSION,
        lock=signed.lock,
        signers=signed.signers,
        rule=NAME,
    )
    for token in (None, object(), trust._Token(), signed._token):
        with pytest.raises(TypeError):
            VerifiedBundle(**fields, _token=token)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            SignedBundle(bundle.index, signed.lock, (), NAME, token)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        signed.rule = "*"  # type: ignore[misc]


@pytest.fixture
def verified(bundle: Bundle, signed: SignedBundle) -> VerifiedBundle:
    return check_content(signed, bundle.facts())


def test_verified_bundle_cannot_be_remade_with_replace(verified: VerifiedBundle) -> None:
    """``replace`` copies the token; a token is good for the one construction it was made for."""
    with pytest.raises(TypeError, match="made by the verification kernel only"):
        replace(verified, name="evil", version="9.9.9")
    with pytest.raises(TypeError, match="made by the verification kernel only"):
        replace(verified)


def test_signed_bundle_cannot_be_remade_with_replace(signed: SignedBundle) -> None:
    with pytest.raises(TypeError, match="made by the verification kernel only"):
        replace(signed, rule="*")


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, pickle.dumps, lambda x: pickle.dumps(x, protocol=0)],
    ids=["copy", "deepcopy", "pickle", "pickle-protocol-0"],
)
def test_kernel_results_cannot_be_copied_or_pickled(
    verified: VerifiedBundle, signed: SignedBundle, duplicate: object
) -> None:
    for result in (verified, signed):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            duplicate(result)  # type: ignore[operator]


def test_the_kernel_still_makes_each_result(bundle: Bundle, signed: SignedBundle) -> None:
    first = check_content(signed, bundle.facts())
    second = check_content(signed, bundle.facts())
    assert first == second and first is not second
    assert first.name == NAME and first.version == VERSION


# ------------------------------------------------------ step 4: what did not count, and why
def test_step4_names_a_valid_signature_the_identity_kept_from_counting(bundle: Bundle) -> None:
    rule = BundleRule(NAME, (Requirement("vendor"),), identity=IDENTITY)
    elsewhere = sign(VENDOR, bundle.index.digest, identity="evil.example/vendor/demo")
    message = refused(4, signed_ok, bundle, [elsewhere], policy(rule))
    assert "needs 1 'vendor' signature(s); valid ones: none; found but not counted: " in message
    assert f"vendor-release (key {VENDOR.public.key_id}, role 'vendor', " in message
    assert "identity evil.example/vendor/demo)" in message
    assert f"the rule counts only identity {IDENTITY}" in message


def test_step4_names_a_valid_signature_whose_key_holds_another_role(bundle: Bundle) -> None:
    """The vendor's key listed as an approver: its signature is valid but is no vendor's."""
    rule = BundleRule(NAME, (Requirement("vendor"),))
    keys = [("release-manager", "approval", VENDOR), ("vendor-backup", "vendor", VENDOR_2)]
    message = refused(
        4, signed_ok, bundle, [sign(VENDOR, bundle.index.digest)], policy(rule, keys=keys)
    )
    assert "needs 1 'vendor' signature(s); valid ones: none; found but not counted: " in message
    assert f"release-manager (key {VENDOR.public.key_id}, role 'approval'" in message
    assert "its key holds role 'approval', not 'vendor'" in message


# ----------------------------------------------------------- approvals: would one count
def approvable(
    bundle: Bundle, trust_policy: TrustPolicy, signatures: Sequence[SignatureFact]
) -> VerifiedBundle:
    """The bundle verified as ``approve`` does first: every rule with its requirements left out."""
    relaxed = replace(trust_policy, rules=tuple(replace(r, require=()) for r in trust_policy.rules))
    return check_content(signed_ok(bundle, signatures, relaxed), bundle.facts())


VENDOR_AND_APPROVAL = BundleRule(NAME, (Requirement("vendor"), Requirement("approval")))


def test_an_approval_by_the_approver_counts(bundle: Bundle) -> None:
    trust_policy = policy(VENDOR_AND_APPROVAL, keys=TWO_VENDORS_AND_APPROVER)
    verified = approvable(bundle, trust_policy, [sign(VENDOR, bundle.index.digest)])
    approver = trust_policy.keys[2]
    assert approval_problem(verified, trust_policy, approver, IDENTITY) is None


def test_an_approval_naming_another_identity_than_the_rule_would_not_count(
    bundle: Bundle,
) -> None:
    rule = replace(VENDOR_AND_APPROVAL, identity=IDENTITY)
    trust_policy = policy(rule, keys=TWO_VENDORS_AND_APPROVER)
    verified = approvable(bundle, trust_policy, [sign(VENDOR, bundle.index.digest)])
    problem = approval_problem(verified, trust_policy, trust_policy.keys[2], "demo")
    assert problem is not None
    assert (
        f"an approval by secops-alice (key {APPROVER.public.key_id}, role 'approval') as demo "
        in problem
    )
    assert f"the rule counts only identity {IDENTITY}" in problem
    assert (
        f"1 'approval' signature(s) by secops-alice (key {APPROVER.public.key_id}), "
        f"as identity {IDENTITY}" in problem
    )
    assert approval_problem(verified, trust_policy, trust_policy.keys[2], IDENTITY) is None


def test_an_approval_by_a_key_of_a_role_the_rule_does_not_require_would_not_count(
    bundle: Bundle,
) -> None:
    keys = [*TWO_VENDORS_AND_APPROVER, ("auditor", "audit", STRANGER)]
    trust_policy = policy(VENDOR_AND_APPROVAL, keys=keys)
    verified = approvable(bundle, trust_policy, [sign(VENDOR, bundle.index.digest)])
    problem = approval_problem(verified, trust_policy, trust_policy.keys[3], IDENTITY)
    assert problem is not None
    assert "the rule requires no 'audit' signature" in problem
    assert f"1 'approval' signature(s) by secops-alice (key {APPROVER.public.key_id})" in problem


def test_an_approval_with_the_vendor_key_would_not_count(bundle: Bundle) -> None:
    trust_policy = policy(VENDOR_AND_APPROVAL, keys=TWO_VENDORS_AND_APPROVER)
    verified = approvable(bundle, trust_policy, [sign(VENDOR, bundle.index.digest)])
    problem = approval_problem(verified, trust_policy, trust_policy.keys[0], IDENTITY)
    assert problem is not None
    assert "vendor-release" in problem and "has signed already and counts once" in problem
    assert (
        f"still needs 1 'approval' signature(s) by secops-alice (key {APPROVER.public.key_id})"
        in problem
    )


def test_an_approval_before_the_vendor_signed_as_the_rule_names_is_refused(
    bundle: Bundle,
) -> None:
    """The vendor's signature is valid but names another repository: it does not count."""
    rule = replace(VENDOR_AND_APPROVAL, identity=IDENTITY)
    trust_policy = policy(rule, keys=TWO_VENDORS_AND_APPROVER)
    elsewhere = sign(VENDOR, bundle.index.digest, identity="evil.example/vendor/demo")
    verified = approvable(bundle, trust_policy, [elsewhere])
    problem = approval_problem(verified, trust_policy, trust_policy.keys[2], IDENTITY)
    assert problem is not None
    assert problem.startswith("rule 'demo' needs 1 'vendor' signature(s) by vendor-release")
    assert "valid ones: none; found but not counted: vendor-release" in problem
    assert "identity evil.example/vendor/demo)" in problem


# ----------------------------------------------------------------------- policy sanity
def _policy_of(keys: Sequence[tuple[str, str, PrivateKey]], *rules: BundleRule) -> TrustPolicy:
    return TrustPolicy(tuple(TrustedKey(n, r, k.public) for n, r, k in keys), rules, "p.yaml")


VENDOR_RULE = BundleRule("*", (Requirement("vendor"),))


@pytest.mark.parametrize(
    ("case", "make", "says"),
    [
        ("no keys", lambda: _policy_of([], VENDOR_RULE), "no keys"),
        ("no rules", lambda: _policy_of([("v", "vendor", VENDOR)]), "no bundle rules"),
        (
            "rule requiring nothing",
            lambda: _policy_of([("v", "vendor", VENDOR)], BundleRule("*", ())),
            "requires no signature",
        ),
        (
            "duplicate key names",
            lambda: _policy_of([("v", "vendor", VENDOR), ("v", "vendor", VENDOR_2)], VENDOR_RULE),
            "key names used twice: v",
        ),
        (
            "same key twice under two names",
            lambda: _policy_of(
                [("v1", "vendor", VENDOR), ("v2", "vendor", VENDOR)],
                BundleRule("*", (Requirement("vendor", 2),)),
            ),
            "are the same key",
        ),
        (
            "same key in two roles",
            lambda: _policy_of(
                [("v", "vendor", VENDOR), ("a", "approval", VENDOR)],
                BundleRule("*", (Requirement("vendor"), Requirement("approval"))),
            ),
            "are the same key",
        ),
        (
            "threshold above the keys of the role",
            lambda: _policy_of(
                [("v", "vendor", VENDOR), ("a", "approval", APPROVER)],
                BundleRule("*", (Requirement("vendor", 2),)),
            ),
            "needs 2 'vendor' signature(s) but the policy trusts 1",
        ),
        (
            "role nobody holds",
            lambda: _policy_of(
                [("v", "vendor", VENDOR)], BundleRule("*", (Requirement("approval"),))
            ),
            "trusts 0 'approval' key(s)",
        ),
        (
            "threshold zero",
            lambda: _policy_of(
                [("v", "vendor", VENDOR)], BundleRule("*", (Requirement("vendor", 0),))
            ),
            "threshold must be at least 1",
        ),
        (
            "role named twice",
            lambda: _policy_of(
                [("v", "vendor", VENDOR), ("w", "vendor", VENDOR_2)],
                BundleRule("*", (Requirement("vendor"), Requirement("vendor"))),
            ),
            "names role 'vendor' twice",
        ),
    ],
)
def test_empty_or_contradictory_policy_is_refused(case: str, make: object, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_policy(make())  # type: ignore[operator]
    assert says in str(caught.value), case
    assert str(caught.value).startswith("p.yaml: ")


def test_sound_policy_is_accepted() -> None:
    check_policy(
        _policy_of(
            TWO_VENDORS_AND_APPROVER,
            BundleRule("demo", (Requirement("vendor", 2), Requirement("approval"))),
            VENDOR_RULE,
        )
    )


# ------------------------------------------------------------------ policy files (YAML)
def _write_pub(path: Path, key: PrivateKey) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.public.pem)
    return path


def _policy_yaml(keys: str, bundles: str) -> str:
    return f"apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n{keys}bundles:\n{bundles}"


KEYS_YAML = "  - name: vendor-release\n    role: vendor\n    path: ../keys/vendor.pub\n"
RULE_YAML = "  - name: demo\n    require:\n      - role: vendor\n"


def test_policy_file_key_paths_are_relative_to_the_policy(tmp_path: Path) -> None:
    _write_pub(tmp_path / "keys" / "vendor.pub", VENDOR)
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "trust.yaml"
    inline = "".join(f"      {line}\n" for line in APPROVER.public.pem.decode().splitlines())
    path.write_text(
        _policy_yaml(
            KEYS_YAML + f"  - name: alice\n    role: approval\n    pem: |\n{inline}",
            "  - name: demo\n    versions: '>=1.0.0 <2.0.0'\n    identity: registry.example/x\n"
            "    require:\n      - role: vendor\n      - role: approval\n        threshold: 1\n",
        )
    )
    loaded = load_trust_policy(path)
    assert [(k.name, k.role, k.key.key_id) for k in loaded.keys] == [
        ("vendor-release", "vendor", VENDOR.public.key_id),
        ("alice", "approval", APPROVER.public.key_id),
    ]
    rule = loaded.rules[0]
    assert [(r.role, r.threshold) for r in rule.require] == [("vendor", 1), ("approval", 1)]
    assert rule.identity == "registry.example/x"
    assert rule.versions is not None and rule.versions.admits("1.4.0")
    assert not rule.versions.admits("2.0.0")
    assert str(path) in loaded.origin


def test_policy_file_key_path_is_not_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_pub(tmp_path / "keys" / "vendor.pub", VENDOR)  # only reachable from cwd
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "trust.yaml"
    path.write_text(_policy_yaml(KEYS_YAML.replace("../keys/", "keys/"), RULE_YAML))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFoundError) as caught:
        load_trust_policy(path)
    assert "vendor-release" in str(caught.value)
    assert str(tmp_path / "policies" / "keys" / "vendor.pub") in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "bundles", "field"),
    [
        (
            "  - name: vendor-release\n    path: ../keys/vendor.pub\n",
            RULE_YAML,
            "keys[0]: 'role' is a required property",
        ),
        (
            KEYS_YAML,
            "  - name: demo\n    require:\n      - role: vendor\n        threshold: 0\n",
            "bundles[0].require[0].threshold",
        ),
        (KEYS_YAML, "  - name: demo\n    require: []\n", "bundles[0].require"),
        (KEYS_YAML + "    trust: everything\n", RULE_YAML, "keys[0]"),
        (
            "  - name: vendor-release\n    role: Vendor\n    path: ../keys/vendor.pub\n",
            RULE_YAML,
            "keys[0].role",
        ),
        ("  - name: vendor-release\n    role: vendor\n", RULE_YAML, "keys[0]"),
        ("  []\n", RULE_YAML, "keys"),
        (KEYS_YAML, "  []\n", "bundles"),
    ],
)
def test_policy_file_schema_error_names_the_field(
    tmp_path: Path, keys: str, bundles: str, field: str
) -> None:
    _write_pub(tmp_path / "keys" / "vendor.pub", VENDOR)
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "trust.yaml"
    path.write_text(_policy_yaml(keys, bundles))
    with pytest.raises(ConfigError) as caught:
        load_trust_policy(path)
    assert str(caught.value).startswith(f"trust policy {path}: {field}"), str(caught.value)


def test_policy_file_listing_one_key_twice_is_refused(tmp_path: Path) -> None:
    _write_pub(tmp_path / "keys" / "vendor.pub", VENDOR)
    _write_pub(tmp_path / "keys" / "copy.pub", VENDOR)
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "trust.yaml"
    path.write_text(
        _policy_yaml(
            KEYS_YAML + "  - name: vendor-copy\n    role: vendor\n    path: ../keys/copy.pub\n",
            "  - name: demo\n    require:\n      - role: vendor\n        threshold: 2\n",
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_trust_policy(path)
    assert "'vendor-release' and 'vendor-copy' are the same key" in str(caught.value)


@pytest.mark.parametrize("text", ["", "[]\n", "keys: [\n", "apiVersion: bundler.dev/v2\n"])
def test_empty_or_malformed_policy_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_trust_policy(path)
    assert str(path) in str(caught.value)


def test_missing_policy_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_trust_policy(tmp_path / "absent.yaml")


def test_version_range_reads_versions_as_helm_does() -> None:
    versions = VersionRange.parse(">=v1.2 <2")
    assert versions.admits("v1.21.1")
    assert versions.admits("1.2")
    assert versions.admits("01.3.0")
    assert not versions.admits("2")
    assert not versions.admits("v1.1.9")
    assert not versions.admits("1.2.3.4")  # Helm refuses it as a version
    with pytest.raises(ConfigError, match="is not SemVer"):
        VersionRange.parse(">=1.2.3-01")
