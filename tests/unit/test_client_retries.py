"""The registry client against a flaky or hostile server: bounded retries, clear errors, and
content that is checked, never trusted."""

from __future__ import annotations

import itertools
import json

import pytest
import requests
from fake_registry import HOST, FakeRegistry, chunks_of, digest_of, make_client

from bundler.adapters.registry.client import MAX_RETRY_AFTER_S, RegistryClient
from bundler.adapters.registry.credentials import Credential
from bundler.adapters.registry.store import RegistrySource
from bundler.adapters.stream import VerifiedStream
from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import MAX_MANIFEST_BYTES
from bundler.model.reference import Reference

ALICE = Credential("alice", "pw")
MANIFEST_PATH = r"^/v2/app/manifests/"
BLOB = b"layer bytes " * 300


def _manifest(layer: bytes = BLOB, **extra: object) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
            **extra,
        }
    ).encode()


MANIFEST = _manifest()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> FakeRegistry:
    registry = FakeRegistry()
    registry.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    return registry


@pytest.fixture
def client(fake: FakeRegistry) -> RegistryClient:
    c = make_client(fake, ALICE)
    c.sleep = Sleeps()
    _ = c.base_url  # discovery done; later logs show only the request under test
    fake.log.clear()
    return c


def _sleeps(client: RegistryClient) -> list[float]:
    assert isinstance(client.sleep, Sleeps)
    return list(client.sleep)


# -- transient failures -------------------------------------------------------------------


