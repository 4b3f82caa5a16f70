"""``approve`` as a service: verify with approvals aside, refuse what would not count, sign, and
say whether the whole policy is met now."""

from __future__ import annotations

import pytest
from memory_bundles import APPROVER, STRANGER, VENDOR, build_bundle, sign_bundle, transports

from bundler.adapters.crypto import generate_key
from bundler.adapters.memory import MemoryStore
from bundler.errors import UsageError, VerificationError
from bundler.model.policy import BundleRule, Requirement, TrustedKey, TrustPolicy
from bundler.services.approve import approve
from bundler.services.verify import verify

SECOND = generate_key("ecdsa-p256")


def two_approvals() -> TrustPolicy:
    """The vendor and two distinct approvers must sign ``demo``."""
    return TrustPolicy(
        keys=(
            TrustedKey("vendor-release", "vendor", VENDOR.public),
            TrustedKey("secops", "approval", APPROVER.public),
            TrustedKey("secops-2", "approval", SECOND.public),
        ),
        rules=(BundleRule("demo", (Requirement("vendor"), Requirement("approval", 2))),),
        origin="two approvals",
    )


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {}


def test_approvals_are_counted_until_the_policy_is_met(stores: dict[str, MemoryStore]) -> None:
    bundle = build_bundle(stores)
    sign_bundle(stores, bundle)
    policy = two_approvals()
    first = approve(bundle.location, APPROVER, policy, transports(stores))
    assert first.approver.name == "secops" and not first.already
    assert first.still_needed is not None and "needs 2 'approval'" in first.still_needed
    doc = first.to_json()
    assert doc["policyMet"] is False and doc["verification"]["signatureRequirements"] is False
    assert verify(bundle.store.source(bundle.tag), policy).error is not None
    second = approve(bundle.location, SECOND, policy, transports(stores))
    assert second.still_needed is None and second.to_json()["policyMet"] is True
    assert verify(bundle.store.source(bundle.tag), policy).bundle is not None
    again = approve(bundle.location, SECOND, policy, transports(stores))
    assert again.already  # signing again writes nothing


def test_a_key_the_policy_does_not_trust_cannot_approve(stores: dict[str, MemoryStore]) -> None:
    bundle = build_bundle(stores)
    sign_bundle(stores, bundle)
    with pytest.raises(UsageError, match="is not a key the policy trusts"):
        approve(bundle.location, STRANGER, two_approvals(), transports(stores))


def test_approving_before_the_vendor_signed_is_refused_and_writes_nothing(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = build_bundle(stores)  # not signed by the vendor
    before = set(bundle.store.blob_names())
    with pytest.raises(VerificationError) as refused:
        approve(bundle.location, APPROVER, two_approvals(), transports(stores))
    assert refused.value.step == 2 and "not signed" in str(refused.value)
    assert set(bundle.store.blob_names()) == before
