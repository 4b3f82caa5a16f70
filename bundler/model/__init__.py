"""Pure data: digests, references, descriptors, manifests. No I/O lives here."""

from bundler.model.descriptor import Descriptor, Platform
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.reference import Reference

__all__ = ["Descriptor", "Digest", "Manifest", "Platform", "Reference", "parse_manifest"]
