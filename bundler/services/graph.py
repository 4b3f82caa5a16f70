"""Walking what an artifact pins: every manifest and blob under a root, and its platforms."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bundler.adapters.base import Source
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import ManifestError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor, Platform
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest

MAX_CONFIG_BLOB_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Graph:
    """Every manifest (fetched and digest-checked) and every blob under one root."""

    manifests: dict[Digest, Manifest]
    blobs: dict[Digest, Descriptor]

    @property
    def size(self) -> int:
        """Bytes of every manifest and blob, each counted once."""
        return sum(m.size for m in self.manifests.values()) + sum(
            b.size for b in self.blobs.values()
        )

    def digests(self) -> set[Digest]:
        """The digest of every manifest and blob in the graph."""
        return set(self.manifests) | set(self.blobs)


def walk(source: Source, root: Descriptor) -> Graph:
    """Every manifest and blob under ``root``; each manifest is fetched once and digest-checked."""
    manifests: dict[Digest, Manifest] = {}
    blobs: dict[Digest, Descriptor] = {}
    stack = [root]
    while stack:
        descriptor = stack.pop()
        if descriptor.digest in manifests:
            continue
        manifest = source.fetch_manifest(descriptor)
        manifests[manifest.digest] = manifest
        for child in manifest.manifests:
            if child.media_type in mt.MANIFESTS:
                stack.append(child)
            else:
                blobs.setdefault(child.digest, child)
        for blob in manifest.blobs():
            blobs.setdefault(blob.digest, blob)
    return Graph(manifests, blobs)


def platforms(source: Source, manifest: Manifest) -> tuple[str, ...]:
    """An index's child platforms (attestations aside), or a single image's from its config."""
    if manifest.is_index:
        return tuple(
            str(c.platform)
            for c in manifest.manifests
            if c.platform is not None and c.platform.os != "unknown"
        )
    if manifest.config is not None:
        return (image_platform(source, manifest.config),)
    return ()


def image_platform(source: Source, config: Descriptor) -> str:
    """``os/arch[/variant]`` from an image config, or ``unknown`` if not an image config.

    ManifestError for a config over ``MAX_CONFIG_BLOB_BYTES``; the config is digest-checked.
    """
    if config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return "unknown"
    if config.size > MAX_CONFIG_BLOB_BYTES:
        raise ManifestError(f"image config {config.digest} is {config.size} bytes")
    raw = read_exact(VerifiedStream(source.open_blob(config), config, source.name), config.size)
    try:
        doc = json.loads(raw)
        platform = Platform(doc["os"], doc["architecture"], doc.get("variant"))
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return str(platform)
