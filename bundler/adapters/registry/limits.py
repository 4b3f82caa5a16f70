"""Bounds on what a registry or token service may make us hold in memory, and where we follow.

Every response body the client reads is read through :func:`read_capped`, with a cap chosen per
kind of answer: a hostile registry that answers with gigabytes gets a one-line error naming the
cap instead of our memory. Blob bodies are streamed and never held, so they have no cap here.

:func:`origin` and :func:`same_origin` decide where credentials may go: only to the registry's
own scheme, host and port.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from bundler.errors import RegistryError
from bundler.model.manifest import MAX_MANIFEST_BYTES

# Token answers are a JWT or an opaque string and a few fields: kilobytes, not megabytes.
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
# A referrers answer is an image index, so the manifest bound applies; a tag-list page is of the
# same order (10 000 tags of 128 characters are 1.3 MB).
MAX_REFERRERS_BYTES = MAX_MANIFEST_BYTES
MAX_TAG_LIST_BYTES = MAX_MANIFEST_BYTES
# Error bodies only give us their first line; anything past this is dropped, not an error.
MAX_ERROR_BODY_BYTES = 64 * 1024
_READ = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


def describe_size(limit: int) -> str:
    """``4 MiB``, ``64 KiB`` or ``N bytes``: a cap as a person reads it."""
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def read_capped(resp: requests.Response, limit: int, what: str, *, truncate: bool = False) -> bytes:
    """The body of ``resp``, read in chunks and never more than ``limit`` bytes.

    Over the limit: RegistryError naming ``what`` and the cap, or with ``truncate`` the first
    ``limit`` bytes (for error bodies, whose first line is all we use). A body already read
    (``stream=False``) is checked the same way. The body is kept on ``resp`` so that
    ``resp.json()`` and ``resp.text`` work afterwards.
    """
    if isinstance(resp._content, bytes):  # read before (stream=False, or by us)
        data = resp._content
    else:
        declared = resp.headers.get("Content-Length")
        if not truncate and declared and declared.isdigit() and int(declared) > limit:
            resp.close()
            raise RegistryError(f"{what} is {declared} bytes; the limit is {describe_size(limit)}")
        buf = bytearray()
        try:
            for chunk in resp.iter_content(_READ):
                buf += chunk
                if len(buf) > limit:
                    break
        except requests.RequestException:
            if not truncate:
                raise
        data = bytes(buf)
        resp._content = data  # what .content, .text and .json() return from now on
        if len(data) > limit:
            resp.close()  # the rest is never read: this connection is not reused
    if len(data) > limit:
        if truncate:
            data = data[:limit]
            resp._content = data
            return data
        raise RegistryError(f"{what} exceeds {describe_size(limit)}; refusing to read more")
    return data


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, lowercased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def same_origin(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` share scheme, host and port (a default port counts as given)."""
    return origin(a) == origin(b)
