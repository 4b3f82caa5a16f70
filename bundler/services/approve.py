"""``bundler approve``: verify a bundle, then add an approver's signature that counts.

Every step passes first with the policy's signature requirements left out (approvals are what
is being collected); the kernel then judges whether the approver's signature would count
toward the bundle's rule (its role, the identity the rule names, a key not counted already)
before anything is signed. The signature names exactly the digest that was verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.adapters.crypto import SigningKey
from bundler.errors import UsageError, VerificationError
from bundler.model.policy import TrustedKey, TrustPolicy
from bundler.services.copy import Progress
from bundler.services.sign import SignResult, default_identity, sign
from bundler.services.transports import Location, Transports
from bundler.services.trust import approval_policy, check_approval
from bundler.services.verify import (
    VerifyReport,
    check_signatures,
    open_for_verification,
    verify,
)


@dataclass(frozen=True)
class ApprovalResult:
    """The verification an approval rests on, the approver, and what was signed."""

    verification: VerifyReport  # every step, with the policy's signature requirements left out
    approver: TrustedKey
    approval: SignResult
    still_needed: str | None = None  # what the full policy lacks after this approval, if any

    @property
    def already(self) -> bool:
        """True when the approval was there already (nothing was written)."""
        return not self.approval.signed

    def to_json(self) -> dict[str, Any]:
        """The ``approve --output json`` document: the verification and the approval.

        ``verification`` ran with the signature requirements left out (approvals are what is
        being collected); ``policyMet`` says whether the full policy's signatures are met now.
        """
        return {
            "verification": {**self.verification.to_json(), "signatureRequirements": False},
            "approval": self.approval.to_json(),
            "policyMet": self.still_needed is None,
            "stillNeeded": self.still_needed,
        }


def approver_of(policy: TrustPolicy, key: SigningKey) -> TrustedKey:
    """The policy's entry for ``key``.

    UsageError when the policy does not trust it, or asks only for this key's role (there is
    nothing to verify before approving).
    """
    mine = [k for k in policy.keys if k.key.key_id == key.public.key_id]
    if not mine:
        raise UsageError(
            f"key {key.public.key_id} is not a key the policy trusts ({policy.origin}); "
            "it cannot approve"
        )
    role = mine[0].role
    if all(r.role == role for rule in policy.rules for r in rule.require):
        raise UsageError(f"the policy asks only for {role!r} signatures: nothing to verify first")
    return mine[0]


def approve(
    location: Location,
    key: SigningKey,
    policy: TrustPolicy,
    transports: Transports,
    *,
    identity: str | None = None,
    parallel: int = 4,
    progress: Progress | None = None,
) -> ApprovalResult:
    """Verify the bundle at ``location`` under ``policy``, then sign it with ``key``.

    VerificationError (step 4, before anything is written) when the signature would not count.
    """
    approver = approver_of(policy, key)
    with open_for_verification(transports, location) as source:
        report = verify(
            source, approval_policy(policy), parallel=parallel, bundles_only=True, progress=progress
        )
        if report.error is not None:
            raise report.error
        assert report.bundle is not None
        claim = identity or default_identity(
            location, source, source.fetch_manifest(source.resolve())
        )
    check_approval(report.bundle, policy, approver, claim)
    signed = sign(
        location,
        key,
        transports,
        recursive=False,
        identity=identity,
        expected=report.bundle.digest,
    )
    return ApprovalResult(report, approver, signed, _still_needed(location, policy, transports))


def _still_needed(location: Location, policy: TrustPolicy, transports: Transports) -> str | None:
    """Steps 1 to 4 under the whole policy, now: None when met, else what is still needed."""
    with open_for_verification(transports, location) as source:
        try:
            check_signatures(source, policy)
        except VerificationError as error:
            return str(error)
    return None
