"""Image references in the OCI/distribution grammar, with Docker's familiar defaults.

``nginx:1.25`` means ``docker.io/library/nginx:1.25``; ``localhost:5000/a/b@sha256:...`` names a
digest in a loopback registry. The grammar is the one distribution's ``reference`` package
enforces, so a string we accept is one every registry accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bundler.errors import ReferenceFormatError
from bundler.model.digest import Digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"

# \Z, not $: '$' also matches before a trailing newline. ASCII: distribution's \w is ASCII.
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z", re.ASCII)
_DOMAIN_RE = re.compile(rf"{_DOMAIN}\Z", re.ASCII)
_TAG_RE = re.compile(rf"{_TAG}\Z", re.ASCII)
_DIGEST_LIKE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}\Z")


def _shown(text: str) -> str:
    """``text`` fit for an error message: credentials typed into it are starred.

    ``https://user:pass@host/repo`` and ``user:pass@host/repo`` are not references, but what is
    before the ``@`` is a secret; a real ``name@algorithm:digest`` is shown as it is.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    userinfo, at, after = rest.partition("@")
    if at and "/" not in userinfo and (sep or not _DIGEST_LIKE.match(after)):
        return f"{scheme}{sep}***@{after}"
    return text


def is_valid_tag(tag: str) -> bool:
    """True when ``tag`` fits distribution's tag grammar.

    That is 1 to 128 ASCII word characters, dots and dashes, not starting with a dot or a dash.
    """
    return bool(_TAG_RE.match(tag))


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry host only if it looks like one."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


@dataclass(frozen=True)
class Reference:
    """``registry/repository[:tag][@digest]``; ``registry`` includes any port."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> Reference:
        """Parse a reference; ReferenceFormatError names what is wrong with it.

        Without a tag or digest, the tag is ``latest`` unless ``default_tag`` is False.
        """
        original = _shown(text)
        if not text or text != text.strip():
            raise ReferenceFormatError(f"invalid reference {original!r}: empty or padded")
        digest: Digest | None = None
        if "@" in text:
            text, _, digest_text = text.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except ReferenceFormatError as exc:
                raise ReferenceFormatError(f"invalid reference {original!r}: {exc}") from None
        tag: str | None = None
        # A ':' after the last '/' separates the tag; one before it belongs to a port.
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise ReferenceFormatError(f"invalid reference {original!r}: bad tag {tag!r}")
        domain, path = _split_domain(text)
        if not _DOMAIN_RE.match(domain):
            raise ReferenceFormatError(
                f"invalid reference {original!r}: bad registry host {domain!r}"
            )
        if not _PATH_RE.match(path):
            raise ReferenceFormatError(
                f"invalid reference {original!r}: repository {path!r} must be lowercase path "
                "components of [a-z0-9] joined by '.', '_', '__' or '-'"
            )
        if len(f"{domain}/{path}") > NAME_TOTAL_LENGTH_MAX:
            raise ReferenceFormatError(
                f"invalid reference {original!r}: name longer than {NAME_TOTAL_LENGTH_MAX}"
            )
        if tag is None and digest is None and default_tag:
            tag = DEFAULT_TAG
        return cls(domain, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str | None) -> Reference:
        """A copy with ``tag`` (None drops it); ReferenceFormatError for an invalid tag."""
        if tag is not None and not _TAG_RE.match(tag):
            raise ReferenceFormatError(f"invalid tag {tag!r}")
        return replace(self, tag=tag)

    def with_digest(self, digest: Digest | None) -> Reference:
        """A copy with ``digest`` (None drops it); the tag is kept."""
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out
