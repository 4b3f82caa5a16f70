"""Signing writes cosign's .sig tag everywhere, and also an OCI 1.1 referrer where the registry
has the referrers API (checked against the in-memory registry; distribution 2.8 has none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_registry import HOST, FakeRegistry, make_client

from bundler.adapters.crypto import generate_key
from bundler.model import mediatypes as mt
from bundler.model.bundle import EMPTY_DESCRIPTOR, EMPTY_JSON, canonical_json
from bundler.model.digest import Digest
from bundler.model.signature import COSIGN_SIGNATURE_ARTIFACT_TYPE, cosign_signature_tag
from bundler.services.sign import sign
from bundler.services.signatures import signature_facts
from bundler.services.transports import Transports, parse_location

REPO = "vendor/app"


def _registry_with_image(fake: FakeRegistry) -> Digest:
    fake.put_blob(REPO, EMPTY_JSON)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": EMPTY_DESCRIPTOR.to_json(),
            "layers": [],
        }
    )
    return Digest.parse(fake.put_manifest(REPO, "1.0.0", manifest, mt.OCI_MANIFEST))


@pytest.mark.parametrize("referrers_api", [True, False], ids=["with-api", "without-api"])
def test_signature_lands_under_the_sig_tag_and_as_a_referrer_only_with_the_api(
    tmp_path: Path, referrers_api: bool
) -> None:
    fake = FakeRegistry(referrers_api=referrers_api)
    digest = _registry_with_image(fake)
    transports = Transports(use_blob_cache=False)
    transports._clients[HOST] = make_client(fake, config_dir=tmp_path)
    key = generate_key()
    sign(parse_location(f"{HOST}/{REPO}:1.0.0"), key, transports)
    tagged = fake.manifests.get((REPO, cosign_signature_tag(digest)))
    assert tagged is not None
    referrers = [
        json.loads(raw)
        for (repo, ref), (raw, _) in fake.manifests.items()
        if repo == REPO and ref.startswith("sha256:") and b'"subject"' in raw
    ]
    if referrers_api:
        assert len(referrers) == 1
        assert referrers[0]["artifactType"] == COSIGN_SIGNATURE_ARTIFACT_TYPE
        assert referrers[0]["subject"]["digest"] == str(digest)
        assert referrers[0]["layers"] == json.loads(tagged[0])["layers"]
    else:
        assert referrers == []
    # Either way a verifier finds the signature; with both places it is read twice, and the
    # kernel counts each key once (tests/unit/test_trust_kernel.py).
    source = transports.open_source(parse_location(f"{HOST}/{REPO}:1.0.0"))
    facts = signature_facts(source, digest)
    assert len(facts) == (2 if referrers_api else 1)
    assert {f.signature_b64 for f in facts} and len({f.payload for f in facts}) == 1
