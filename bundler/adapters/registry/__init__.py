"""A client for the OCI distribution API, built on ``requests``.

Chosen over oras-py, which cannot move content safely (see docs/adr/0002).
"""

from bundler.adapters.registry.client import RegistryClient, RegistryOptions
from bundler.adapters.registry.credentials import Credential, CredentialStore

__all__ = ["Credential", "CredentialStore", "RegistryClient", "RegistryOptions"]
