"""Certificate-based cosign signatures (keyless Fulcio + Rekor, a private PKI), checked offline
by the verification kernel: every case of the vectors' cases-x509.json gets its verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cosign_vectors import VECTORS, read_dir_signature

from bundler.adapters.crypto import load_public_key
from bundler.adapters.x509 import X509Authority, load_certificates
from bundler.model.certified import (
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    REKOR_BUNDLE_ANNOTATION,
    Identity,
    TrustedAuthority,
)
from bundler.model.digest import Digest
from bundler.model.policy import BundleRule, Requirement, TrustPolicy, check_policy
from bundler.model.signature import SIGNATURE_ANNOTATION, parse_payload, same_repository
from bundler.services.trust import SignatureFact, _accepting_key, signature_trusted

CASES = json.loads((VECTORS / "cases-x509.json").read_text())


def _resolved(kind: str) -> list[Any]:
    by_name = {c["name"]: c for c in CASES[kind]}
    out = []
    for case in CASES[kind]:
        merged = {**by_name[case["base"]], **case} if "base" in case else dict(case)
        out.append(pytest.param(merged, id=case["name"]))
    return out


def _fact(case: dict[str, Any]) -> tuple[SignatureFact, Digest]:
    media_type, payload, annotations = read_dir_signature(VECTORS / case["signature"])
    mutation = case.get("mutation")
    if mutation is not None and "drop" in mutation:
        annotations.pop(mutation["drop"], None)
    if mutation is not None and "replace" in mutation:
        annotations[mutation["replace"]] = mutation["with"]
    fact = SignatureFact(
        media_type,
        payload,
        annotations.get(SIGNATURE_ANNOTATION, ""),
        case["name"],
        certificate=annotations.get(CERTIFICATE_ANNOTATION),
        chain=annotations.get(CHAIN_ANNOTATION),
        rekor_bundle=annotations.get(REKOR_BUNDLE_ANNOTATION),
    )
    return fact, Digest.of((VECTORS / case["manifest"]).read_bytes())


def _certs(path: str | None) -> list[Any]:
    return [] if path is None else load_certificates((VECTORS / path).read_bytes(), path)


def _policy(authority: TrustedAuthority) -> TrustPolicy:
    policy = TrustPolicy(
        (), (BundleRule("*", (Requirement(authority.role),)),), "x509 vectors", (authority,)
    )
    check_policy(policy)
    return policy


def _judge(case: dict[str, Any], authority: TrustedAuthority) -> None:
    fact, digest = _fact(case)
    policy = _policy(authority)
    accepted = signature_trusted(digest, fact, policy)
    if case["expect"] == "accept":
        assert accepted, _accepting_key(fact, policy, digest)[1]
        claimed = parse_payload(fact.payload).identity
        assert same_repository(claimed, case["expected_repository"])
    else:
        assert case["expect"] == "reject"
        assert not accepted


@pytest.mark.parametrize("case", _resolved("fulcio_cases"))
def test_keyless_vector(case: dict[str, Any]) -> None:
    rekor = load_public_key((VECTORS / case["rekor_public_key"]).read_bytes(), "rekor")
    authority = TrustedAuthority(
        "sigstore",
        "vendor",
        X509Authority(_certs(case["fulcio_ca"])),
        (Identity(email=case["subject_email"]),),
        oidc_issuer=case["oidc_issuer"],
        rekor=rekor,
    )
    _judge(case, authority)


@pytest.mark.parametrize("case", _resolved("pki_cases"))
def test_pki_vector(case: dict[str, Any]) -> None:
    authority = TrustedAuthority(
        "corp",
        "vendor",
        X509Authority(_certs(case["ca_roots"]), _certs(case.get("ca_intermediates"))),
        (Identity(email=case["subject_email"], hostname=case.get("subject_hostname")),),
    )
    _judge(case, authority)


def test_keyless_intermediate_given_as_the_trusted_ca_needs_no_chain() -> None:
    """The note of fulcio-without-chain: accepted when the intermediate itself is trusted."""
    [valid] = [c.values[0] for c in _resolved("fulcio_cases") if c.id == "fulcio-rekor-valid"]
    case = {**valid, "mutation": {"drop": CHAIN_ANNOTATION}}
    chain = _fact(valid)[0].chain
    assert chain is not None
    intermediate = load_certificates(chain.encode(), "chain")[:1]
    rekor = load_public_key((VECTORS / valid["rekor_public_key"]).read_bytes(), "rekor")
    authority = TrustedAuthority(
        "sigstore",
        "vendor",
        X509Authority(intermediate),
        (Identity(email=valid["subject_email"]),),
        oidc_issuer=valid["oidc_issuer"],
        rekor=rekor,
    )
    _judge({**case, "expect": "accept"}, authority)


def test_the_keyless_certificate_is_checked_at_the_logged_time_not_now() -> None:
    """The certificate lived ten minutes in January 2023: without the Rekor key (so no logged
    time) the same authority refuses it as expired."""
    [valid] = [c.values[0] for c in _resolved("fulcio_cases") if c.id == "fulcio-rekor-valid"]
    fact, digest = _fact(valid)
    authority = TrustedAuthority(
        "sigstore-without-rekor",
        "vendor",
        X509Authority(_certs(valid["fulcio_ca"])),
        (Identity(email=valid["subject_email"]),),
    )
    accepted, why = _accepting_key(fact, _policy(authority), digest)
    assert accepted is None and "not at" in why and "2023-01-20" in why


def test_a_certified_signer_is_named_by_its_authority_and_identity() -> None:
    [valid] = [c.values[0] for c in _resolved("pki_cases") if c.id == "pki-valid"]
    fact, digest = _fact(valid)
    authority = TrustedAuthority(
        "corp",
        "vendor",
        X509Authority(_certs(valid["ca_roots"]), _certs(valid["ca_intermediates"])),
        (Identity(email="*@redhat.com"),),
    )
    accepted, _ = _accepting_key(fact, _policy(authority), digest)
    assert accepted is not None
    assert (accepted.name, accepted.role) == ("corp:qiwan@redhat.com", "vendor")
    assert accepted.key_id.startswith("sha256:")


def test_paths_stay_inside_the_vectors_folder() -> None:
    for kind in ("fulcio_cases", "pki_cases"):
        for case in CASES[kind]:
            for key in ("manifest", "signature", "fulcio_ca", "ca_roots", "ca_intermediates"):
                if case.get(key):
                    assert (VECTORS / case[key]).resolve().is_relative_to(VECTORS.resolve())
            assert Path(case.get("signature", "x")).parts[0] != ".."


KEYLESS_POLICY = """apiVersion: bundler.dev/v1
kind: TrustPolicy
authorities:
  - name: upstream-ci
    role: vendor
    roots: {vectors}/containers-image-x509/fulcio_v1.crt.pem
    oidcIssuer: {issuer}
    {rekor}
    identities:
      - email: {email}
