"""``bundler serve``: an OCI image layout served read-only over the distribution API.

For a small site without a registry of its own: containerd, Helm and Argo CD pull from it as
from any registry. Pull only (the distribution spec's pull section, plus tags and referrers):

- ``GET /v2/``: the API is here (and the credentials are right, with basic auth);
- ``GET|HEAD /v2/NAME/manifests/REF``: by tag or digest, with ``Docker-Content-Digest``;
- ``GET|HEAD /v2/NAME/blobs/DIGEST``: ``Range`` requests answered 206;
- ``GET /v2/NAME/tags/list``: ``n`` and ``last`` paginate, ``Link`` names the next page;
- ``GET /v2/NAME/referrers/DIGEST``: an image index of the manifests whose subject it is;
- anything else, writes included, ``405 UNSUPPORTED``.

Names come from the layout's ``index.json`` ref names (``[HOST/]NAME:TAG``, as ``copy`` and
``promote`` write them): the host part is dropped, so ``internal.example/platform/demo:1.0.0``
is served as ``platform/demo``, tag ``1.0.0``. The index is read again when it changes, so a
promotion into the served layout shows at once. Blob files are opened without following links.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bundler.adapters.fsafe import open_regular
from bundler.adapters.layout import INDEX_FILE, LayoutDirectory, LayoutSource, blob_relpath
from bundler.errors import BundlerError, UsageError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.reference import Reference

CHUNK = 1024 * 1024
MAX_TAGS_PAGE = 1000
_NAME = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_ROUTE = re.compile(
    rf"/v2/(?P<name>{_NAME.pattern})/(?P<kind>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)"
)


@dataclass(frozen=True)
class BasicAuth:
    """The one user that may pull, and its password (compared in constant time)."""

    username: str
    password: str

    def admits(self, header: str | None) -> bool:
        """True when an ``Authorization: Basic`` header names this user and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.username.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode()
        )


