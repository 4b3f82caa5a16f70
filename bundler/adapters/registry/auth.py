"""Registry authentication: challenge parsing, Basic, and Bearer tokens with scopes.

The registry says what it wants in ``WWW-Authenticate``. For ``Basic`` the credential is sent
up front on every later request (a large upload sent without it is cut off mid-body by the
server). For ``Bearer`` a token is fetched from the realm for exactly the repository scopes a
request needs (``repository:NAME:pull`` or ``pull,push``, plus ``pull`` on the source of a
cross-repository mount); a 401 on a token that lacks a scope fetches a wider one.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from bundler.adapters.registry.credentials import Credential
from bundler.adapters.registry.limits import MAX_TOKEN_RESPONSE_BYTES, read_capped
from bundler.errors import AuthError, TransportError

_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
TOKEN_SAFETY_MARGIN_S = 30
DEFAULT_TOKEN_LIFETIME_S = 60


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme and its parameters (realm, service, scope)."""

    scheme: str  # "basic" or "bearer", lowercased
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The space-separated ``scope`` parameter as a tuple; empty when there is none."""
        scope = self.params.get("scope")
        return tuple(scope.split(" ")) if scope else ()


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse the first challenge of a ``WWW-Authenticate`` header."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace(
            '\\"', '"'
        )
        for m in _PARAM_RE.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def _loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def merge_scopes(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Union of scopes, with the actions of one resource merged (``pull`` + ``push``)."""
    actions: dict[str, set[str]] = {}
    order: list[str] = []
    for group in groups:
        for scope in group:
            kind_name, _, acts = scope.rpartition(":")
            if not kind_name:
                continue
            if kind_name not in actions:
                actions[kind_name] = set()
                order.append(kind_name)
            actions[kind_name].update(a for a in acts.split(",") if a)
    return tuple(f"{k}:{','.join(sorted(actions[k]))}" for k in order)


def _covers(granted: tuple[str, ...], needed: tuple[str, ...]) -> bool:
    have = {s.rpartition(":")[0]: set(s.rpartition(":")[2].split(",")) for s in granted}
    for scope in needed:
        name, _, acts = scope.rpartition(":")
        if not set(acts.split(",")) <= have.get(name, set()):
            return False
    return True


@dataclass
class _Token:
    value: str
    scopes: tuple[str, ...]
    expires_at: float


class Authenticator:
    """Per-registry auth state, shared by the threads of one client."""

    def __init__(
        self,
        host: str,
        credential: Credential | None,
        timeout: tuple[float, float],
        verify: bool | str = True,
    ) -> None:
        self.host = host
        self.verify = verify
        self.credential = credential
        self.timeout = timeout
        self.challenge: Challenge | None = None
        self._tokens: list[_Token] = []
        self._lock = threading.Lock()

    def learn(self, challenge: Challenge | None) -> None:
        """Remember a Basic or Bearer challenge for later requests; other schemes are ignored."""
        if challenge is not None and challenge.scheme in ("basic", "bearer"):
            self.challenge = challenge

    def header_for(self, scopes: tuple[str, ...], session: requests.Session) -> str | None:
        """The Authorization header for a request needing ``scopes``, fetching a token if due."""
        challenge = self.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.credential is None:
                raise AuthError(f"{self.host} requires a login (no credentials found)")
            return requests.auth._basic_auth_str(self.credential.username, self.credential.password)
        with self._lock:
            now = time.monotonic()
            self._tokens = [t for t in self._tokens if t.expires_at > now]
            for token in self._tokens:
                if _covers(token.scopes, scopes):
                    return f"Bearer {token.value}"
        token = self._fetch_token(merge_scopes(scopes), session)
        return f"Bearer {token.value}"

    def on_unauthorized(
        self, challenge: Challenge | None, scopes: tuple[str, ...], session: requests.Session
    ) -> None:
        """A 401 arrived: learn the challenge and fetch a token wide enough for it."""
        if challenge is None:
            raise AuthError(f"{self.host} answered 401 without a WWW-Authenticate challenge")
        self.learn(challenge)
        if challenge.scheme == "bearer":
            wanted = merge_scopes(scopes, challenge.scopes)
            with self._lock:
                self._tokens = [t for t in self._tokens if not _covers(wanted, t.scopes)]
            self._fetch_token(wanted, session)
        elif challenge.scheme == "basic" and self.credential is None:
            raise AuthError(f"{self.host} requires a login (no credentials found)")

    # Complexity kept: the token protocol in order: realm checks, request, answer checks.
    def _fetch_token(self, scopes: tuple[str, ...], session: requests.Session) -> _Token:  # noqa: C901
        assert self.challenge is not None
        realm = self.challenge.params.get("realm")
        if not realm:
            raise AuthError(f"{self.host}: bearer challenge without a realm")
        try:
            parsed = urlparse(realm)
        except ValueError:  # "http://[" and other unparsable hosts
            raise AuthError(f"{self.host}: token realm {realm!r} is not an http(s) URL") from None
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise AuthError(f"{self.host}: token realm {realm!r} is not an http(s) URL")
        if parsed.scheme == "http" and not _loopback(parsed.hostname):
            # Credentials, and the token that stands for them, would cross the network in clear.
            # --plain-http does not lift this: it says how to reach the registry, not where
            # secrets may travel.
            raise AuthError(
                f"{self.host} sends its token realm over plain HTTP to {parsed.hostname}; "
                "refusing (the token service must use HTTPS off loopback)"
            )
        params: list[tuple[str, str]] = []
        if "service" in self.challenge.params:
            params.append(("service", self.challenge.params["service"]))
        params.extend(("scope", s) for s in scopes)
        cred = self.credential
        try:
            if cred is not None and cred.is_identity_token:
                form: dict[str, Any] = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.password,
                    "client_id": "bundler",
                    "service": self.challenge.params.get("service", ""),
                    "scope": " ".join(scopes),
                }
                resp = session.post(
                    realm, data=form, timeout=self.timeout, verify=self.verify, stream=True
                )
            else:
                auth = (cred.username, cred.password) if cred is not None else None
                resp = session.get(
                    realm,
                    params=params,
                    auth=auth,
                    timeout=self.timeout,
                    verify=self.verify,
                    stream=True,
                )
        except requests.RequestException as exc:
            raise TransportError(f"token service {realm} unreachable: {exc}") from None
        with resp:
            if resp.status_code in (401, 403):
                who = f"user {cred.username!r}" if cred else "anonymous access"
                raise AuthError(f"token service for {self.host} refused {who}")
            if resp.status_code != 200:
                raise AuthError(f"token service for {self.host} answered HTTP {resp.status_code}")
            try:
                read_capped(resp, MAX_TOKEN_RESPONSE_BYTES, f"token response for {self.host}")
            except requests.RequestException as exc:
                raise TransportError(f"token service {realm} failed: {exc}") from None
        try:
            doc = resp.json()
            value = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            value = None
            doc = {}
        if not isinstance(value, str) or not value:
            raise AuthError(f"token service for {self.host} returned no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        token = _Token(value, scopes, time.monotonic() + max(lifetime - TOKEN_SAFETY_MARGIN_S, 5))
        with self._lock:
            self._tokens.append(token)
        return token
