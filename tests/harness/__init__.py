"""Loopback test harness: real registries, a token server, throw-away certs.

See :mod:`tests.harness.registry` (``start_registry``/``registry``),
:mod:`tests.harness.tokenserver` (``TokenServer``) and
:mod:`tests.harness.certs`.
"""

from .certs import ServerCerts, SigningCert, generate_server_certs, generate_token_signing_cert
from .registry import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    RegistryServer,
    RegistryStartError,
    find_registry_binary,
    free_port,
    registry,
    start_registry,
)
from .tokenserver import TokenRequest, TokenServer, parse_scope, start_token_server

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "RegistryServer",
    "RegistryStartError",
    "ServerCerts",
    "SigningCert",
    "TokenRequest",
    "TokenServer",
    "find_registry_binary",
    "free_port",
    "generate_server_certs",
    "generate_token_signing_cert",
    "parse_scope",
    "registry",
    "start_registry",
    "start_token_server",
]