class _Catalog:
    """The layout's names and entries, read again whenever ``index.json`` changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.directory = LayoutDirectory(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._source: LayoutSource | None = None
        self._tags: dict[str, dict[str, Descriptor]] = {}
        self._manifests: dict[Digest, Descriptor] | None = None  # by digest, made when asked

    def current(self) -> tuple[LayoutSource, dict[str, dict[str, Descriptor]]]:
        """The layout as it is now: a source over it and ``{name: {tag: descriptor}}``."""
        info = os.stat(self.path / INDEX_FILE)
        stamp = (info.st_mtime_ns, info.st_size)
        with self._lock:
            if self._source is None or stamp != self._stamp:
                source = LayoutSource(self.directory, None)
                tags: dict[str, dict[str, Descriptor]] = {}
                for entry in source.entries:
                    named = _served_name(entry.annotations.get(mt.ANNOTATION_REF_NAME))
                    if named is not None and entry.media_type in mt.MANIFESTS:
                        tags.setdefault(named[0], {})[named[1]] = entry
                self._source, self._tags, self._stamp = source, tags, stamp
                self._manifests = None
            return self._source, self._tags

    def manifest(self, source: LayoutSource, digest: Digest) -> Descriptor | None:
        """A manifest by digest: an index entry, or one the entries reach (child, referrer).

        The map is made once per ``index.json`` (the first digest asked), not per request.
        """
        from bundler.services.graph import walk

        with self._lock:
            if self._manifests is None or source is not self._source:
                found = {e.digest: e for e in source.entries if e.media_type in mt.MANIFESTS}
                for entry in list(found.values()):
                    try:
                        reached = walk(source, entry).manifests.values()
                    except BundlerError:
                        continue  # a broken entry hides only what is under it
                    for m in reached:
                        found.setdefault(m.digest, m.descriptor())
                if source is self._source:
                    self._manifests = found
                return found.get(digest)
            return self._manifests.get(digest)


def _served_name(ref: str | None) -> tuple[str, str] | None:
    """``(name, tag)`` a layout ref name is served under, or None (digests, bare tags)."""
    if not ref or ":" not in ref:
        return None
    try:
        reference = Reference.parse(ref, default_tag=False)
    except BundlerError:
        return None
    if reference.tag is None or reference.digest is not None:
        return None
    repository = reference.repository
    defaulted = not ref.startswith(reference.registry + "/")  # "demo:1.0.0", no host given
    if defaulted:
        repository = repository.removeprefix("library/")  # served as "demo", as it was named
    return repository, reference.tag


class _Handler(BaseHTTPRequestHandler):
    server_version = "bundler-serve"
    protocol_version = "HTTP/1.1"
    catalog: _Catalog
    auth: BasicAuth | None
    log: Callable[[str], None]

    # ----------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        self.log(f"{self.address_string()} {format % args}")

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, *, head: bool = False) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        extra = {"Content-Type": "application/json"}
        if status == HTTPStatus.UNAUTHORIZED:
            extra["WWW-Authenticate"] = 'Basic realm="bundler"'
        self._send(status, body, extra, head=head)

    def _authorised(self, head: bool) -> bool:
        if self.auth is None or self.auth.admits(self.headers.get("Authorization")):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "UNAUTHORIZED", "authentication required", head=head)
        return False

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= CHUNK:
            self.rfile.read(length)
        self.close_connection = length > CHUNK
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "UNSUPPORTED", "this registry is read-only")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def _route(self, *, head: bool) -> None:
        if not self._authorised(head):
            return
        url = urlsplit(self.path)
        if url.path in ("/v2", "/v2/"):
            self._send(HTTPStatus.OK, b"{}", {"Content-Type": "application/json"}, head=head)
            return
        match = _ROUTE.fullmatch(url.path)
        if match is None:
            self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", "no such route", head=head)
            return
        name, kind, ref = match.group("name", "kind", "ref")
        try:
            source, tags = self.catalog.current()
            if kind == "manifests":
                self._manifest(source, tags.get(name, {}), name, ref, head)
            elif kind == "blobs":
                self._blob(name, ref, head)
            elif kind == "tags" and ref == "list":
                self._tags(tags, name, parse_qs(url.query), head)
            elif kind == "referrers":
                self._referrers(source, ref, parse_qs(url.query), head)
            else:
                self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", "no such route", head=head)
        except (BundlerError, OSError) as exc:
            self.log(f"error: {exc}")
            self._error(HTTPStatus.NOT_FOUND, "UNKNOWN", "not available", head=head)

    # -------------------------------------------------------------------- pulls
    def _manifest(
        self,
        source: LayoutSource,
        tagged: dict[str, Descriptor],
        name: str,
        ref: str,
        head: bool,
    ) -> None:
        if ":" in ref:
            try:
                digest = Digest.parse(ref)
            except BundlerError:
                self._error(HTTPStatus.BAD_REQUEST, "DIGEST_INVALID", "bad digest", head=head)
                return
            descriptor = next((d for d in tagged.values() if d.digest == digest), None)
            found = descriptor or self.catalog.manifest(source, digest)
        else:
            found = tagged.get(ref)
        if found is None:
            self._error(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", f"{name}:{ref}", head=head)
            return
        manifest = source.fetch_manifest(found)  # bounded and digest-checked
        headers = {
            "Content-Type": manifest.media_type,
            "Docker-Content-Digest": str(manifest.digest),
            "Content-Length": str(len(manifest.raw)),
        }
        self._send(HTTPStatus.OK, manifest.raw, headers, head=head)

    def _blob(self, name: str, ref: str, head: bool) -> None:
        try:
            digest = Digest.parse(ref)
        except BundlerError:
            self._error(HTTPStatus.BAD_REQUEST, "DIGEST_INVALID", "bad digest", head=head)
            return
        try:
            fd = open_regular(self.catalog.path / blob_relpath(digest), "blob")
        except (FileNotFoundError, BundlerError):
            self._error(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", f"{name}@{digest}", head=head)
            return
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start, end = 0, size - 1
            status = HTTPStatus.OK
            wanted = _range(self.headers.get("Range"), size)
            if isinstance(wanted, str):  # unsatisfiable
                headers = {"Content-Range": f"bytes */{size}"}
                self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", headers, head=head)
                return
            headers = {
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": str(digest),
                "Accept-Ranges": "bytes",
            }
            if wanted is not None:
                start, end = wanted
                status = HTTPStatus.PARTIAL_CONTENT
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers["Content-Length"] = str(end - start + 1 if size else 0)
            self._send(status, b"", headers, head=True)
            if head:
                return
            fh.seek(start)
            left = end - start + 1 if size else 0
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    self.close_connection = True  # the file shrank under us: cut the answer
                    return
                self.wfile.write(chunk)
                left -= len(chunk)

    def _tags(
        self,
        tags: dict[str, dict[str, Descriptor]],
        name: str,
        query: dict[str, list[str]],
        head: bool,
    ) -> None:
        if name not in tags:
            self._error(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", name, head=head)
            return
        listed = sorted(tags[name])
        last = query.get("last", [""])[0]
        if last:
            listed = [t for t in listed if t > last]
        try:
            n = min(int(query.get("n", [str(MAX_TAGS_PAGE)])[0]), MAX_TAGS_PAGE)
        except ValueError:
            n = MAX_TAGS_PAGE
        page, more = listed[: max(n, 0)], len(listed) > max(n, 0)
        headers = {"Content-Type": "application/json"}
        if more and page:
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={page[-1]}>; rel="next"'
        body = json.dumps({"name": name, "tags": page}).encode()
        self._send(HTTPStatus.OK, body, headers, head=head)

    def _referrers(
        self, source: LayoutSource, ref: str, query: dict[str, list[str]], head: bool
    ) -> None:
        try:
            subject = Digest.parse(ref)
        except BundlerError:
            self._error(HTTPStatus.BAD_REQUEST, "DIGEST_INVALID", "bad digest", head=head)
            return
        wanted = query.get("artifactType", [None])[0]
        found = [
            d for d in source.referrers(subject) if wanted is None or d.artifact_type == wanted
        ]
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_json() for d in found],
        }
        headers = {"Content-Type": mt.OCI_INDEX}
        if wanted is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        self._send(HTTPStatus.OK, json.dumps(doc).encode(), headers, head=head)


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single ``bytes=START-END`` range (or ``START-``, ``-SUFFIX``); "bad" if unsatisfiable."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # several ranges or another unit: the whole blob, as RFC 9110 allows
    if not match.group(1):
        suffix = int(match.group(2))
        return (max(size - suffix, 0), size - 1) if suffix and size else "bad"
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return "bad"
    return start, min(end, size - 1)


class LayoutServer:
    """A running server over one layout; ``address`` is what it listens on."""

    def __init__(
        self,
        layout: Path,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        tls: tuple[Path, Path] | None = None,
        auth: BasicAuth | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        if not (layout / INDEX_FILE).is_file():
            raise UsageError(f"{layout} is not an OCI layout (no {INDEX_FILE}): nothing to serve")
        if auth is not None and tls is None and host not in ("127.0.0.1", "::1", "localhost"):
            raise UsageError(
                "basic auth over plain HTTP beyond loopback sends the password in clear: "
                "add --tls-cert and --tls-key"
            )
        handler = type(
            "LayoutHandler",
            (_Handler,),
            {"catalog": _Catalog(layout), "auth": auth, "log": staticmethod(log)},
        )
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(str(tls[0]), str(tls[1]))
            except (ssl.SSLError, OSError) as exc:
                raise UsageError(
                    f"cannot use TLS certificate {tls[0]} and key {tls[1]}: {exc}"
                ) from None
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"

    @property
    def address(self) -> str:
        """``http[s]://HOST:PORT`` as clients reach it."""
        host, port = self.httpd.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"{self.scheme}://{shown}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or the process is stopped)."""
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
