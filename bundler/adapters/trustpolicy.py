"""Trust policy files: YAML, checked against schemas/trust-policy.schema.json, keys loaded."""

from __future__ import annotations

from pathlib import Path

from bundler.adapters.bundleconfig import load_checked_yaml
from bundler.adapters.crypto import load_public_key, read_key_file
from bundler.errors import ConfigError, KeyFileError, NotFoundError
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
    for entry in doc["keys"]:
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
        )
        for rule in doc["bundles"]
    )
    policy = TrustPolicy(tuple(keys), rules, origin=f"trust policy {path}")
    check_policy(policy)
    return policy
