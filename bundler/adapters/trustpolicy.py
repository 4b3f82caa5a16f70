"""Trust policy files: YAML, checked against schemas/trust-policy.schema.json, keys loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundler.adapters.bundleconfig import load_checked_yaml
from bundler.adapters.crypto import load_public_key, read_key_file
from bundler.errors import ConfigError, KeyFileError, NotFoundError
from bundler.model.certified import Identity, TrustedAuthority
from bundler.model.policy import (
    BundleRule,
    Requirement,
    TrustedKey,
    TrustPolicy,
    VersionRange,
    check_policy,
)

MAX_KEY_BYTES = 64 * 1024


def load_trust_policy(path: Path) -> TrustPolicy:
    """Read and check a trust policy file; key paths in it are relative to the policy's directory.

    ConfigError for an invalid or unsatisfiable policy or an unreadable key file, KeyFileError for a
    key that does not load.
    """
    doc = load_checked_yaml(path, "trust policy", "trust-policy.schema.json")
    keys: list[TrustedKey] = []
    for entry in doc.get("keys", []):
        if "pem" in entry:
            pem, origin = entry["pem"].encode(), f"{path} key {entry['name']}"
        else:
            key_path = path.parent / entry["path"]
            origin = str(key_path)
            try:
                pem = read_key_file(key_path, MAX_KEY_BYTES)  # regular file, bounded
            except FileNotFoundError:
                raise NotFoundError(
                    f"trust policy {path}: key {entry['name']!r}: {key_path} does not exist"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"trust policy {path}: key {entry['name']!r}: cannot read {key_path}: "
                    f"{exc.strerror}"
                ) from None
            if len(pem) > MAX_KEY_BYTES:
                raise KeyFileError(f"{key_path} is too large to be a public key")
        keys.append(TrustedKey(entry["name"], entry["role"], load_public_key(pem, origin)))
    rules = tuple(
        BundleRule(
            name=rule["name"],
            require=tuple(
                Requirement(r["role"], int(r.get("threshold", 1))) for r in rule["require"]
            ),
            versions=VersionRange.parse(rule["versions"]) if "versions" in rule else None,
            identity=rule.get("identity"),
            images=tuple(
                Requirement(r["role"], int(r.get("threshold", 1)))
                for r in rule.get("images", {}).get("require", [])
            ),
        )
        for rule in doc["bundles"]
    )
    authorities = tuple(_authority(path, entry) for entry in doc.get("authorities", []))
    policy = TrustPolicy(tuple(keys), rules, origin=f"trust policy {path}", authorities=authorities)
    check_policy(policy)
    return policy


def _authority(path: Path, entry: dict[str, Any]) -> TrustedAuthority:
    """One ``authorities`` entry: its CA files and Rekor key read (relative to the policy)."""
    from bundler.adapters.x509 import X509Authority, read_ca_file

    what = f"trust policy {path}: authority {entry['name']!r}"
    roots = read_ca_file(path.parent / entry["roots"], what)
    intermediates = (
        read_ca_file(path.parent / entry["intermediates"], what) if "intermediates" in entry else []
    )
    rekor = None
    if "rekorKey" in entry:
        key_path = path.parent / entry["rekorKey"]
        try:
            rekor = load_public_key(read_key_file(key_path, MAX_KEY_BYTES), str(key_path))
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {key_path}: {exc.strerror}") from None
    identities = tuple(
        Identity(email=i.get("email"), hostname=i.get("hostname"), uri=i.get("uri"))
        for i in entry["identities"]
    )
    return TrustedAuthority(
        entry["name"],
        entry["role"],
        X509Authority(roots, intermediates),
        identities,
        oidc_issuer=entry.get("oidcIssuer"),
        rekor=rekor,
        origin=what,
    )
