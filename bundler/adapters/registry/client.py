"""The OCI distribution API over HTTP(S), one client per registry host.

Everything here is bounded: connect and read timeouts on every request, a fixed number of
attempts with exponential backoff for transient failures only (connection errors, 429, 5xx
gateway errors), manifest reads capped at 4 MiB. Blob bodies stream in both directions; their
digests are checked by :class:`~bundler.adapters.stream.VerifiedStream` on our side and by the
registry on commit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from bundler.adapters.registry.auth import Authenticator, parse_challenge
from bundler.adapters.registry.credentials import CredentialStore
from bundler.adapters.registry.limits import (
    MAX_ERROR_BODY_BYTES,
    MAX_REFERRERS_BYTES,
    MAX_TAG_LIST_BYTES,
    read_capped,
    same_origin,
)
from bundler.adapters.registry.options import RegistryOptions
from bundler.adapters.registry.tlstrust import ContextAdapter, base_bundle, context_for
from bundler.adapters.stream import CHUNK_SIZE, VerifiedStream
from bundler.errors import (
    AuthError,
    DigestMismatchError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import MAX_MANIFEST_BYTES, parse_manifest

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
MAX_TAG_PAGES = 1000
MAX_REDIRECTS = 10
USER_AGENT = "bundler/0.1"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses, with or without ``:port`` or brackets."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _not_tls(error_text: str) -> bool:
    """Whether a TLS error says the server answered in something else (a plain-HTTP server)."""
    return (
        "WRONG_VERSION_NUMBER" in error_text
        or "record layer failure" in error_text
        or "wrong version number" in error_text
    )


def speaks_tls(host: str, timeout: float) -> bool | None:
    """Whether the server at ``host[:port]`` answers a TLS handshake; None if it cannot be told.

    Only the question of HTTPS or plain HTTP on loopback is settled here, before any request:
    a bare handshake, nothing sent after it, no certificate judged (so no CA store is loaded,
    which costs tens of milliseconds at every start). False only for the answer a plain-HTTP
    server gives; a server that speaks TLS is then verified as always, by the HTTPS request.
    """
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        name, port = host, "443"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the probe decides nothing about trust
    try:
        with socket.create_connection((name.strip("[]"), int(port)), timeout=timeout) as sock:
            context.wrap_socket(sock).close()
    except ssl.SSLError as exc:
        return False if _not_tls(str(exc)) else None
    except (OSError, ValueError):
        return None  # unreachable: the request says so in its own words
    return True


def _one_line(text: str, limit: int = 200) -> str:
    # A registry's words end up in our one-line error: no newlines, bounded length.
    return " ".join(text.split())[:limit]


def _oci_error(resp: requests.Response) -> tuple[str | None, str]:
    try:
        read_capped(resp, MAX_ERROR_BODY_BYTES, "error body", truncate=True)
    except requests.RequestException:
        return None, _one_line(resp.reason or "")
    try:
        doc = resp.json()
        first = doc["errors"][0]
        code = _one_line(str(first.get("code")), 64)
        return code, _one_line(str(first.get("message") or first.get("code")))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = resp.text.strip().splitlines()
        return None, _one_line(text[0] if text else resp.reason or "")


log = logging.getLogger(__name__)


def loggable_url(url: str) -> str:
    """``url`` as a request log may show it: no user info, and no query.

    Upload sessions and presigned blob URLs carry secrets in the query; ``?…`` marks one left
    out.
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def _log_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Log one request and its status (``--debug``): never a header, a body or a query."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s -> %s", response.request.method, loggable_url(response.url), response.status_code
        )


