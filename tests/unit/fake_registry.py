"""An in-memory OCI registry and token service, mounted as a ``requests`` transport adapter.

Tests mount one :class:`FakeRegistry` on ``client.session`` for ``http://`` and ``https://``;
every request the client sends (to the registry or to the token realm) lands in
:meth:`FakeRegistry.send`, is recorded in :attr:`FakeRegistry.log`, and is answered from
memory. :meth:`FakeRegistry.inject` queues scripted answers (statuses, headers, bodies or
exceptions) ahead of the normal behaviour, to play a flaky or hostile server.
"""

from __future__ import annotations

import base64
import hashlib
import http
import io
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from bundler.adapters.registry.client import RegistryClient
from bundler.adapters.registry.credentials import Credential, CredentialStore
from bundler.adapters.registry.options import RegistryOptions

HOST = "registry.test"
REALM = "https://auth.test/token"
SERVICE = "registry.test"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

_ROUTE = re.compile(
    r"^/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs/uploads|blobs|tags|referrers)/(?P<rest>.*)$"
)


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class Endless(io.RawIOBase):
    """A body of ``size`` bytes that is never held in memory; counts what was read of it."""

    def __init__(self, size: int, fill: bytes = b" ") -> None:
        super().__init__()
        self.size = size
        self.fill = fill
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.served)
        buffer[:n] = (self.fill * (n // len(self.fill) + 1))[:n]
        self.served += n
        return n


Scripted = int | tuple[int, dict[str, str], bytes | Endless] | BaseException


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class FakeRegistry(BaseAdapter):
    def __init__(
        self,
        *,
        auth: str | None = None,
        users: dict[str, str] | None = None,
        grant: Callable[[list[str]], list[str]] | None = None,
        referrers_api: bool = False,
        tag_page_size: int | None = None,
    ) -> None:
        super().__init__()
        self.auth = auth  # None, "basic" or "bearer"
        self.users = users if users is not None else {"alice": "pw"}
        self.grant = grant or (lambda scopes: scopes)
        self.referrers_api = referrers_api
        self.tag_page_size = tag_page_size
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, str] = {}
        self.received: dict[str, bytes] = {}  # bytes PATCHed into each open upload session
        self.tokens: dict[str, set[str]] = {}
        self.log: list[Seen] = []
        self.open_hosts: set[str] = set()  # netlocs answering without asking for credentials
        self.token_log: list[Seen] = []
        self._script: list[tuple[str, re.Pattern[str], Scripted]] = []

    # -- test controls ----------------------------------------------------------------

    def mount_on(self, client: RegistryClient) -> FakeRegistry:
        client.session.mount("https://", self)
        client.session.mount("http://", self)
        return self

    def inject(self, method: str, path_pattern: str, *answers: Scripted) -> None:
        """Answer the next matching requests with ``answers``, in order, before any routing."""
        for answer in answers:
            self._script.append((method, re.compile(path_pattern), answer))

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        digest = digest_of(raw)
        self.manifests[(repo, digest)] = (raw, media_type)
        self.manifests[(repo, ref)] = (raw, media_type)
        return digest

    def put_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        key = digest or digest_of(data)
        self.blobs[(repo, key)] = data
        return key

    def requests_to(self, method: str, pattern: str) -> list[Seen]:
        rx = re.compile(pattern)
        return [s for s in self.log if s.method == method and rx.search(s.path)]

    @property
    def unauthorized(self) -> list[Seen]:
        return [s for s in self.log if s.status == 401]

    # -- transport --------------------------------------------------------------------

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        scripted = self._scripted(request.method or "", parts.path)
        body = self._read_body(request.body, partial=isinstance(scripted, BaseException))
        seen = Seen(
            method=request.method or "",
            url=request.url or "",
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        is_token = f"{parts.scheme}://{parts.netloc}{parts.path}" == REALM
        (self.token_log if is_token else self.log).append(seen)
        if isinstance(scripted, BaseException):
            raise scripted
        if scripted is not None:
            status, headers, payload = (
                (scripted, {}, b"") if isinstance(scripted, int) else scripted
            )
        elif is_token:
            status, headers, payload = self._token(seen)
        else:
            status, headers, payload = self._registry(seen)
        seen.status = status
        return self._response(request, status, headers, payload)

    def close(self) -> None:
        pass

    def _scripted(self, method: str, path: str) -> Scripted | None:
        for i, (m, rx, answer) in enumerate(self._script):
            if m == method and rx.search(path):
                del self._script[i]
                return answer
        return None

    @staticmethod
    def _read_body(body: Any, partial: bool) -> bytes:
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode()
        iterator = iter(body)
        if partial:  # the connection drops after the first chunk
            return next(iterator, b"")
        out = bytearray()
        for chunk in iterator:
            out += chunk
        return bytes(out)

    @staticmethod
    def _response(
        request: requests.PreparedRequest,
        status: int,
        headers: dict[str, str],
        body: bytes | Endless,
    ) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp.headers = CaseInsensitiveDict(headers)
        if request.method == "HEAD":
            resp.raw = io.BytesIO(b"")
        else:
            resp.raw = body if isinstance(body, Endless) else io.BytesIO(body)
        resp.url = request.url or ""
        resp.request = request
        resp.reason = http.HTTPStatus(status).phrase
        resp.encoding = None
        return resp

    # -- token service ----------------------------------------------------------------

    def _token(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if seen.method == "POST":
            seen.form = parse_qs(seen.body.decode())
            if seen.form.get("grant_type") != ["refresh_token"] or seen.form.get(
                "refresh_token"
            ) != ["identity-token-1"]:
                return 401, {}, b'{"details":"bad refresh token"}'
            scopes = " ".join(seen.form.get("scope", [])).split()
        else:
            auth = seen.authorization
            if auth is not None and auth not in {basic(u, p) for u, p in self.users.items()}:
                return 401, {}, b'{"details":"bad credentials"}'
            scopes = seen.query.get("scope", [])
        granted = self.grant(list(scopes))
        value = f"tok-{len(self.tokens) + 1}"
        self.tokens[value] = set(granted)
        doc = {"token": value, "access_token": value, "expires_in": 300}
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    # -- registry ---------------------------------------------------------------------

    def _needed(self, seen: Seen, repo: str | None) -> str | None:
        if repo is None:
            return None
        action = "pull" if seen.method in ("GET", "HEAD") else "pull,push"
        return f"repository:{repo}:{action}"

    def _authorized(self, seen: Seen, needed: str | None) -> bool:
        auth = seen.authorization or ""
        if self.auth == "basic":
            return auth in {basic(u, p) for u, p in self.users.items()}
        if self.auth == "bearer":
            if not auth.startswith("Bearer "):
                return False
            granted = self.tokens.get(auth.removeprefix("Bearer "))
            if granted is None:
                return False
            if needed is None:
                return True
            name, _, actions = needed.rpartition(":")
            have: set[str] = set()
            for scope in granted:
                g_name, _, g_actions = scope.rpartition(":")
                if g_name == name:
                    have.update(g_actions.split(","))
            return set(actions.split(",")) <= have
        return True

    def _challenge(self, needed: str | None) -> dict[str, str]:
        if self.auth == "basic":
            return {"WWW-Authenticate": 'Basic realm="fake registry"'}
        value = f'Bearer realm="{REALM}",service="{SERVICE}"'
        if needed:
            value += f',scope="{needed}"'
        return {"WWW-Authenticate": value}

    def _registry(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        match = _ROUTE.match(seen.path)
        repo = match.group("repo") if match else None
        needed = self._needed(seen, repo)
        is_open = urlsplit(seen.url).netloc in self.open_hosts
        if not is_open and not self._authorized(seen, needed):
            err = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            headers = {"Content-Type": "application/json", **self._challenge(needed)}
            return 401, headers, json.dumps(err).encode()
        if seen.path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        if match is None or repo is None:
            return 404, {"Content-Type": "text/plain"}, b"404 page not found\n"
        kind, rest = match.group("kind"), match.group("rest")
        handler = getattr(self, f"_{kind.replace('/', '_')}")
        result: tuple[int, dict[str, str], bytes] = handler(seen, repo, rest)
        return result

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        return status, {"Content-Type": "application/json"}, body

    def _manifests(self, seen: Seen, repo: str, ref: str) -> tuple[int, dict[str, str], bytes]:
        if seen.method in ("GET", "HEAD"):
            found = self.manifests.get((repo, ref))
            if found is None:
                return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            raw, media_type = found
            return (
                200,
                {
                    "Content-Type": media_type,
                    "Content-Length": str(len(raw)),
                    "Docker-Content-Digest": digest_of(raw),
                },
                raw,
            )
        if seen.method == "PUT":
            media_type = seen.headers.get("content-type", "")
            digest = self.put_manifest(repo, ref, seen.body, media_type)
            headers = {
                "Docker-Content-Digest": digest,
                "Location": f"/v2/{repo}/manifests/{digest}",
            }
            if self.referrers_api and b'"subject"' in seen.body:
                headers["OCI-Subject"] = json.loads(seen.body)["subject"]["digest"]
            return 201, headers, b""
        return self._error(405, "UNSUPPORTED", "method not allowed")

    def _blobs(self, seen: Seen, repo: str, digest: str) -> tuple[int, dict[str, str], bytes]:
        data = self.blobs.get((repo, digest))
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        return 200, {"Content-Length": str(len(data)), "Docker-Content-Digest": digest}, data

    def _blobs_uploads(
        self, seen: Seen, repo: str, upload: str
    ) -> tuple[int, dict[str, str], bytes]:
        if seen.method == "POST" and not upload:
            mount, source = seen.query.get("mount", [None])[0], seen.query.get("from", [None])[0]
            if mount and source and (source, mount) in self.blobs:
                self.blobs[(repo, mount)] = self.blobs[(source, mount)]
                return 201, {"Location": f"/v2/{repo}/blobs/{mount}"}, b""
            session = uuid.uuid4().hex
            self.uploads[session] = repo
            return 202, {"Location": f"/v2/{repo}/blobs/uploads/{session}", "Range": "0-0"}, b""
        if seen.method == "PATCH" and upload in self.uploads:
            received = self.received.get(upload, b"") + seen.body
            self.received[upload] = received
            location = f"/v2/{repo}/blobs/uploads/{upload}"
            return 202, {"Location": location, "Range": f"0-{len(received) - 1}"}, b""
        if seen.method == "PUT" and upload in self.uploads:
            digest = seen.query.get("digest", [""])[0]
            data = self.received.pop(upload, b"") + seen.body
            if digest_of(data) != digest:
                return self._error(400, "DIGEST_INVALID", "provided digest did not match")
            del self.uploads[upload]
            self.blobs[(repo, digest)] = data
            return (
                201,
                {"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest},
                b"",
            )
        if seen.method == "DELETE":
            self.uploads.pop(upload, None)
            return 204, {}, b""
        return self._error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")

    def _tags(self, seen: Seen, repo: str, rest: str) -> tuple[int, dict[str, str], bytes]:
        if not any(r == repo for (r, _) in self.manifests):
            return self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
        tags = sorted(
            ref for (r, ref) in self.manifests if r == repo and not ref.startswith("sha256:")
        )
        last = seen.query.get("last", [None])[0]
        if last is not None:
            tags = [t for t in tags if t > last]
        headers = {"Content-Type": "application/json"}
        size = self.tag_page_size
        if size is not None and len(tags) > size:
            tags = tags[:size]
            headers["Link"] = f'</v2/{repo}/tags/list?n={size}&last={tags[-1]}>; rel="next"'
        return 200, headers, json.dumps({"name": repo, "tags": tags}).encode()

    def _referrers(self, seen: Seen, repo: str, digest: str) -> tuple[int, dict[str, str], bytes]:
        if not self.referrers_api:
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
        found: list[dict[str, Any]] = []
        for (r, ref), (raw, media_type) in self.manifests.items():
            if r != repo or not ref.startswith("sha256:"):
                continue
            doc = json.loads(raw)
            if (doc.get("subject") or {}).get("digest") == digest:
                found.append({"mediaType": media_type, "digest": ref, "size": len(raw)})
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found})
        return 200, {"Content-Type": OCI_INDEX}, body.encode()


def make_client(
    fake: FakeRegistry,
    credential: Credential | None = None,
    config_dir: Any = None,
    **options: Any,
) -> RegistryClient:
    """A client for :data:`HOST` whose session talks only to ``fake``.

    ``config_dir`` must be an empty directory when no credential is given, so the user's own
    Docker config is never read.
    """
    opts = RegistryOptions(**options)
    if credential is not None:
        opts.credentials[HOST] = credential
    opts.credential_store = CredentialStore(config_dir) if config_dir is not None else None
    if credential is None and config_dir is None:
        raise ValueError("pass a credential or an empty config_dir")
    client = RegistryClient(HOST, opts)
    fake.mount_on(client)
    return client


def chunks_of(data: bytes, size: int = 7) -> Iterable[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
