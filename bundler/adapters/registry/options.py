"""How to reach registries: one set of options serves every client of a run.

Kept apart from the client so the command line can build options without importing the HTTP
stack (it costs a tenth of a second at every start).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bundler.adapters.registry.credentials import Credential, CredentialStore


@dataclass
class RegistryOptions:
    """How to reach registries. One instance serves every client of a run."""

    ca_bundle: Path | None = None
    plain_http: bool = False  # talk HTTP to every registry named (never implied for remote hosts)
    insecure_skip_tls_verify: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 4
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    parallel: int = 4
    chunk_size: int | None = None  # None: one streamed PUT per blob; else PATCH chunks
    credential_store: CredentialStore | None = None
    credentials: dict[str, Credential] = field(default_factory=dict)

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts in seconds, as ``requests`` takes them."""
        return (self.connect_timeout, self.read_timeout)
