"""Trust policy files: YAML, checked against schemas/trust-policy.schema.json, keys loaded."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from bundler.adapters.bundleconfig import load_schema
from bundler.adapters.crypto import load_public_key
from bundler.errors import ConfigError, KeyFileError
from bundler.model.policy import (
    BundleRule,
    Requirement,
    TrustedKey,
    TrustPolicy,
    VersionRange,
    check_policy,
)

MAX_POLICY_BYTES = 1024 * 1024
MAX_KEY_BYTES = 64 * 1024


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def load_trust_policy(path: Path) -> TrustPolicy:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"trust policy {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read trust policy {path}: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(f"trust policy {path} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"trust policy {path} is not valid YAML") from None
    validator = jsonschema.Draft202012Validator(load_schema("trust-policy.schema.json"))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"trust policy {path}: {_where(errors[0])}: {errors[0].message}")
    keys: list[TrustedKey] = []
    for entry in doc["keys"]:
        if "pem" in entry:
            pem, origin = entry["pem"].encode(), f"{path} key {entry['name']}"
        else:
            key_path = path.parent / entry["path"]
            origin = str(key_path)
            try:
                pem = key_path.read_bytes()[: MAX_KEY_BYTES + 1]
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
