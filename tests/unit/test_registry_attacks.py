"""A hostile or compromised registry against the client: where credentials may go, and how much
of an answer we are made to hold.

Credentials go only to the registry's own scheme, host and port; an upload Location elsewhere is
followed without them, a next tag page elsewhere is refused, and nothing goes from HTTPS to
plain HTTP. Every body the client reads has a cap, and the error names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest
from fake_registry import (
    HOST,
    OCI_INDEX,
    REALM,
    Endless,
    FakeRegistry,
    basic,
    chunks_of,
    digest_of,
    make_client,
)

from bundler.adapters.registry.client import RegistryClient
from bundler.adapters.registry.credentials import Credential, CredentialStore
from bundler.adapters.registry.limits import (
    MAX_ERROR_BODY_BYTES,
    MAX_REFERRERS_BYTES,
    MAX_TAG_LIST_BYTES,
    MAX_TOKEN_RESPONSE_BYTES,
)
from bundler.adapters.stream import VerifiedStream
from bundler.errors import (
    AuthError,
    NotFoundError,
    ReferenceFormatError,
    RegistryError,
    TransportError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.reference import Reference

SECRET = "s3cret-pw"
ALICE = Credential("alice", SECRET)
USERS = {"alice": SECRET}
BLOB = b"layer bytes " * 300
UPLOADS = r"^/v2/app/blobs/uploads/$"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }
).encode()
GB = 1024 * 1024 * 1024


def _stream(data: bytes = BLOB) -> VerifiedStream:
    desc = Descriptor("application/octet-stream", Digest.of(data), len(data))
    return VerifiedStream(chunks_of(data, 64), desc, "test")


def _client(fake: FakeRegistry, **options: object) -> RegistryClient:
    client = make_client(fake, ALICE, **options)
    _ = client.base_url
    fake.log.clear()
    return client


def _secret_headers(fake: FakeRegistry, netloc_rx: str) -> list[str]:
    """Every Authorization header sent to a URL whose scheme://netloc matches ``netloc_rx``."""
    rx = re.compile(netloc_rx)
    return [
        s.authorization
        for s in fake.log + fake.token_log
        if rx.match(s.url) and s.authorization is not None
    ]


def _open_upload_at(fake: FakeRegistry, base: str) -> None:
    """The next upload session's Location points at ``base`` (scheme://host[:port])."""
    fake.uploads["hostile"] = "app"
    fake.inject("POST", UPLOADS, (202, {"Location": f"{base}/v2/app/blobs/uploads/hostile"}, b""))


# -- credential scope: upload Location ----------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "bearer"])
@pytest.mark.parametrize(
    "elsewhere", ["https://evil.test", "https://registry.test:8443", "https://evil.test:443"]
)
def test_upload_location_on_another_host_gets_no_credentials(auth: str, elsewhere: str) -> None:
    fake = FakeRegistry(users=USERS, auth=auth)
    fake.open_hosts.add(elsewhere.removeprefix("https://"))
    client = _client(fake)
    _open_upload_at(fake, elsewhere)
    client.upload_blob("app", _stream())
    (put,) = fake.requests_to("PUT", r"/blobs/uploads/hostile$")
    assert put.url.startswith(elsewhere + "/")
    assert put.authorization is None
    assert _secret_headers(fake, re.escape(elsewhere) + "/") == []
    assert fake.blobs[("app", digest_of(BLOB))] == BLOB


def test_upload_location_on_another_host_that_asks_for_a_login_is_refused() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")  # evil.test answers 401 like the registry does
    client = _client(fake)
    _open_upload_at(fake, "https://evil.test")
    with pytest.raises(AuthError, match=r"only to registry\.test itself") as err:
        client.upload_blob("app", _stream())
    assert SECRET not in str(err.value)
    assert _secret_headers(fake, r"https://evil\.test/") == []


def test_chunked_upload_moved_to_another_host_gets_no_credentials() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    fake.open_hosts.add("evil.test")
    client = _client(fake, chunk_size=1024)
    fake.uploads["hostile"] = "app"
    fake.received["hostile"] = BLOB[:1024]  # the first chunk, as if received on registry.test
    fake.inject(
        "PATCH",
        r"/blobs/uploads/",
        (202, {"Location": "https://evil.test/v2/app/blobs/uploads/hostile"}, b""),
    )
    client.upload_blob("app", _stream())
    moved = [s for s in fake.log if s.url.startswith("https://evil.test/")]
    assert [s.method for s in moved] == ["PATCH", "PATCH", "PATCH", "PUT"]
    assert all(s.authorization is None for s in moved)
    (first,) = [s for s in fake.log if s.method == "PATCH" and s.url.startswith("https://reg")]
    assert first.authorization == basic("alice", SECRET)
    assert fake.blobs[("app", digest_of(BLOB))] == BLOB


