"""Real signatures by cosign and containers/image, and cosign's own encrypted keys: every case
gets the verdict the vectors' cases.json demands."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bundler.adapters.crypto import decrypt_private_key, load_public_key
from bundler.errors import KeyFileError
from bundler.model.digest import Digest
from bundler.model.signature import SIGNATURE_ANNOTATION, check_simple_signature

VECTORS = Path(__file__).resolve().parents[1] / "data" / "cosign-vectors"  # README there
DIR_SIGNATURE_PREFIX = b"\x00sigstore-json\n"


def _cases(kind: str) -> list[Any]:
    cases = json.loads((VECTORS / "cases.json").read_text())[kind]
    return [pytest.param(case, id=case["name"]) for case in cases]


def read_dir_signature(path: Path) -> tuple[str, bytes, dict[str, str]]:
    """A containers/image ``dir:`` signature blob: NUL, ``sigstore-json\\n``, then JSON."""
    blob = path.read_bytes()
    assert blob.startswith(DIR_SIGNATURE_PREFIX), f"{path} is not a sigstore-json signature"
    doc = json.loads(blob[len(DIR_SIGNATURE_PREFIX) :])
    return doc["mimeType"], base64.b64decode(doc["payload"], validate=True), doc["annotations"]


@pytest.mark.parametrize("case", _cases("signature_cases"))
def test_signature_vector(case: dict[str, Any]) -> None:
    media_type, payload, annotations = read_dir_signature(VECTORS / case["signature"])
    key = load_public_key((VECTORS / case["public_key"]).read_bytes(), case["public_key"])
    manifest_digest = Digest.of((VECTORS / case["manifest"]).read_bytes())

    reason = check_simple_signature(
        media_type,
        payload,
        annotations.get(SIGNATURE_ANNOTATION, ""),
        key,
        manifest_digest,
        case["expected_repository"],
    )

    if case["expect"] == "accept":
        assert reason is None
    else:
        assert case["expect"] == "reject"
        assert reason == case["reason"]


@pytest.mark.parametrize("case", _cases("signature_cases"))
def test_signature_vector_without_identity_check_depends_only_on_key_and_digest(
    case: dict[str, Any],
) -> None:
    media_type, payload, annotations = read_dir_signature(VECTORS / case["signature"])
    key = load_public_key((VECTORS / case["public_key"]).read_bytes(), case["public_key"])
    reason = check_simple_signature(
        media_type,
        payload,
        annotations.get(SIGNATURE_ANNOTATION, ""),
        key,
        Digest.of((VECTORS / case["manifest"]).read_bytes()),
        None,
    )
    expected = None if case.get("reason") in (None, "identity") else case["reason"]
    assert reason == expected


@pytest.mark.parametrize("case", _cases("encrypted_key_cases"))
def test_encrypted_key_vector(case: dict[str, Any]) -> None:
    pem = (VECTORS / case["file"]).read_bytes()
    passphrase = case["passphrase"].encode()

    if case["expect"] == "fail":
        with pytest.raises(KeyFileError, match="passphrase does not decrypt it"):
            decrypt_private_key(pem, passphrase, case["file"])
        return

    assert case["expect"] == "decrypt"
    key = decrypt_private_key(pem, passphrase, case["file"])
    # The key inside really is a signing key: what it signs, its public half verifies.
    signature = key.sign(b"payload")
    assert key.public.verify(b"payload", signature)
    assert key.public.key_id.startswith("sha256:")
    with pytest.raises(KeyFileError, match="passphrase does not decrypt it"):
        decrypt_private_key(pem, passphrase + b"x", case["file"])
