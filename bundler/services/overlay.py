"""A source with a few manifests, blobs and tags laid over it (new signatures, say).

Writing an artifact back with something added is then an ordinary copy: to a registry it adds
the new tags and uploads only the new blobs; to a layout it adds blobs and names; to an archive
(through its appender, as sign writes) it appends the new blobs and a new ``index.json``, so the
old bytes stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator

from bundler.adapters.base import ClosedOnExit, Source
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest


class OverlaySource(ClosedOnExit):
    """``base`` with manifests, blobs, tags and referrers added.

    With ``root``, the artifact it names is that descriptor (an image inside a bundle, a new
    chart) instead of the base's; with ``inherit_names=False``, only the overlay's own tags and
    referrers are offered.
    """

    def __init__(
        self,
        base: Source,
        *,
        root: Descriptor | None = None,
        ref_name: str | None = None,
        inherit_names: bool = True,
    ) -> None:
        self.base = base
        self.name = f"{base.name}@{root.digest}" if root is not None else base.name
        self._root = root
        self._ref_name = ref_name
        self._inherit = inherit_names
        self._manifests: dict[Digest, Manifest] = {}
        self._blobs: dict[Digest, bytes] = {}
        self._tags: dict[str, Descriptor] = {}
        self._referrers: dict[Digest, list[Descriptor]] = {}

    def add(self, manifest: Manifest, blobs: dict[Digest, bytes], tag: str | None) -> None:
        """Lay ``manifest`` and its new ``blobs`` over the base; with ``tag``, also name it so."""
        self._manifests[manifest.digest] = manifest
        self._blobs.update(blobs)
        if tag is not None:
            self._tags[tag] = manifest.descriptor()

    def add_referrer(self, subject: Digest, manifest: Manifest, blobs: dict[Digest, bytes]) -> None:
        """Lay ``manifest`` and ``blobs`` over the base as a referrer of ``subject``."""
        self.add(manifest, blobs, None)
        self._referrers.setdefault(subject, []).append(manifest.descriptor())

    def written_blobs(self) -> set[Digest]:
        """Everything this overlay added: its manifests and blobs."""
        return set(self._manifests) | set(self._blobs)

    def resolve(self) -> Descriptor:
        """Source.resolve: ``root`` when given, else the base's artifact."""
        return self._root if self._root is not None else self.base.resolve()

    def ref_name(self) -> str | None:
        """Source.ref_name: the given ``ref_name`` when ``root`` is given, else the base's."""
        return self._ref_name if self._root is not None else self.base.ref_name()

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """Source.fetch_manifest: an added manifest, else the base's."""
        return self._manifests.get(descriptor.digest) or self.base.fetch_manifest(descriptor)

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Source.open_blob: an added blob, else the base's."""
        data = self._blobs.get(descriptor.digest)
        return iter([data]) if data is not None else self.base.open_blob(descriptor)

    def find_tag(self, tag: str) -> Descriptor | None:
        """Source.find_tag: an added tag, else (when inheriting names) the base's."""
        found = self._tags.get(tag)
        return found if found is not None or not self._inherit else self.base.find_tag(tag)

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Source.referrers: the added referrers, plus the base's when inheriting names."""
        added = self._referrers.get(subject, [])
        if not self._inherit:
            return list(added)
        known = {d.digest for d in added}
        return added + [d for d in self.base.referrers(subject) if d.digest not in known]

    def inventory(self) -> None:
        """Source.inventory: none; an overlay presents a chosen view, not a store."""
        return None

    def close(self) -> None:
        """Source.close: close the base."""
        self.base.close()