bundles:
  - name: "*"
    require:
      - role: vendor
"""


def _keyless_policy_file(tmp_path: Path, *, rekor: bool = True, email: str = "") -> Path:
    [valid] = [c.values[0] for c in _resolved("fulcio_cases") if c.id == "fulcio-rekor-valid"]
    path = tmp_path / "policy.yaml"
    path.write_text(
        KEYLESS_POLICY.format(
            vectors=VECTORS,
            issuer=valid["oidc_issuer"],
            email=email or valid["subject_email"],
            rekor=f"rekorKey: {VECTORS}/containers-image-x509/rekor.pub" if rekor else "",
        )
    )
    return path


def test_a_policy_file_trusting_fulcio_rekor_and_an_identity_accepts_the_keyless_vector(
    tmp_path: Path,
) -> None:
    from bundler.adapters.trustpolicy import load_trust_policy

    [valid] = [c.values[0] for c in _resolved("fulcio_cases") if c.id == "fulcio-rekor-valid"]
    fact, digest = _fact(valid)
    assert signature_trusted(digest, fact, load_trust_policy(_keyless_policy_file(tmp_path)))
    other = load_trust_policy(_keyless_policy_file(tmp_path, email="someone@example.com"))
    assert not signature_trusted(digest, fact, other)


def test_a_keyless_authority_without_the_rekor_key_is_refused_when_the_policy_loads(
    tmp_path: Path,
) -> None:
    from bundler.adapters.trustpolicy import load_trust_policy
    from bundler.errors import ConfigError

    with pytest.raises(ConfigError, match="names no Rekor key"):
        load_trust_policy(_keyless_policy_file(tmp_path, rekor=False))
