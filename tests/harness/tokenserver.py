"""A tiny Docker-registry bearer-token server for loopback tests.

Implements the token endpoint that distribution 2.8 (``auth.token``) expects:

* ``GET /token?service=S&scope=repository:NAME:pull,push&scope=...``
  (``scope`` may repeat or be absent), optionally with
  ``Authorization: Basic``.  Anonymous callers are granted only the ``pull``
  action of what they asked for; a known user gets exactly the requested
  actions; a wrong password or unknown user gets ``401``.
* ``POST /token`` with an OAuth2 ``grant_type=password`` form
  (``username``, ``password``, ``service``, space-separated ``scope``) follows
  the same policy.  Other grant types get ``400 unsupported_grant_type``.

Tokens are ES256 JWTs whose header carries ``x5c`` (the DER signing cert,
which the registry trusts through ``rootcertbundle``).

Every request is recorded in :attr:`TokenServer.requests` as a
:class:`TokenRequest` so tests can assert on the scopes a client asked for,
e.g. that it upgraded from ``pull`` to ``pull,push`` after a 401.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["Access", "TokenRequest", "TokenServer", "parse_scope", "start_token_server"]

#: ``{"type": ..., "name": ..., "actions": [...]}`` as it appears in the JWT.
Access = dict[str, Any]
#: ``policy(username_or_None, requested_access) -> granted_access``
Policy = Callable[[str | None, list[Access]], list[Access]]


@dataclass
class TokenRequest:
    """One request the token server saw (recorded before it answered)."""

    method: str
    path: str
    service: str | None
    scopes: list[str]  # raw scope strings, in request order
    requested: list[Access]  # parsed scopes
    username: str | None  # user name presented (even if the password was wrong)
    authenticated: bool  # True only if the credentials were valid
    status: int = 0  # HTTP status returned
    granted: list[Access] = field(default_factory=list)  # "access" claim of the token
    grant_type: str | None = None  # for POST (OAuth2) requests
    time: float = field(default_factory=time.time)

    def actions_for(self, name: str, type_: str = "repository") -> set[str]:
        """Actions requested for repository *name* in this request."""
        return {
            a
            for acc in self.requested
            if acc["type"] == type_ and acc["name"] == name
            for a in acc["actions"]
        }

    def granted_for(self, name: str, type_: str = "repository") -> set[str]:
        """Actions granted for repository *name* in this request."""
        return {
            a
            for acc in self.granted
            if acc["type"] == type_ and acc["name"] == name
            for a in acc["actions"]
        }


def parse_scope(scope: str) -> Access | None:
    """Parse ``type:name:actions`` (name may itself contain ``:``, e.g. a port)."""
    scope = scope.strip()
    if not scope:
        return None
    type_, sep, rest = scope.partition(":")
    if not sep:
        return None
    name, sep, actions = rest.rpartition(":")
    if not sep or not name:
        return None
    return {
        "type": type_,
        "name": name,
        "actions": [a for a in actions.split(",") if a],
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def default_policy(username: str | None, requested: list[Access]) -> list[Access]:
    """Anonymous: only ``pull``; authenticated: exactly what was asked."""
    granted: list[Access] = []
    for acc in requested:
        actions = list(acc["actions"])
        if username is None:
            actions = [a for a in actions if a == "pull"]
        granted.append({"type": acc["type"], "name": acc["name"], "actions": actions})
    return granted


class TokenServer:
    """Threaded token server bound to ``127.0.0.1`` on a free port.

    Attributes tests use:

    * ``realm``   - ``http://127.0.0.1:PORT/token`` (put it in the registry config)
    * ``service`` / ``issuer`` - must match the registry's ``auth.token`` section
    * ``users``   - ``{username: password}``; mutable while running
    * ``requests`` - list of :class:`TokenRequest`, appended per request
    * ``policy``  - replaceable grant policy (see :func:`default_policy`)
    """

    def __init__(
        self,
        signing_cert: Path | str,
        signing_key: Path | str,
        *,
        users: Mapping[str, str] | None = None,
        service: str = "test-registry",
        issuer: str = "test-token-issuer",
        expires_in: int = 300,
        policy: Policy | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        cert = x509.load_pem_x509_certificate(Path(signing_cert).read_bytes())
        key = serialization.load_pem_private_key(Path(signing_key).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("token signing key must be an EC P-256 key")
        self._key = key
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.users: dict[str, str] = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.policy: Policy = policy or default_policy
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- info
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.requests.clear()

    def snapshot(self) -> list[TokenRequest]:
        """A copy of the recorded requests (safe to iterate while serving)."""
        with self._lock:
            return list(self.requests)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> TokenServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"token-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- tokens
    def issue_token(self, subject: str, access: list[Access], service: str | None = None) -> str:
        """Sign a JWT for *access* (also usable directly from tests)."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input + "." + _b64url(raw)

    def _check_user(self, username: str | None, password: str | None) -> bool:
        if username is None or password is None or username not in self.users:
            return False
        return hmac.compare_digest(self.users[username].encode(), password.encode())

    def _record(self, rec: TokenRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "test-token-server/1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def _send_json(
                self, status: int, body: Mapping[str, Any], extra: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _basic_creds(self) -> tuple[str | None, str | None]:
                auth = self.headers.get("Authorization", "")
                scheme, _, value = auth.partition(" ")
                if scheme.lower() != "basic" or not value:
                    return None, None
                try:
                    user, _, pw = base64.b64decode(value.strip()).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return "", None
                return user, pw

            def _answer(self, rec: TokenRequest, password: str | None, oauth: bool) -> None:
                credentials_given = rec.username is not None
                rec.authenticated = server._check_user(rec.username, password)
                if credentials_given and not rec.authenticated:
                    rec.status = 401
                    server._record(rec)
                    self._send_json(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}
                        if not oauth
                        else {"error": "invalid_grant"},
                        {"WWW-Authenticate": f'Basic realm="{server.realm}"'},
                    )
                    return
                user = rec.username if rec.authenticated else None
                rec.granted = server.policy(user, rec.requested)
                token = server.issue_token(user or "", rec.granted, rec.service)
                rec.status = 200
                server._record(rec)
                body: dict[str, Any] = {
                    "access_token": token,
                    "expires_in": server.expires_in,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                if oauth:
                    body["scope"] = " ".join(
                        f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in rec.granted
                    )
                else:
                    body["token"] = token
                self._send_json(200, body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.rstrip("/") != "/token":
                    self._send_json(404, {"error": "not found"})
                    return
                q = parse_qs(parts.query, keep_blank_values=True)
                scopes: list[str] = []
                for s in q.get("scope", []):
                    scopes.extend(x for x in s.split(" ") if x)
                requested = [a for a in (parse_scope(s) for s in scopes) if a is not None]
                user, pw = self._basic_creds()
                rec = TokenRequest(
                    method="GET",
                    path=self.path,
                    service=q["service"][0] if q.get("service") else None,
                    scopes=scopes,
                    requested=requested,
                    username=user,
                    authenticated=False,
                )
                self._answer(rec, pw, oauth=False)

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if parts.path.rstrip("/") != "/token":
                    self._send_json(404, {"error": "not found"})
                    return
                form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

                def one(k: str) -> str | None:
                    v = form.get(k)
                    return v[0] if v else None

                scopes = [x for s in form.get("scope", []) for x in s.split(" ") if x]
                requested = [a for a in (parse_scope(s) for s in scopes) if a is not None]
                grant_type = one("grant_type")
                rec = TokenRequest(
                    method="POST",
                    path=self.path,
                    service=one("service"),
                    scopes=scopes,
                    requested=requested,
                    username=one("username"),
                    authenticated=False,
                    grant_type=grant_type,
                )
                if grant_type != "password":
                    rec.status = 400
                    server._record(rec)
                    self._send_json(400, {"error": "unsupported_grant_type"})
                    return
                self._answer(rec, one("password"), oauth=True)

        return Handler


def start_token_server(
    signing_cert: Path | str,
    signing_key: Path | str,
    **kwargs: Any,
) -> TokenServer:
    """Create and start a :class:`TokenServer` (see its keyword arguments)."""
    return TokenServer(signing_cert, signing_key, **kwargs).start()