def test_https_registry_naming_a_plain_http_upload_location_is_refused() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    client = _client(fake)
    _open_upload_at(fake, f"http://{HOST}")
    with pytest.raises(TransportError, match="plain-HTTP URL") as err:
        client.upload_blob("app", _stream())
    assert SECRET not in str(err.value)
    assert [s for s in fake.log if s.url.startswith("http://")] == []  # neither blob nor secret


def test_https_registry_moving_a_chunked_upload_to_plain_http_is_refused() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    client = _client(fake, chunk_size=1024)
    fake.inject(
        "PATCH",
        r"/blobs/uploads/",
        (202, {"Location": f"http://{HOST}/v2/app/blobs/uploads/x"}, b""),
    )
    with pytest.raises(TransportError, match="plain-HTTP URL"):
        client.upload_blob("app", _stream())
    assert [s for s in fake.log if s.url.startswith("http://")] == []


def test_abandoned_mount_session_on_another_host_is_cancelled_without_credentials() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    fake.open_hosts.add("evil.test")
    client = _client(fake)
    fake.inject(
        "POST", UPLOADS, (202, {"Location": "https://evil.test/v2/app/blobs/uploads/m"}, b"")
    )
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    assert client.mount_blob("app", desc, "other") is False
    (delete,) = fake.requests_to("DELETE", r"/blobs/uploads/m$")
    assert delete.url.startswith("https://evil.test/") and delete.authorization is None


# -- credential scope: tag pages, redirects, plain HTTP ------------------------------------


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.test/v2/app/tags/list?last=a",
        "//evil.test/v2/app/tags/list?last=a",
        f"https://{HOST}:8443/v2/app/tags/list?last=a",
        f"http://{HOST}/v2/app/tags/list?last=a",
    ],
)
def test_tag_list_next_page_on_another_origin_is_refused(next_url: str) -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    fake.put_manifest("app", "a", MANIFEST, mt.OCI_MANIFEST)
    client = _client(fake)
    page = json.dumps({"name": "app", "tags": ["a"]}).encode()
    fake.inject("GET", r"/tags/list$", (200, {"Link": f'<{next_url}>; rel="next"'}, page))
    with pytest.raises(RegistryError, match="another origin"):
        client.list_tags("app")
    assert len(fake.log) == 1  # the first page only: nothing was sent to the other origin


def test_tag_list_next_page_on_the_same_origin_is_followed() -> None:
    fake = FakeRegistry(users=USERS, auth="basic", tag_page_size=1)
    for tag in ("a", "b", "c"):
        fake.put_manifest("app", tag, MANIFEST, mt.OCI_MANIFEST)
    assert _client(fake).list_tags("app") == ["a", "b", "c"]


def test_redirect_from_https_to_plain_http_is_refused() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = _client(fake)
    fake.inject(
        "GET",
        r"^/v2/app/manifests/v1$",
        (307, {"Location": f"http://{HOST}/v2/app/manifests/v1"}, b""),
    )
    with pytest.raises(TransportError, match=r"from HTTPS to http://registry\.test"):
        client.get_manifest("app", "v1")
    assert [s for s in fake.log if s.url.startswith("http://")] == []


def test_plain_http_option_does_not_send_credentials_to_a_remote_plain_http_realm() -> None:
    fake = FakeRegistry()
    challenge = 'Bearer realm="http://auth.example.com/token",service="registry.test"'
    fake.inject("GET", r"^/v2/app/manifests/v1$", (401, {"WWW-Authenticate": challenge}, b""))
    client = _client(fake, plain_http=True)
    with pytest.raises(AuthError, match="plain HTTP") as err:
        client.get_manifest("app", "v1")
    assert SECRET not in str(err.value)
    assert not [s for s in fake.log if s.path == "/token"]


def test_plain_http_option_does_not_send_basic_credentials_to_a_remote_registry() -> None:
    fake = FakeRegistry(users=USERS, auth="basic")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = _client(fake, plain_http=True)
    with pytest.raises(AuthError, match="over plain HTTP") as err:
        client.get_manifest("app", "v1")
    assert SECRET not in str(err.value)
    assert _secret_headers(fake, "http://") == []


# -- bounded bodies --------------------------------------------------------------------------


def _bounded(body: Endless, cap: int) -> None:
    # Read in 64 KiB steps: never more than one step past the cap.
    assert body.served <= cap + 64 * 1024


