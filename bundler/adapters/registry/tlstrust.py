"""Which certificate authorities a registry's TLS is checked against, as the ecosystem does it.

In order: ``--insecure-skip-tls-verify`` (nothing checked); ``--ca-file`` (that bundle only);
``$SSL_CERT_FILE`` or ``$REQUESTS_CA_BUNDLE`` (a replacement for the system bundle, as OpenSSL
and requests read them); else the system's bundle. Whatever the bundle, the per-registry CA
files that podman, skopeo and Docker read are added for that registry:
``/etc/containers/certs.d/HOST[:PORT]/*.crt``, ``~/.config/containers/certs.d/HOST[:PORT]/*.crt``
and ``/etc/docker/certs.d/HOST[:PORT]/*.crt``.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter

from bundler.errors import UsageError

CERTS_D_ENV = "BUNDLER_CERTS_D"  # a path list that replaces the standard certs.d folders


def certs_d_roots() -> list[Path]:
    """The certs.d folders, most specific first (``$BUNDLER_CERTS_D`` replaces them all)."""
    named = os.environ.get(CERTS_D_ENV)
    if named is not None:
        return [Path(p) for p in named.split(os.pathsep) if p]
    home = Path(os.environ.get("HOME", "~")).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [
        config / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    ]


def registry_cas(host: str) -> list[Path]:
    """The ``*.crt`` CA files certs.d holds for ``host`` (``HOST:PORT`` folder names as given)."""
    found: list[Path] = []
    for root in certs_d_roots():
        folder = root / host
        try:
            found += sorted(p for p in folder.iterdir() if p.suffix == ".crt" and p.is_file())
        except OSError:
            continue
    return found


def base_bundle(ca_bundle: Path | None) -> str | None:
    """The CA bundle replacing the system's: ``--ca-file``, else the environment's, else None."""
    if ca_bundle is not None:
        return str(ca_bundle)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value:
            if not Path(value).is_file():
                raise UsageError(f"${name} names {value}, which is not a file")
            return value
    return None


def context_for(host: str, ca_bundle: Path | None) -> ssl.SSLContext | None:
    """An SSL context adding certs.d CAs of ``host`` to the bundle; None when there are none."""
    extra = registry_cas(host)
    if not extra:
        return None
    context = ssl.create_default_context(cafile=base_bundle(ca_bundle))
    if base_bundle(ca_bundle) is None:
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    for path in extra:
        try:
            context.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(f"CA file {path} (certs.d of {host}) is not PEM: {exc}") from None
    return context


class ContextAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections verify against a given SSL context."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The pool of requests' adapter, with the context (the certs.d CAs) in it."""
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
