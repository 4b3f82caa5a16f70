"""HTTPS or plain HTTP on loopback: settled by a bare handshake, trust still decided by HTTPS.

A loopback registry without ``--plain-http`` is tried over HTTPS and, only when the server
answers in plain HTTP, over HTTP. The probe finds that out without loading a CA store (which
every start would otherwise pay for a plain-HTTP registry); a server that speaks TLS is verified
by the HTTPS request as before, and a certificate failure never falls back to HTTP.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness.certs import generate_server_certs
from harness.registry import free_port

from bundler.adapters.registry import client as client_module
from bundler.adapters.registry.client import RegistryClient, speaks_tls
from bundler.adapters.registry.credentials import CredentialStore
from bundler.adapters.registry.options import RegistryOptions
from bundler.errors import TransportError


class _V2(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(tls: Path | None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    if tls is not None:
        certs = generate_server_certs(tls)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def plain() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[str]:
    yield from _serve(tmp_path / "certs")


@pytest.fixture
def ca_store_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every CA store loaded into an SSL context from now on (what the probe must avoid)."""
    seen: list[str] = []
    load_verify = ssl.SSLContext.load_verify_locations
    load_default = ssl.SSLContext.load_default_certs

    def verify_spy(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        seen.append("load_verify_locations")
        load_verify(self, *args, **kwargs)

    def default_spy(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        seen.append("load_default_certs")
        load_default(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", verify_spy)
    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", default_spy)
    return seen


def _client(host: str, tmp_path: Path, **options: Any) -> RegistryClient:
    config = tmp_path / "docker"
    config.mkdir(exist_ok=True)
    return RegistryClient(
        host, RegistryOptions(credential_store=CredentialStore(config), **options)
    )


def test_the_probe_tells_plain_http_from_tls_and_says_so_when_it_cannot_tell(
    plain: str, tls: str
) -> None:
    assert speaks_tls(plain, 5.0) is False
    assert speaks_tls(tls, 5.0) is True
    assert speaks_tls(f"127.0.0.1:{free_port()}", 5.0) is None  # nothing listens


def test_a_plain_http_loopback_registry_costs_no_https_attempt_and_no_ca_store(
    plain: str, tmp_path: Path, ca_store_loads: list[str]
) -> None:
    client = _client(plain, tmp_path)
    try:
        assert client.base_url == f"http://{plain}"
    finally:
        client.close()
    assert ca_store_loads == []


def test_a_tls_loopback_registry_is_still_verified_by_its_ca(tls: str, tmp_path: Path) -> None:
    client = _client(tls, tmp_path, ca_bundle=tmp_path / "certs" / "ca.crt")
    try:
        assert client.base_url == f"https://{tls}"
    finally:
        client.close()


def test_a_certificate_failure_on_loopback_never_falls_back_to_http(
    tls: str, tmp_path: Path
) -> None:
    client = _client(tls, tmp_path)  # the test CA is not trusted
    try:
        with pytest.raises(TransportError) as failure:
            _ = client.base_url
    finally:
        client.close()
    assert "certificate" in str(failure.value).lower()


def test_no_probe_through_a_proxy(
    plain: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []
    monkeypatch.setattr(client_module, "speaks_tls", lambda host, timeout: probes.append(host))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = _client(plain, tmp_path, max_attempts=1)
    try:
        with pytest.raises(TransportError):
            _ = client.base_url  # the HTTPS attempt goes to the proxy, which is not there
    finally:
        client.close()
    assert probes == []