class RegistryClient:
    """Speaks the distribution API to one registry host (``host[:port]``)."""

    def __init__(self, host: str, options: RegistryOptions | None = None) -> None:
        self.host = host
        self.options = options or RegistryOptions()
        credential = self.options.credentials.get(host)
        if credential is None:
            store = self.options.credential_store or CredentialStore()
            credential = store.get(host)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        pool = max(self.options.parallel + 2, 4)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        # Passed on every request (requests would let REQUESTS_CA_BUNDLE override a session's
        # own): --ca-file, else $SSL_CERT_FILE / $REQUESTS_CA_BUNDLE, else the system bundle,
        # plus the certs.d CA files of this registry (adapters/registry/tlstrust.py).
        self.verify: bool | str = True
        context = None
        if self.options.insecure_skip_tls_verify:
            self.verify = False
        else:
            self.verify = base_bundle(self.options.ca_bundle) or True
            context = context_for(host, self.options.ca_bundle)
        secure: HTTPAdapter = adapter
        if context is not None:
            secure = ContextAdapter(context, pool_connections=2, pool_maxsize=pool, max_retries=0)
        self.session.mount("https://", secure)
        self.session.verify = self.verify
        self.session.max_redirects = MAX_REDIRECTS
        self.session.hooks["response"].append(self._guard_redirect)
        self.session.hooks["response"].append(_log_response)
        self.auth = Authenticator(host, credential, self.options.timeout, self.verify)
        self._base: str | None = None
        self._no_referrers_api = False
        self._base_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep

    # -- connection set-up -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``scheme://host``, found by ``GET /v2/`` on first use and then kept (thread-safe)."""
        with self._base_lock:
            if self._base is None:
                self._base = self._discover()
            return self._base

    def _discover(self) -> str:
        """Pick the scheme and learn the auth challenge from ``GET /v2/``.

        HTTPS unless told otherwise; plain HTTP is tried only on loopback when the server there
        does not speak TLS, never for a certificate failure.
        """
        schemes = ["http"] if self.options.plain_http else ["https"]
        if not self.options.plain_http and is_loopback(self.host):
            schemes.append("http")
            # Settle it with a bare handshake when no proxy is in the way: a plain-HTTP
            # registry then costs no HTTPS attempt (and no CA store loaded for it).
            direct = not requests.utils.get_environ_proxies(f"https://{self.host}/")
            if direct and speaks_tls(self.host, self.options.connect_timeout) is False:
                schemes = ["http"]
        last: Exception | None = None
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            try:
                resp = self._send_with_retries(
                    lambda base=base: self.session.get(  # type: ignore[misc]
                        f"{base}/v2/", timeout=self.options.timeout, verify=self.verify, stream=True
                    ),
                    what=f"GET {base}/v2/",
                )
            except requests.exceptions.SSLError as exc:
                text = str(exc)
                if scheme == "https" and "http" in schemes and _not_tls(text):
                    last = exc
                    continue
                raise TransportError(self._tls_failure(exc)) from None
            except requests.RequestException as exc:
                raise TransportError(f"cannot reach registry {self.host}: {_short(exc)}") from None
            if resp.status_code == 401:
                self.auth.learn(parse_challenge(resp.headers.get("WWW-Authenticate")))
            elif resp.status_code not in (200, 404):
                resp.close()
                raise RegistryError(
                    f"{self.host} answered HTTP {resp.status_code} on /v2/", resp.status_code
                )
            with resp:
                read_capped(resp, MAX_ERROR_BODY_BYTES, "/v2/ answer", truncate=True)
            return base
        raise TransportError(f"cannot reach registry {self.host}: {_short(last)}")

    def _send_with_retries(
        self, send: Callable[[], requests.Response], what: str
    ) -> requests.Response:
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                resp = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if isinstance(exc, requests.exceptions.SSLError) or attempt == attempts:
                    raise
                self.sleep(self._backoff(attempt))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < attempts:
                delay = self._retry_after(resp) or self._backoff(attempt)
                resp.close()
                self.sleep(delay)
                continue
            return resp
        raise TransportError(f"{what}: gave up after {attempts} attempts")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        base = min(self.options.backoff_base * (2 ** (attempt - 1)), self.options.backoff_max)
        return float(base * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not crypto

    @staticmethod
    def _retry_after(resp: requests.Response) -> float | None:
        value = resp.headers.get("Retry-After")
        if value and value.isdigit():
            return min(float(value), MAX_RETRY_AFTER_S)
        return None

    def _guard_redirect(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: refuse a redirect from HTTPS to plain HTTP; bound a redirect's body.

        requests itself drops ``Authorization`` when a redirect changes scheme, host or port; the
        body of a redirect would be read whole before it is followed.
        """
        if not resp.is_redirect:
            return
        target = urljoin(resp.url, resp.headers.get("Location", ""))
        if urlsplit(resp.url).scheme.lower() == "https" and urlsplit(target).scheme != "https":
            resp.close()
            raise TransportError(
                f"{self.host} redirected {_path(resp.url)} from HTTPS to {_where(target)}; "
                "refusing to send anything there in clear"
            )
        read_capped(resp, MAX_ERROR_BODY_BYTES, "redirect body", truncate=True)

    def _target(self, path_or_url: str) -> str:
        """The absolute URL of a path or of a URL the registry named (Location, Link).

        A URL on the registry's own origin is used as it is; one that turns HTTPS into plain
        HTTP is refused (credentials and blobs would cross the network in clear).
        """
        if "://" not in path_or_url and not path_or_url.startswith("//"):
            return self.base_url + path_or_url
        url = urljoin(self.base_url + "/", path_or_url)
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise RegistryError(f"{self.host} named a URL that is not http(s): {_where(url)}")
        if urlsplit(self.base_url).scheme == "https" and scheme != "https":
            raise TransportError(
                f"{self.host} named a plain-HTTP URL ({_where(url)}) for a request made over "
                "HTTPS; refusing to send credentials or content there in clear"
            )
        return url

    def _authorization(self, url: str, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for ``url``: only on the registry's own scheme, host, port.

        Like oras-go (auth state and credentials looked up per request host) and unlike a
        client that attaches its one credential to whatever URL the registry names: an upload
        Location on another host gets no credentials at all. Credentials never go over plain
        HTTP to a host that is not loopback, whatever ``--plain-http`` says.
        """
        if not same_origin(url, self.base_url):
            return None
        authorization = self.auth.header_for(scopes, self.session)
        if (
            authorization
            and self.auth.credential is not None
            and urlsplit(url).scheme == "http"
            and not is_loopback(self.host)
        ):
            raise AuthError(
                f"refusing to send the credentials for {self.host} over plain HTTP; "
                "use HTTPS for a registry that needs a login (or log out of it)"
            )
        return authorization

    # -- the one request path ----------------------------------------------------------

    # Complexity kept: one retry loop; each status that ends, retries or re-authenticates a branch.
    def request(  # noqa: C901
        self,
        method: str,
        path_or_url: str,
        scopes: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
        replayable: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request with auth, retrying transient failures when the body allows it.

        ``path_or_url`` is a path on the registry or a URL it named (see :meth:`_target`);
        credentials go only to the registry's own origin (see :meth:`_authorization`). The body
        is always streamed from the wire: without ``stream`` at most 64 KiB of it is kept (what
        an error or a small answer needs); with ``stream`` the caller reads it with its own cap.
        """
        url = self._target(path_or_url)
        what = f"{method} {_where(url)}"
        foreign = not same_origin(url, self.base_url)
        auth_retried = False
        while True:
            hdrs = dict(headers or {})
            authorization = self._authorization(url, scopes)
            if authorization:
                hdrs["Authorization"] = authorization

            def send(hdrs: dict[str, str] = hdrs) -> requests.Response:
                return self.session.request(
                    method,
                    url,
                    headers=hdrs,
                    params=params,
                    data=body,
                    timeout=self.options.timeout,
                    stream=True,
                    allow_redirects=True,
                    verify=self.verify,
                )

            try:
                resp = self._send_with_retries(send, what) if replayable else send()
            except IntegrityError:
                raise
            except requests.exceptions.SSLError as exc:
                raise TransportError(self._tls_failure(exc)) from None
            except requests.RequestException as exc:
                cause = _integrity_cause(exc, body)
                if cause is not None:
                    raise cause from None
                raise TransportError(f"{what} failed: {_short(exc)}") from None
            if foreign and resp.status_code in (401, 403):
                resp.close()
                raise AuthError(
                    f"{self.host} sent {method} to another host ({_where(url)}), which asks "
                    f"for a login; bundler sends the credentials for {self.host} only to "
                    f"{self.host} itself"
                )
            if resp.status_code == 401 and not auth_retried:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
                resp.close()
                self.auth.on_unauthorized(challenge, scopes, self.session)
                if not replayable:
                    raise _Reauthenticated()
                auth_retried = True
                continue
            if resp.status_code in (401, 403):
                _code, message = _oci_error(resp)
                resp.close()
                who = (
                    f"as {self.auth.credential.username!r}"
                    if self.auth.credential
                    else ("anonymously")
                )
                raise AuthError(f"{self.host} refused {method} {_path(url)} {who}: {message}")
            if not stream:
                read_capped(resp, MAX_ERROR_BODY_BYTES, what, truncate=True)
            return resp

    # -- manifests ---------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str | None, Digest]:
        """Raw manifest bytes, the served media type, and their verified digest."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            (f"repository:{repo}:pull",),
            headers={"Accept": mt.MANIFEST_ACCEPT},
            stream=True,
        )
        with resp:
            self._expect(resp, (200,), f"manifest {repo}:{ref}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_BYTES:
                raise ManifestError(f"manifest {repo}:{ref} is {declared} bytes; limit 4 MiB")
            raw = b""
            for chunk in resp.iter_content(64 * 1024):
                raw += chunk
                if len(raw) > MAX_MANIFEST_BYTES:
                    raise ManifestError(f"manifest {repo}:{ref} exceeds 4 MiB")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip() or None
            header_digest = resp.headers.get("Docker-Content-Digest")
        if ref.startswith(("sha256:", "sha512:")):
            expected = Digest.parse(ref)
            if not expected.matches(raw):
                raise DigestMismatchError(
                    f"registry {self.host} served manifest {repo}@{ref} with other content"
                )
            return raw, media_type, expected
        actual = Digest.of(raw)
        if header_digest:
            try:
                claimed = Digest.parse(header_digest)
            except Exception:
                claimed = None
            if claimed is not None and claimed.algorithm == "sha256" and claimed != actual:
                raise DigestMismatchError(
                    f"registry {self.host} says {repo}:{ref} is {claimed} but served {actual}"
                )
        return raw, media_type, actual

    def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        """The descriptor ``ref`` (tag or digest) resolves to, or None if there is no such ref.

        Without a digest or length in the HEAD answer, the manifest is fetched and hashed instead.
        """
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{ref}",
            (f"repository:{repo}:pull",),
            headers={"Accept": mt.MANIFEST_ACCEPT},
        )
        with resp:
            if resp.status_code == 404:
                return None
            self._expect(resp, (200,), f"manifest {repo}:{ref}")
            digest = resp.headers.get("Docker-Content-Digest")
            length = resp.headers.get("Content-Length")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if not digest or not length or not length.isdigit():
            # Some registries omit the digest on HEAD; fall back to a GET that we hash.
            raw, served_type, actual = self.get_manifest(repo, ref)
            parsed = parse_manifest(raw, media_type=served_type)
            return Descriptor(parsed.media_type, actual, len(raw))
        return Descriptor(media_type or mt.OCI_MANIFEST, Digest.parse(digest), int(length))

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> requests.Response:
        """PUT ``raw`` under ``ref`` (a digest or a tag); the response, for its headers.

        RegistryError unless the registry answers 200 or 201.
        """
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            (f"repository:{repo}:pull,push",),
            headers={"Content-Type": media_type},
            body=raw,
        )
        with resp:
            self._expect(resp, (201, 200), f"manifest upload {repo}:{ref}")
        return resp

    # -- blobs -------------------------------------------------------------------------

    def blob_exists(self, repo: str, descriptor: Descriptor) -> bool:
        """True when the registry holds the blob at the descriptor's size (HEAD, no bytes move)."""
        resp = self.request(
            "HEAD", f"/v2/{repo}/blobs/{descriptor.digest}", (f"repository:{repo}:pull",)
        )
        with resp:
            if resp.status_code == 404:
                return False
            self._expect(resp, (200,), f"blob {repo}@{descriptor.digest}")
            length = resp.headers.get("Content-Length")
            return length is None or not length.isdigit() or int(length) == descriptor.size

    def get_blob(self, repo: str, descriptor: Descriptor) -> Iterator[bytes]:
        """Stream a blob's raw bytes (the caller verifies them)."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/blobs/{descriptor.digest}",
            (f"repository:{repo}:pull",),
            stream=True,
        )
        try:
            self._expect(resp, (200,), f"blob {repo}@{descriptor.digest}")
        except BaseException:
            resp.close()
            raise
        return self._iter_body(resp, f"blob {repo}@{descriptor.digest}")

    def _iter_body(self, resp: requests.Response, what: str) -> Iterator[bytes]:
        with resp:
            try:
                yield from resp.iter_content(CHUNK_SIZE)
            except requests.RequestException as exc:
                raise TransportError(f"{what} from {self.host}: {_short(exc)}") from None

    def mount_blob(self, repo: str, descriptor: Descriptor, from_repo: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did."""
        resp = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            (f"repository:{repo}:pull,push", f"repository:{from_repo}:pull"),
            params={"mount": str(descriptor.digest), "from": from_repo},
        )
        with resp:
            if resp.status_code == 201:
                return True
            if resp.status_code == 202:
                # The registry opened an upload session instead; abandon it.
                location = resp.headers.get("Location")
                if location:
                    self._cancel_upload(repo, location)
                return False
            self._expect(resp, (201, 202), f"mount of {descriptor.digest} into {repo}")
        return False

    def _cancel_upload(self, repo: str, location: str) -> None:
        # Best effort: the registry expires abandoned sessions anyway.
        with contextlib.suppress(Exception):
            self.request(
                "DELETE",
                urljoin(self.base_url + "/", location),
                (f"repository:{repo}:pull,push",),
            ).close()

    def upload_blob(self, repo: str, stream: VerifiedStream) -> None:
        """Upload one blob from a verified stream (monolithic PUT or PATCH chunks)."""
        scopes = (f"repository:{repo}:pull,push",)
        digest = stream.descriptor.digest
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes)
        with resp:
            self._expect(resp, (202,), f"upload session for {digest} in {repo}")
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.host} opened an upload without a Location")
        location = urljoin(self.base_url + "/", location)
        chunk_size = self.options.chunk_size
        try:
            if chunk_size and stream.descriptor.size > chunk_size:
                location = self._upload_chunks(repo, location, stream, chunk_size, scopes)
                body: Any = b""
            else:
                body = stream
            resp = self.request(
                "PUT",
                location,
                scopes,
                headers={"Content-Type": "application/octet-stream"},
                params={"digest": str(digest)},
                body=body,
                replayable=False,
            )
        except BaseException:
            if stream.error is not None:
                raise stream.error from None
            raise
        with resp:
            if stream.error is not None:
                raise stream.error
            self._expect(resp, (201,), f"upload of blob {digest} to {repo}")
        if not stream.finished:
            raise TransportError(f"upload of {digest} ended before the whole blob was sent")

    def _upload_chunks(
        self,
        repo: str,
        location: str,
        stream: VerifiedStream,
        chunk_size: int,
        scopes: tuple[str, ...],
    ) -> str:
        offset = 0
        pending = bytearray()
        source = iter(stream)
        exhausted = False
        while True:
            while not exhausted and len(pending) < chunk_size:
                try:
                    pending += next(source)
                except StopIteration:
                    exhausted = True
            if not pending:
                return location
            piece = bytes(pending[:chunk_size])
            del pending[:chunk_size]
            end = offset + len(piece) - 1
            resp = self.request(
                "PATCH",
                location,
                scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                },
                body=piece,
                replayable=False,
            )
            with resp:
                self._expect(resp, (202,), f"chunk {offset}-{end} of {stream.descriptor.digest}")
                # Relative to the URL of this request (RFC 9110), which may be another host.
                location = urljoin(location, resp.headers.get("Location") or location)
            offset += len(piece)

    # -- tags and referrers ------------------------------------------------------------

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, following ``Link`` pages; NotFoundError for an unknown repository.

        RegistryError past ``MAX_TAG_PAGES`` pages, for a page over 4 MiB, for a malformed page,
        or for a next page on another scheme, host or port: like oras-go (``parseLink`` refuses
        a next link that is not the same origin as the request, against server-side request
        forgery), and unlike containers/image (which keeps only the link's path and query).
        """
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list"
        for _ in range(MAX_TAG_PAGES):
            if url is None:
                return tags
            resp = self.request("GET", url, (f"repository:{repo}:pull",), stream=True)
            with resp:
                if resp.status_code == 404:
                    raise NotFoundError(f"repository {repo} not found on {self.host}")
                self._expect(resp, (200,), f"tag list of {repo}")
                read_capped(resp, MAX_TAG_LIST_BYTES, f"tag list page of {repo} from {self.host}")
                try:
                    page = resp.json().get("tags") or []
                except (ValueError, AttributeError):
                    raise RegistryError(f"{self.host} sent a malformed tag list") from None
                if not isinstance(page, list):
                    raise RegistryError(f"{self.host} sent a malformed tag list")
                tags.extend(str(t) for t in page)
                link = resp.links.get("next", {}).get("url")
            url = self._next_page(repo, link) if link else None
        raise RegistryError(f"{self.host}: tag list of {repo} exceeds {MAX_TAG_PAGES} pages")

    def _next_page(self, repo: str, link: str) -> str:
        url = urljoin(self.base_url + "/", link)
        if not same_origin(url, self.base_url):
            raise RegistryError(
                f"{self.host} pointed the next page of the tag list of {repo} at another "
                f"origin ({_where(url)}); refusing to follow it"
            )
        return url

    def referrers(self, repo: str, digest: Digest) -> list[Descriptor] | None:
        """The referrers API answer, or None if the registry has no such API.

        A registry without the route says so once; later calls do not ask again (a copy asks
        for every manifest it plans).
        """
        if self._no_referrers_api:
            return None
        resp = self.request(
            "GET",
            f"/v2/{repo}/referrers/{digest}",
            (f"repository:{repo}:pull",),
            headers={"Accept": mt.OCI_INDEX},
            stream=True,
        )
        with resp:
            content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            route_missing = resp.status_code in (400, 405, 501) or (
                resp.status_code == 404 and content_type.startswith("text/plain")
            )  # distribution 2.8 answers "404 page not found": the route does not exist
            if route_missing:
                self._no_referrers_api = True
                return None
            if resp.status_code == 404 and content_type != mt.OCI_INDEX:
                return None  # e.g. an unknown repository: says nothing about the API
            self._expect(resp, (200,), f"referrers of {repo}@{digest}")
            raw = read_capped(
                resp, MAX_REFERRERS_BYTES, f"referrers answer for {repo}@{digest} from {self.host}"
            )
        manifest = parse_manifest(raw, media_type=mt.OCI_INDEX)
        return list(manifest.manifests)

    # -- helpers -----------------------------------------------------------------------

    def _expect(self, resp: requests.Response, ok: tuple[int, ...], what: str) -> None:
        if resp.status_code in ok:
            return
        code, message = _oci_error(resp)
        if resp.status_code == 404:
            raise NotFoundError(f"{what} not found on {self.host}")
        detail = f"{code}: {message}" if code else message
        raise RegistryError(
            f"{what} on {self.host} failed: HTTP {resp.status_code} {detail}".rstrip(),
            resp.status_code,
            code,
        )

    def _tls_failure(self, exc: Exception) -> str:
        """One line for a TLS failure, with the fix where the certificate's issuer is unknown."""
        text = f"TLS to {self.host} failed: {_short(exc)}"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            text += (
                f"; if {self.host} uses a private CA, pass --ca-file CA.pem or put the CA in "
                f"~/.config/containers/certs.d/{self.host}/ca.crt"
            )
        return text

    def close(self) -> None:
        """Close the HTTP session and its pooled connections."""
        self.session.close()


class _Reauthenticated(TransportError):
    """A non-replayable request met a 401; the new credentials are ready, retry from source."""


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    ssl = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)\s*\(_ssl", text)
    if ssl:
        return ssl.group(1)
    refused = re.search(r"(Connection refused|Name or service not known|timed out)", text)
    if refused:
        return refused.group(1)
    for marker in ("Caused by ", "Max retries exceeded"):
        if marker in text and "(" in text:
            text = text.split("(", 1)[-1]
    return text.strip("()'\" ")[:300]


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def _where(url: str) -> str:
    # scheme://host[:port]/path of a URL a registry named: no query (upload state, signatures)
    # and no userinfo, bounded, on one line.
    parts = urlsplit(url)
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    return _one_line(f"{parts.scheme}://{host}{parts.path}", 200)


def _integrity_cause(exc: BaseException, body: Any) -> IntegrityError | None:
    if isinstance(body, VerifiedStream) and isinstance(body.error, IntegrityError):
        return body.error
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, IntegrityError):
            return current
        current = current.__cause__ or current.__context__
    return None
