"""Registry authentication: challenges, scopes, and the Basic/Bearer flows against a fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_registry import HOST, REALM, FakeRegistry, basic, chunks_of, digest_of, make_client

from bundler.adapters.registry.auth import merge_scopes, parse_challenge
from bundler.adapters.registry.credentials import Credential
from bundler.adapters.stream import VerifiedStream
from bundler.errors import AuthError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest

ALICE = Credential("alice", "pw")
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }
).encode()
BLOB = b"some blob content " * 50


def _blob_stream(data: bytes = BLOB) -> VerifiedStream:
    desc = Descriptor("application/octet-stream", Digest.of(data), len(data))
    return VerifiedStream(chunks_of(data, 64), desc, "test")


# -- parse_challenge / merge_scopes -------------------------------------------------------


def test_basic_challenge_is_parsed() -> None:
    challenge = parse_challenge('Basic realm="Registry Realm"')
    assert challenge is not None
    assert challenge.scheme == "basic"
    assert challenge.params == {"realm": "Registry Realm"}
    assert challenge.scopes == ()


def test_bearer_challenge_with_commas_inside_quoted_scope_is_parsed() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:org/app:pull,push repository:org/base:pull"'
    )
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:org/app:pull,push repository:org/base:pull",
    }
    assert challenge.scopes == ("repository:org/app:pull,push", "repository:org/base:pull")


def test_bearer_challenge_with_unquoted_params_and_odd_spacing_is_parsed() -> None:
    challenge = parse_challenge(
        '  BEARER realm=https://auth.test/token , Service = "svc" ,error="insufficient_scope"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://auth.test/token"
    assert challenge.params["service"] == "svc"
    assert challenge.params["error"] == "insufficient_scope"


def test_escaped_quote_inside_a_param_is_unescaped() -> None:
    challenge = parse_challenge(r'Basic realm="say \"hi\", ok"')
    assert challenge is not None
    assert challenge.params["realm"] == 'say "hi", ok'


@pytest.mark.parametrize("header", [None, ""])
def test_absent_challenge_is_none(header: str | None) -> None:
    assert parse_challenge(header) is None


def test_merge_scopes_unions_actions_per_resource() -> None:
    merged = merge_scopes(
        ("repository:app:pull",),
        ["repository:app:push", "repository:base:pull"],
        ("repository:app:pull",),
    )
    assert merged == ("repository:app:pull,push", "repository:base:pull")


def test_merge_scopes_keeps_repository_names_containing_colons_apart_from_actions() -> None:
    assert merge_scopes(("repository:localhost:5000/app:pull",), ("registry:catalog:*",)) == (
        "repository:localhost:5000/app:pull",
        "registry:catalog:*",
    )


def test_merge_scopes_ignores_malformed_entries() -> None:
    assert merge_scopes(("pull",), ("repository:a:pull",)) == ("repository:a:pull",)


# -- Basic --------------------------------------------------------------------------------


def test_basic_credentials_are_sent_up_front_after_the_first_challenge() -> None:
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, ALICE)
    client.upload_blob("app", _blob_stream())
    client.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    raw, _, _ = client.get_manifest("app", "v1")
    assert raw == MANIFEST
    # Only the discovery GET /v2/ met a 401; nothing after it did.
    assert [s.path for s in fake.unauthorized] == ["/v2/"]
    for seen in fake.log[1:]:
        assert seen.authorization == basic("alice", "pw")


def test_basic_blob_put_is_never_cut_off_by_a_401() -> None:
    # A big upload sent without credentials is refused mid-body; the body cannot be replayed.
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, ALICE)
    client.upload_blob("app", _blob_stream())
    (put,) = fake.requests_to("PUT", r"/blobs/uploads/")
    assert put.status == 201
    assert put.authorization == basic("alice", "pw")
    assert put.body == BLOB
    assert fake.blobs[("app", digest_of(BLOB))] == BLOB


def test_basic_challenge_without_credentials_is_an_auth_error(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, config_dir=tmp_path)
    with pytest.raises(AuthError, match=f"{HOST} requires a login"):
        client.get_manifest("app", "v1")
    assert all(s.authorization is None for s in fake.log)


def test_wrong_basic_password_is_an_auth_error_naming_host_and_user() -> None:
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, Credential("alice", "wrong"))
    with pytest.raises(AuthError) as info:
        client.get_manifest("app", "v1")
    assert HOST in str(info.value)
    assert "'alice'" in str(info.value)
    assert "wrong" not in str(info.value)


# -- Bearer -------------------------------------------------------------------------------


def test_bearer_pull_token_is_fetched_for_a_get() -> None:
    fake = FakeRegistry(auth="bearer")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = make_client(fake, ALICE)
    raw, _, _ = client.get_manifest("app", "v1")
    assert raw == MANIFEST
    (token_request,) = fake.token_log
    assert token_request.query["scope"] == ["repository:app:pull"]
    assert token_request.query["service"] == ["registry.test"]
    assert token_request.authorization == basic("alice", "pw")
    (get,) = fake.requests_to("GET", r"/manifests/v1$")
    assert get.status == 200
    assert get.authorization == "Bearer tok-1"


def test_bearer_put_fetches_a_pull_push_token_after_a_pull_token() -> None:
    fake = FakeRegistry(auth="bearer")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = make_client(fake, ALICE)
    client.get_manifest("app", "v1")
    client.put_manifest("app", "v2", MANIFEST, mt.OCI_MANIFEST)
    client.get_manifest("app", "v2")  # the wider token covers pull: no third fetch
    assert [t.query["scope"] for t in fake.token_log] == [
        ["repository:app:pull"],
        ["repository:app:pull,push"],
    ]
    (put,) = fake.requests_to("PUT", r"/manifests/v2$")
    assert put.status == 201
    assert put.authorization == "Bearer tok-2"
    assert [s.path for s in fake.unauthorized] == ["/v2/"]


def test_bearer_blob_upload_gets_its_push_token_before_the_body_is_sent() -> None:
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, ALICE)
    client.upload_blob("app", _blob_stream())
    (put,) = fake.requests_to("PUT", r"/blobs/uploads/")
    assert put.status == 201
    assert [s.path for s in fake.unauthorized] == ["/v2/"]


def test_token_lacking_the_scope_yields_an_auth_error_naming_the_host() -> None:
    # The token service hands out pull only, whatever was asked for.
    fake = FakeRegistry(
        auth="bearer",
        grant=lambda scopes: [s.replace("pull,push", "pull") for s in scopes],
    )
    client = make_client(fake, ALICE)
    with pytest.raises(AuthError) as info:
        client.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    assert HOST in str(info.value)
    assert "PUT" in str(info.value)
    # One wider token was asked for after the 401, then the client gave up: no loop.
    assert len(fake.requests_to("PUT", r"/manifests/v1$")) == 2
    assert len(fake.token_log) == 2


def test_token_service_refusing_the_credentials_is_an_auth_error() -> None:
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, Credential("mallory", "guess"))
    with pytest.raises(AuthError, match="refused user 'mallory'"):
        client.get_manifest("app", "v1")


def test_anonymous_bearer_pull_sends_no_basic_header_to_the_realm(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = make_client(fake, config_dir=tmp_path)
    client.get_manifest("app", "v1")
    (token_request,) = fake.token_log
    assert token_request.authorization is None


def test_identity_token_is_exchanged_with_a_refresh_grant() -> None:
    fake = FakeRegistry(auth="bearer")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = make_client(fake, Credential("<token>", "identity-token-1"))
    client.get_manifest("app", "v1")
    (token_request,) = fake.token_log
    assert token_request.method == "POST"
    assert token_request.url == REALM
    assert token_request.form["grant_type"] == ["refresh_token"]
    assert token_request.form["scope"] == ["repository:app:pull"]
    assert "identity-token-1" not in token_request.url


def test_registry_redirect_does_not_carry_credentials_to_another_host() -> None:
    fake = FakeRegistry(auth="basic")
    fake.inject(
        "GET",
        r"^/v2/app/blobs/",
        (307, {"Location": "https://cdn.test/blob/abc"}, b""),
    )
    fake.inject("GET", r"^/blob/abc$", (200, {"Content-Length": str(len(BLOB))}, BLOB))
    client = make_client(fake, ALICE)
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    assert b"".join(client.get_blob("app", desc)) == BLOB
    (cdn,) = [s for s in fake.log if s.url.startswith("https://cdn.test/")]
    assert cdn.authorization is None
