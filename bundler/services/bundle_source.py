"""A bundle being packed, seen as one copy source.

The bundle index, the chart manifest and the lock are made in memory; every image lives in the
source it was found in (a registry, an OCI layout, a docker save tar). This source routes each
manifest and blob to where it really is, so the ordinary copy (verified streaming, parallel
blobs, names last, atomic archives) writes the bundle to any target.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from bundler.adapters.base import ClosedOnExit, Source
from bundler.errors import NotFoundError
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest

_COSIGN_TAG = re.compile(r"^(sha256|sha512)-([0-9a-f]+)\.(sig|att|sbom)$")


class BundleSource(ClosedOnExit):
    """The bundle being packed as one :class:`~bundler.adapters.base.Source`.

    Manifests and blobs made in memory are served from memory; everything else is routed by digest
    to the source it was found in, which is learned as manifests are fetched. ``close`` closes every
    source routed to.
    """

    def __init__(self, name: str, ref_name: str) -> None:
        self.name = name
        self._ref_name = ref_name
        self._root: Manifest | None = None
        self._manifests: dict[Digest, Manifest] = {}
        self._blobs: dict[Digest, bytes] = {}
        self._routes: dict[Digest, Source] = {}
        self._sources: list[Source] = []
        self._lock = threading.Lock()

    # -- building -----------------------------------------------------------------------

    def add_manifest(self, manifest: Manifest) -> None:
        """Serve ``manifest`` (made in memory: chart, lock) by its digest."""
        self._manifests[manifest.digest] = manifest

    def add_blob(self, digest: Digest, data: bytes) -> None:
        """Serve ``data`` as the blob ``digest`` (made in memory: chart config, archive, lock)."""
        self._blobs[digest] = data

    def route(self, digest: Digest, source: Source) -> None:
        """Fetch ``digest`` from ``source``; the first route for a digest wins (thread-safe)."""
        with self._lock:
            self._routes.setdefault(digest, source)
            if not any(s is source for s in self._sources):
                self._sources.append(source)

    def set_root(self, index: Manifest) -> None:
        """Make ``index`` the artifact this source names (the bundle index) and serve it."""
        self._root = index
        self.add_manifest(index)

    def _learn(self, manifest: Manifest, source: Source) -> None:
        for child in (*manifest.manifests, *manifest.blobs()):
            self.route(child.digest, source)

    def _source_for(self, digest: Digest) -> Source:
        with self._lock:
            source = self._routes.get(digest)
        if source is None:
            raise NotFoundError(f"{self.name}: nothing known about {digest}")
        return source

    # -- the Source face ----------------------------------------------------------------

    def resolve(self) -> Descriptor:
        """Source.resolve: the bundle index; NotFoundError before ``set_root``."""
        if self._root is None:
            raise NotFoundError(f"{self.name} has no index yet")
        return self._root.descriptor()

    def ref_name(self) -> str | None:
        """Source.ref_name: the name given at construction."""
        return self._ref_name

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """Source.fetch_manifest: from memory, else the routed source (learning its children)."""
        made = self._manifests.get(descriptor.digest)
        if made is not None:
            return made
        source = self._source_for(descriptor.digest)
        manifest = source.fetch_manifest(descriptor)
        self._learn(manifest, source)
        return manifest

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Source.open_blob: from memory, else from the routed source; NotFoundError if unknown."""
        data = self._blobs.get(descriptor.digest)
        if data is not None:
            return iter([data])
        return self._source_for(descriptor.digest).open_blob(descriptor)

    def find_tag(self, tag: str) -> Descriptor | None:
        """Source.find_tag: only cosign's digest-named tags, asked of the image's own source."""
        # Only cosign's digest-named tags make sense here: ask the image's own source.
        match = _COSIGN_TAG.match(tag)
        if not match:
            return None
        subject = Digest(match.group(1), match.group(2))
        if subject in self._manifests:
            return None
        with self._lock:
            source = self._routes.get(subject)
        if source is None:
            return None
        found = source.find_tag(tag)
        if found is not None:
            self.route(found.digest, source)
        return found

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Source.referrers: asked of the image's source; none for what was made in memory."""
        if subject in self._manifests:
            return []
        with self._lock:
            source = self._routes.get(subject)
        if source is None:
            return []
        found = source.referrers(subject)
        for descriptor in found:
            self.route(descriptor.digest, source)
        return found

    def inventory(self) -> None:
        """Source.inventory: none; it presents a bundle being built, not a store."""
        return None

    def close(self) -> None:
        """Source.close: close every source something was routed to."""
        for source in self._sources:
            source.close()
