"""bundler: one signed OCI artifact for a Helm chart and every image it runs.

The package reads top-down: ``bundler.cli`` (Typer commands) calls ``bundler.services``
(use cases such as copy), which drive ``bundler.adapters`` (registry client, OCI layout and
archive stores, credentials), all of which speak in terms of ``bundler.model`` (digests,
references, descriptors, manifests: pure data, no I/O).
"""

from bundler.errors import BundlerError

__version__ = "0.1.0"

__all__ = ["BundlerError", "__version__"]