@pytest.mark.parametrize("declared", [False, True])
def test_huge_referrers_answer_is_refused_at_its_cap(declared: bool) -> None:
    fake = FakeRegistry(referrers_api=True)
    client = _client(fake)
    body = Endless(3 * GB // 2)
    headers = {"Content-Type": OCI_INDEX}
    if declared:
        headers["Content-Length"] = str(body.size)
    fake.inject("GET", r"/referrers/", (200, headers, body))
    with pytest.raises(RegistryError, match=r"referrers answer .* 4 MiB"):
        client.referrers("app", Digest.of(b"x"))
    _bounded(body, MAX_REFERRERS_BYTES)


def test_huge_token_response_is_refused_at_its_cap() -> None:
    fake = FakeRegistry(users=USERS, auth="bearer")
    body = Endless(600 * 1024 * 1024)
    fake.inject("GET", r"^/token$", (200, {"Content-Type": "application/json"}, body))
    client = make_client(fake, ALICE)
    with pytest.raises(RegistryError, match=r"token response for registry\.test exceeds 1 MiB"):
        client.get_manifest("app", "v1")
    _bounded(body, MAX_TOKEN_RESPONSE_BYTES)
    assert fake.token_log and fake.token_log[0].url.startswith(REALM)


def test_huge_tag_list_page_is_refused_at_its_cap() -> None:
    fake = FakeRegistry()
    client = _client(fake)
    body = Endless(GB)
    fake.inject("GET", r"/tags/list$", (200, {"Content-Type": "application/json"}, body))
    with pytest.raises(RegistryError, match=r"tag list page of app .* 4 MiB"):
        client.list_tags("app")
    _bounded(body, MAX_TAG_LIST_BYTES)


def test_huge_error_body_is_cut_to_one_bounded_line() -> None:
    fake = FakeRegistry()
    client = _client(fake, max_attempts=1)
    body = Endless(GB, fill=b"no ")
    fake.inject("GET", r"/blobs/", (500, {}, body))
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    with pytest.raises(RegistryError) as err:
        client.get_blob("app", desc)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    _bounded(body, MAX_ERROR_BODY_BYTES)


@pytest.mark.parametrize("status", [200, 404, 500])
def test_huge_body_on_a_request_that_reads_none_is_never_held(status: int) -> None:
    fake = FakeRegistry()
    client = _client(fake, max_attempts=1)
    body = Endless(GB)
    fake.inject("PUT", r"/manifests/v1$", (status, {}, body))
    with contextlib.suppress(RegistryError, NotFoundError):
        client.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    _bounded(body, MAX_ERROR_BODY_BYTES)


def test_huge_redirect_body_is_not_read_whole() -> None:
    fake = FakeRegistry()
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    client = _client(fake)
    body = Endless(GB)
    fake.inject(
        "GET",
        r"^/v2/app/manifests/v1$",
        (307, {"Location": f"https://{HOST}/v2/app/manifests/v1"}, body),
    )
    raw, _, _ = client.get_manifest("app", "v1")
    assert raw == MANIFEST
    _bounded(body, MAX_ERROR_BODY_BYTES)


def test_huge_discovery_answer_is_not_read_whole() -> None:
    fake = FakeRegistry()
    body = Endless(GB)
    fake.inject("GET", r"^/v2/$", (200, {}, body))
    client = make_client(fake, ALICE)
    assert client.base_url == f"https://{HOST}"
    _bounded(body, MAX_ERROR_BODY_BYTES)


# -- secrets never echoed -------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        'read -r line; echo "invalid input: $line"; exit 1',  # echoes the JSON it was sent
        'read -r line; echo "cannot store secret $line" >&2; exit 1',
        'echo "keychain refused: Secret: hunter2-pw"; exit 1',
        'echo "keychain refused hunter2-pw"; exit 1',
    ],
)
def test_credential_helper_echoing_its_stdin_never_shows_the_secret(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-echo"
    helper.write_text(f"#!/bin/sh\n{script}\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "echo"}))
    with pytest.raises(AuthError, match="docker-credential-echo store failed") as err:
        CredentialStore(config).store("reg.test", Credential("alice", "hunter2-pw"))
    assert "hunter2-pw" not in str(err.value)
    assert "\n" not in str(err.value)


def test_credential_helper_that_cannot_find_a_host_still_means_no_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-empty"
    helper.write_text('#!/bin/sh\nread -r host; echo "credentials not found for $host"; exit 1\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "empty"}))
    assert CredentialStore(config).get("reg.test") is None


@pytest.mark.parametrize(
    "typed",
    [
        "https://alice:hunter2-pw@registry.example.com/team/app:1.0",
        "http://alice:hunter2-pw@registry.example.com",
        "alice:hunter2-pw@registry.example.com/team/app",
        "alice:hunter2-pw@registry.example.com:5000/app",
        "alice:hunter2-pw@registry.example.com",
        "oci://hunter2-pw@registry.example.com/app",
    ],
)
def test_mistyped_reference_with_credentials_is_refused_without_echoing_them(typed: str) -> None:
    with pytest.raises(ReferenceFormatError) as err:
        Reference.parse(typed)
    assert "hunter2-pw" not in str(err.value)
    assert "alice" not in str(err.value)
    assert "***@" in str(err.value)


def test_reference_with_a_bad_digest_is_still_echoed_in_full() -> None:
    with pytest.raises(ReferenceFormatError, match=r"registry\.example\.com/app@sha256:beef"):
        Reference.parse("registry.example.com/app@sha256:beef")
