"""Trust policies: which keys are trusted in which roles, and what each bundle needs.

Pure data and pure checks. Loading (YAML, schema, key files) is in
``bundler.adapters.trustpolicy``; deciding is in ``bundler.services.trust``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import semver

from bundler.errors import ConfigError
from bundler.model.certified import TrustedAuthority
from bundler.model.chartversion import parse_chart_version
from bundler.model.signature import Verifier

# A version as Helm reads chart versions (``v1.2``, ``1``, ``1.2.3-rc.1+b``), see chartversion.
_COMPARATOR = re.compile(r"^(>=|<=|==|!=|>|<|=)?(v?\d+(?:\.\d+){0,2}(?:[-+][0-9A-Za-z.+-]*)?)$")


@dataclass(frozen=True)
class TrustedKey:
    """A key the policy trusts, under a unique ``name``, in one ``role`` (signer, release, ...)."""

    name: str
    role: str
    key: Verifier


@dataclass(frozen=True)
class Requirement:
    """A rule's demand: ``threshold`` good signatures by distinct keys of ``role``."""

    role: str
    threshold: int = 1


@dataclass(frozen=True)
class VersionRange:
    """Space-separated SemVer comparators (``>=1.2.0 <2.0.0``), all of which must hold."""

    text: str
    comparators: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parse a range (a bare version means ``==``); ConfigError if empty or not SemVer."""
        comparators: list[tuple[str, str]] = []
        for token in text.split():
            match = _COMPARATOR.match(token)
            if not match:
                raise ConfigError(f"version range {text!r}: {token!r} is not a comparator")
            op = match.group(1) or "=="
            op = "==" if op == "=" else op
            try:
                parse_chart_version(match.group(2))
            except ValueError:
                raise ConfigError(
                    f"version range {text!r}: {match.group(2)!r} is not SemVer"
                ) from None
            comparators.append((op, match.group(2)))
        if not comparators:
            raise ConfigError(f"version range {text!r} is empty")
        return cls(text, tuple(comparators))

    def admits(self, version: str) -> bool:
        """True when ``version`` is SemVer and satisfies every comparator.

        Two rules beyond plain SemVer precedence. ``==V`` and ``!=V`` compare build metadata
        too (``==1.0.0`` admits neither ``1.0.0+evil`` nor ``1.0.0+b1``); ordering comparators
        ignore it, as SemVer does. A prerelease is admitted only when some comparator names the
        same major.minor.patch with a prerelease (node-semver's rule): ``>=1.0.0 <2.0.0`` does
        not admit ``2.0.0-rc.1``, ``>=2.0.0-rc.1`` admits ``2.0.0-rc.2``.
        """
        try:
            parsed = parse_chart_version(version)
        except ValueError:
            return False
        bounds = [(op, parse_chart_version(bound)) for op, bound in self.comparators]
        if parsed.prerelease and not any(
            b.prerelease and b.finalize_version() == parsed.finalize_version() for _, b in bounds
        ):
            return False
        return all(_holds(parsed, op, bound) for op, bound in bounds)


def _holds(version: semver.Version, op: str, bound: semver.Version) -> bool:
    order = version.compare(bound)  # SemVer precedence: build metadata does not count
    if op in ("==", "!="):
        same = order == 0 and version.build == bound.build
        return same if op == "==" else not same
    return {">": order > 0, ">=": order >= 0, "<": order < 0, "<=": order <= 0}[op]


@dataclass(frozen=True)
class BundleRule:
    """What a bundle whose name matches ``name`` (a glob) needs: signatures, versions, identity."""

    name: str  # a bundle name or a glob
    require: tuple[Requirement, ...]
    versions: VersionRange | None = None
    identity: str | None = None
    # Signatures every image of the bundle must carry itself (upstream signatures, which pack
    # carries along): e.g. each image signed keyless by the vendor's CI.
    images: tuple[Requirement, ...] = ()

    def matches(self, bundle_name: str) -> bool:
        """True when ``bundle_name`` matches this rule's name or glob (case-sensitive)."""
        return fnmatch.fnmatchcase(bundle_name, self.name)


@dataclass(frozen=True)
class TrustPolicy:
    """The trusted keys and the bundle rules; ``origin`` names the source in error messages."""

    keys: tuple[TrustedKey, ...]
    rules: tuple[BundleRule, ...]
    origin: str = "policy"
    authorities: tuple[TrustedAuthority, ...] = ()  # CAs trusted for certified signatures

    def rule_for(self, bundle_name: str) -> BundleRule | None:
        """The first rule matching ``bundle_name``, in policy order, or None if none matches."""
        return next((r for r in self.rules if r.matches(bundle_name)), None)

    def roles(self) -> dict[str, list[TrustedKey]]:
        """The trusted keys grouped by role, each group in policy order."""
        out: dict[str, list[TrustedKey]] = {}
        for key in self.keys:
            out.setdefault(key.role, []).append(key)
        return out

    def signers_of(self, role: str) -> int:
        """How many distinct signers ``role`` can have: its keys, its authorities' identities."""
        keys = sum(1 for k in self.keys if k.role == role)
        return keys + sum(len(a.identities) for a in self.authorities if a.role == role)


# Complexity kept: one refusal per way a policy can be empty, ambiguous or unsatisfiable, in order.
def check_policy(policy: TrustPolicy) -> None:  # noqa: C901
    """Refuse empty, ambiguous and unsatisfiable policies instead of reading them loosely."""
    where = policy.origin
    if not policy.keys and not policy.authorities:
        raise ConfigError(f"{where}: no keys; a policy that trusts nobody accepts nothing")
    if not policy.rules:
        raise ConfigError(f"{where}: no bundle rules; every bundle would be refused")
    names = [k.name for k in policy.keys] + [a.name for a in policy.authorities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: key names used twice: {', '.join(duplicates)}")
    for authority in policy.authorities:
        if not authority.identities:
            raise ConfigError(
                f"{where}: authority {authority.name!r} names no identity; a CA certifies "
                "many, so say which (email, hostname or uri)"
            )
        if authority.oidc_issuer is not None and authority.rekor is None:
            raise ConfigError(
                f"{where}: authority {authority.name!r} is keyless (an OIDC issuer) but names "
                "no Rekor key; its certificates live for minutes and need the log's time"
            )
    by_id: dict[str, TrustedKey] = {}
    for key in policy.keys:
        other = by_id.get(key.key.key_id)
        if other is not None:
            raise ConfigError(
                f"{where}: keys {other.name!r} and {key.name!r} are the same key "
                f"({key.key.key_id}); one key counts once"
            )
        by_id[key.key.key_id] = key
    rule_names = [r.name for r in policy.rules]
    twice = sorted({n for n in rule_names if rule_names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"{where}: bundle rules named twice: {', '.join(twice)}; only the first would apply, "
            "so merge them into one rule"
        )
    for rule in policy.rules:
        if not rule.require:
            raise ConfigError(f"{where}: rule {rule.name!r} requires no signature")
        seen: set[str] = set()
        for req in rule.images:
            if policy.signers_of(req.role) < req.threshold:
                raise ConfigError(
                    f"{where}: rule {rule.name!r} needs {req.threshold} {req.role!r} "
                    f"signature(s) on every image but the policy trusts "
                    f"{policy.signers_of(req.role)} {req.role!r} signer(s)"
                )
        for req in rule.require:
            if req.role in seen:
                raise ConfigError(f"{where}: rule {rule.name!r} names role {req.role!r} twice")
            seen.add(req.role)
            have = policy.signers_of(req.role)
            if req.threshold < 1:
                raise ConfigError(f"{where}: rule {rule.name!r}: threshold must be at least 1")
            if have < req.threshold:
                raise ConfigError(
                    f"{where}: rule {rule.name!r} needs {req.threshold} {req.role!r} "
                    f"signature(s) but the policy trusts {have} {req.role!r} key(s)"
                )


def single_key_policy(key: Verifier, name: str = "key") -> TrustPolicy:
    """``--key PUB``: one trusted key, required for every bundle."""
    return TrustPolicy(
        keys=(TrustedKey(name, "signer", key),),
        rules=(BundleRule("*", (Requirement("signer", 1),)),),
        origin=f"--key {name}",
    )