def test_503_then_200_is_retried_with_increasing_backoff(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject("GET", MANIFEST_PATH, 503, 503, 503)
    raw, _, _ = client.get_manifest("app", "v1")
    assert raw == MANIFEST
    assert len(fake.requests_to("GET", MANIFEST_PATH)) == 4
    delays = _sleeps(client)
    assert len(delays) == 3
    assert all(b > a for a, b in itertools.pairwise(delays))
    assert all(0 < d <= client.options.backoff_max for d in delays)


def test_endless_503_gives_up_after_a_bounded_number_of_attempts(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject("GET", MANIFEST_PATH, *([503] * 20))
    with pytest.raises(RegistryError) as info:
        client.get_manifest("app", "v1")
    assert info.value.status == 503
    assert len(fake.requests_to("GET", MANIFEST_PATH)) == client.options.max_attempts
    assert len(_sleeps(client)) == client.options.max_attempts - 1


def test_retry_after_is_honoured(fake: FakeRegistry, client: RegistryClient) -> None:
    fake.inject("GET", MANIFEST_PATH, (429, {"Retry-After": "7"}, b""))
    client.get_manifest("app", "v1")
    assert _sleeps(client) == [7.0]


def test_retry_after_is_capped(fake: FakeRegistry, client: RegistryClient) -> None:
    # A server asking for an hour's pause does not stall the copy for an hour.
    fake.inject("GET", MANIFEST_PATH, (503, {"Retry-After": "3600"}, b""))
    client.get_manifest("app", "v1")
    assert _sleeps(client) == [MAX_RETRY_AFTER_S]


def test_connection_errors_are_retried_for_a_get(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject(
        "GET", MANIFEST_PATH, requests.ConnectionError("reset"), requests.Timeout("read timed out")
    )
    raw, _, _ = client.get_manifest("app", "v1")
    assert raw == MANIFEST
    assert len(_sleeps(client)) == 2


def test_persistent_connection_errors_become_a_transport_error(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject("GET", MANIFEST_PATH, *[requests.ConnectionError("refused")] * 10)
    with pytest.raises(TransportError, match="failed"):
        client.get_manifest("app", "v1")
    assert len(fake.requests_to("GET", MANIFEST_PATH)) == client.options.max_attempts


def test_blob_upload_body_is_not_replayed_after_a_connection_error(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    # The stream is half consumed; re-sending it would upload a truncated body.
    fake.inject("PUT", r"/blobs/uploads/", requests.ConnectionError("reset mid-body"))
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    with pytest.raises(TransportError):
        client.upload_blob("app", VerifiedStream(chunks_of(BLOB, 100), desc, "test"))
    assert len(fake.requests_to("PUT", r"/blobs/uploads/")) == 1
    assert _sleeps(client) == []
    assert ("app", str(desc.digest)) not in fake.blobs


def test_corrupt_upload_source_is_an_integrity_error_not_a_transport_error(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    tampered = BLOB[:-1] + b"?"
    with pytest.raises(DigestMismatchError):
        client.upload_blob("app", VerifiedStream(chunks_of(tampered, 100), desc, "src"))
    assert ("app", str(desc.digest)) not in fake.blobs


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_never_retried(
    fake: FakeRegistry, client: RegistryClient, status: int
) -> None:
    fake.inject("GET", MANIFEST_PATH, status)
    with pytest.raises((RegistryError, NotFoundError)):
        client.get_manifest("app", "v1")
    assert len(fake.requests_to("GET", MANIFEST_PATH)) == 1
    assert _sleeps(client) == []


def test_missing_manifest_is_not_found(client: RegistryClient) -> None:
    with pytest.raises(NotFoundError, match=f"not found on {HOST}"):
        client.get_manifest("app", "nope")


def test_oci_error_body_becomes_a_one_line_message_with_its_code(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    body = json.dumps(
        {
            "errors": [
                {
                    "code": "MANIFEST_INVALID",
                    "message": "manifest invalid",
                    "detail": {"reason": "layers[0] unknown", "blob": "x" * 500},
                }
            ]
        }
    ).encode()
    fake.inject("PUT", MANIFEST_PATH, (400, {"Content-Type": "application/json"}, body))
    with pytest.raises(RegistryError) as info:
        client.put_manifest("app", "v2", MANIFEST, mt.OCI_MANIFEST)
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 400" in message
    assert "MANIFEST_INVALID: manifest invalid" in message
    assert HOST in message
    assert info.value.code == "MANIFEST_INVALID"
    assert info.value.status == 400


def test_plain_text_error_body_keeps_only_its_first_line(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject("PUT", MANIFEST_PATH, (400, {}, b"bad request\nstack trace line 1\nline 2"))
    with pytest.raises(RegistryError) as info:
        client.put_manifest("app", "v2", MANIFEST, mt.OCI_MANIFEST)
    assert str(info.value).endswith("HTTP 400 bad request")


def test_registry_error_message_cannot_inject_extra_lines(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    # The message is the registry's text; a hostile one must not forge lines in our output.
    body = json.dumps(
        {
            "errors": [
                {
                    "code": "DENIED",
                    "message": "denied\nerror: all content verified, exit 0",
                }
            ]
        }
    ).encode()
    fake.inject("PUT", MANIFEST_PATH, (400, {"Content-Type": "application/json"}, body))
    with pytest.raises(RegistryError) as info:
        client.put_manifest("app", "v2", MANIFEST, mt.OCI_MANIFEST)
    assert "\n" not in str(info.value)


# -- content that does not match its name -----------------------------------------------


def test_blob_whose_bytes_do_not_match_its_digest_is_refused_naming_the_blob(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    desc = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))
    fake.put_blob("app", BLOB[:-1] + b"X", digest=str(desc.digest))
    source = RegistrySource(client, Reference.parse(f"{HOST}/app:v1"))
    stream = VerifiedStream(source.open_blob(desc), desc, source.name)
    with pytest.raises(DigestMismatchError) as info:
        stream.drain()
    assert str(desc.digest) in str(info.value)
    assert f"{HOST}/app:v1" in str(info.value)


def test_manifest_fetched_by_digest_with_other_content_is_refused(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    wanted = Digest.of(MANIFEST)
    fake.manifests[("app", str(wanted))] = (_manifest(b"evil layer"), mt.OCI_MANIFEST)
    with pytest.raises(DigestMismatchError, match="other content"):
        client.get_manifest("app", str(wanted))


def test_tag_whose_served_digest_header_lies_is_refused(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    evil = _manifest(b"evil layer")
    fake.inject(
        "GET",
        MANIFEST_PATH,
        (
            200,
            {
                "Content-Type": mt.OCI_MANIFEST,
                "Docker-Content-Digest": digest_of(MANIFEST),
            },
            evil,
        ),
    )
    with pytest.raises(DigestMismatchError):
        client.get_manifest("app", "v1")


def test_registry_source_resolves_a_digest_reference_only_to_matching_bytes(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    wanted = Digest.of(MANIFEST)
    fake.manifests[("app", str(wanted))] = (_manifest(b"evil layer"), mt.OCI_MANIFEST)
    source = RegistrySource(client, Reference.parse(f"{HOST}/app@{wanted}"))
    with pytest.raises(DigestMismatchError):
        source.resolve()


def test_manifest_declared_larger_than_4_mib_is_refused_before_download(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    fake.inject(
        "GET",
        MANIFEST_PATH,
        (
            200,
            {
                "Content-Type": mt.OCI_MANIFEST,
                "Content-Length": str(MAX_MANIFEST_BYTES + 1),
            },
            b"{}",
        ),
    )
    with pytest.raises(ManifestError, match="4 MiB"):
        client.get_manifest("app", "v1")


def test_manifest_streamed_beyond_4_mib_without_a_length_is_refused(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    huge = b"{" + b" " * MAX_MANIFEST_BYTES + b"}"
    fake.inject("GET", MANIFEST_PATH, (200, {"Content-Type": mt.OCI_MANIFEST}, huge))
    with pytest.raises(ManifestError, match="4 MiB"):
        client.get_manifest("app", "v1")


# -- listing and referrers ---------------------------------------------------------------


def test_tag_listing_follows_link_pagination(client: RegistryClient) -> None:
    fake = FakeRegistry(tag_page_size=2)
    for tag in ["a", "b", "c", "d", "e"]:
        fake.put_manifest("app", tag, MANIFEST, mt.OCI_MANIFEST)
    fake.mount_on(client)
    assert client.list_tags("app") == ["a", "b", "c", "d", "e"]
    pages = fake.requests_to("GET", r"/tags/list$")
    assert len(pages) == 3
    assert pages[1].query == {"n": ["2"], "last": ["b"]}


def test_tag_listing_of_an_unknown_repository_is_not_found(client: RegistryClient) -> None:
    with pytest.raises(NotFoundError, match="nothing-here"):
        client.list_tags("nothing-here")


def test_referrers_api_404_in_plain_text_means_no_api(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    assert client.referrers("app", Digest.of(MANIFEST)) is None


def test_referrers_api_answer_is_returned(client: RegistryClient) -> None:
    fake = FakeRegistry(referrers_api=True)
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": digest_of(MANIFEST), "size": len(MANIFEST)}
    sig = _manifest(b"signature", subject=subject, artifactType="application/x.sig")
    fake.put_manifest("app", "v1", MANIFEST, mt.OCI_MANIFEST)
    fake.put_manifest("app", digest_of(sig), sig, mt.OCI_MANIFEST)
    fake.mount_on(client)
    found = client.referrers("app", Digest.of(MANIFEST))
    assert found is not None
    assert [str(d.digest) for d in found] == [digest_of(sig)]


def test_registry_source_falls_back_to_the_referrers_tag_schema(
    fake: FakeRegistry, client: RegistryClient
) -> None:
    subject = Digest.of(MANIFEST)
    sig = _manifest(b"signature")
    sig_digest = fake.put_manifest("app", digest_of(sig), sig, mt.OCI_MANIFEST)
    fallback = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sig_digest,
                    "size": len(sig),
                    "artifactType": "application/x.sig",
                },
            ],
        }
    ).encode()
    fake.put_manifest("app", subject.tag_form(), fallback, mt.OCI_INDEX)
    source = RegistrySource(client, Reference.parse(f"{HOST}/app:v1"))
    found = source.referrers(subject)
    assert [str(d.digest) for d in found] == [sig_digest]
    assert found[0].artifact_type == "application/x.sig"
    assert fake.requests_to("GET", r"/referrers/")
    assert fake.requests_to("HEAD", rf"/manifests/sha256-{subject.hex}$")


def test_registry_source_without_referrers_or_fallback_tag_finds_none(
    client: RegistryClient,
) -> None:
    source = RegistrySource(client, Reference.parse(f"{HOST}/app:v1"))
    assert source.referrers(Digest.of(MANIFEST)) == []
