"""Command-line locations (skopeo/werf conventions) opened as sources and targets.

- ``host[:port]/repo[:tag][@digest]`` or ``docker://...``: a registry reference
- ``oci:DIR[:REF]``: an OCI image layout directory, REF being an index.json ref name or digest
- ``archive:FILE.tar[:REF]``: a tar of an OCI image layout, or one split into volumes
  (``FILE.tar.000``, ... with ``FILE.tar.parts.json``; a source may also name the parts list)
- ``docker-archive:FILE.tar[:REF]``: a ``docker save`` tar (source only), REF a tag or ``@N``

Programs using bundler as a library may also name ``memory:NAME[:REF]`` (see
:func:`memory_location`): a :class:`~bundler.adapters.memory.MemoryStore` handed to
:class:`Transports`, an OCI layout kept in memory. The command line does not parse it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bundler.adapters.base import ClosedOnExit, Source, Target
from bundler.adapters.layout import INDEX_FILE, LayoutDirectory, LayoutSource, LayoutTarget
from bundler.adapters.registry.blobcache import BlobLocationCache, default_cache_path
from bundler.adapters.registry.credentials import Credential
from bundler.adapters.registry.options import RegistryOptions
from bundler.errors import NotFoundError, ReferenceFormatError, UsageError
from bundler.model.descriptor import Descriptor
from bundler.model.reference import Reference

if TYPE_CHECKING:
    from bundler.adapters.fsafe import DestinationLock

    # Each kind of store is imported when a location of its kind is first opened: the HTTP
    # stack not for layouts and archives, the archive and volume readers not for a registry.
    from bundler.adapters.memory import MemoryStore
    from bundler.adapters.registry.client import RegistryClient

Kind = Literal["registry", "oci", "archive", "docker-archive", "memory"]


@dataclass(frozen=True)
class Location:
    """A parsed location: its kind, the text as given, and the path, ref, reference or store."""

    kind: Kind
    text: str
    path: Path | None = None
    ref: str | None = None
    reference: Reference | None = None
    store: str | None = None  # the name of a memory store (kind "memory")

    def __str__(self) -> str:
        return self.text


def registry_location(reference: Reference) -> Location:
    """The location of ``reference`` in its registry."""
    return Location("registry", str(reference), reference=reference)


def memory_location(store: str, ref: str | None = None) -> Location:
    """The location ``memory:STORE[:REF]``: the memory store of that name in :class:`Transports`.

    It behaves as ``oci:DIR[:REF]`` does, ``REF`` being a ref name or a digest.
    """
    if not store or ":" in store:
        raise ReferenceFormatError(f"{store!r}: a memory store name is non-empty, without ':'")
    if ref is not None and not ref:
        raise ReferenceFormatError(f"memory:{store}: empty ref")
    text = f"memory:{store}:{ref}" if ref else f"memory:{store}"
    return Location("memory", text, ref=ref, store=store)


def parse_location(text: str, *, for_target: bool = False) -> Location:
    """Parse ``oci:DIR[:REF]``, ``archive:FILE[:REF]``, ``docker-archive:FILE[:REF]``, or a ref.

    Anything without one of those prefixes (``docker://`` and Helm's ``oci://`` are dropped) is a
    registry reference;
    ``for_target`` leaves its tag unset instead of ``latest``. ReferenceFormatError for a malformed
    one.
    """
    if not text:
        raise ReferenceFormatError("empty location")
    if text.startswith("oci://"):  # Helm's way of naming a registry reference
        text = text.removeprefix("oci://")
    for prefix, kind in (
        ("oci:", "oci"),
        ("archive:", "archive"),
        ("docker-archive:", "docker-archive"),
    ):
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            path_text, sep, ref = rest.partition(":")
            if not path_text:
                raise ReferenceFormatError(f"{text!r}: missing path after {prefix}")
            if sep and not ref:
                raise ReferenceFormatError(f"{text!r}: empty ref after ':'")
            return Location(kind, text, Path(path_text), ref or None)  # type: ignore[arg-type]
    body = text.removeprefix("docker://")
    try:
        reference = Reference.parse(body, default_tag=not for_target)
    except ReferenceFormatError as exc:
        hint = _hint(text)
        if hint is None:
            raise
        raise ReferenceFormatError(f"{exc}; did you mean {hint}?") from None
    return Location("registry", text, reference=reference)


_OTHER_TOOLS = {"oci-archive:": "archive:", "oci-layout:": "oci:"}  # skopeo's, podman's names


def _hint(text: str) -> str | None:
    """The location a user most likely meant by ``text``, which is no registry reference."""
    for theirs, ours in _OTHER_TOOLS.items():
        if text.startswith(theirs):
            return ours + text[len(theirs) :]
    path = Path(text)
    if text.startswith(("/", "./", "../", "~")) or path.exists():
        if path.is_dir() or not text.endswith((".tar", ".tar.gz")):
            return f"oci:{text}"
        return f"archive:{text}"
    if text.endswith(".tar"):
        return f"archive:{text}"
    return None


class Transports(ClosedOnExit):
    """Opens locations, sharing one registry client per host so mounts and tokens are reused.

    ``memory`` maps store names to the :class:`~bundler.adapters.memory.MemoryStore` that
    ``memory:NAME`` locations open; a target naming a store not in it adds a new, empty store
    under that name (as ``oci:DIR`` creates the directory). The mapping is the caller's: it
    sees the stores written into.
    """

    def __init__(
        self,
        options: RegistryOptions | None = None,
        *,
        blob_cache: Path | None = None,
        use_blob_cache: bool = True,
        memory: MutableMapping[str, MemoryStore] | None = None,
    ) -> None:
        self.options = options or RegistryOptions()
        self.memory: MutableMapping[str, MemoryStore] = {} if memory is None else memory
        self._clients: dict[str, RegistryClient] = {}
        self.locations = BlobLocationCache(
            (blob_cache or default_cache_path()) if use_blob_cache else None
        )

    def client(self, host: str) -> RegistryClient:
        """The registry client for ``host``, made on first use and shared for the run."""
        if host not in self._clients:
            from bundler.adapters.registry.client import RegistryClient

            self._clients[host] = RegistryClient(host, self.options)
        return self._clients[host]

    def list_tags(self, reference: Reference) -> list[str]:
        """Every tag of ``reference``'s repository, as the registry lists them."""
        return list(self.client(reference.registry).list_tags(reference.repository))

    def head(self, reference: Reference) -> Descriptor | None:
        """What ``reference`` (its digest, else its tag) names in its registry, or None."""
        ref = str(reference.digest) if reference.digest is not None else reference.tag
        assert ref is not None, "a reference to look up names a tag or a digest"
        return self.client(reference.registry).head_manifest(reference.repository, ref)

    def has_referrers_api(self, reference: Reference, subject: Descriptor) -> bool:
        """Whether ``reference``'s registry answers the OCI 1.1 referrers API for ``subject``."""
        client = self.client(reference.registry)
        return client.referrers(reference.repository, subject.digest) is not None

    def open_source(self, location: Location) -> Source:
        """The Source ``location`` names: registry, layout, archive, docker tar, memory store."""
        if location.kind == "registry":
            assert location.reference is not None
            from bundler.adapters.registry.store import RegistrySource

            return RegistrySource(
                self.client(location.reference.registry), location.reference, self.locations
            )
        if location.kind == "memory":
            return self.memory_store(location).source(location.ref)
        assert location.path is not None
        if location.kind == "oci":
            return LayoutSource(LayoutDirectory(location.path), location.ref)
        if location.kind == "docker-archive":
            from bundler.adapters.dockerarchive import DockerArchiveSource

            return DockerArchiveSource(location.path, location.ref)
        from bundler.adapters.archive import ArchiveReader

        return LayoutSource(ArchiveReader(location.path), location.ref)

    def open_target(
        self,
        location: Location,
        *,
        max_volume_size: int | None = None,
        write_lock: DestinationLock | None = None,
        append: bool = False,
    ) -> Target:
        """The Target ``location`` names; a registry target must name a tag, not a digest.

        ``max_volume_size`` (bytes) splits an ``archive:`` target into volumes of that size; any
        other kind of target refuses it. ``docker-archive:`` is a source only (UsageError).
        ``write_lock``, a lock the caller holds already for an ``oci:`` layout, is shared by the
        target instead of taken again. ``append`` (sign, approve) adds to an existing
        ``archive:`` in place instead of writing a new one; a split archive is refused.
        """
        if max_volume_size is not None and location.kind != "archive":
            raise UsageError(f"{location}: a maximum volume size applies only to archive: targets")
        if location.kind == "registry":
            assert location.reference is not None
            if location.reference.digest is not None:
                raise ReferenceFormatError(f"{location}: a copy target names a tag, not a digest")
            from bundler.adapters.registry.store import RegistryTarget

            return RegistryTarget(
                self.client(location.reference.registry), location.reference, self.locations
            )
        if location.kind == "docker-archive":
            raise UsageError("docker-archive: is a source only")
        if location.kind == "memory":
            assert location.store is not None
            from bundler.adapters.memory import MemoryStore

            store = self.memory.setdefault(location.store, MemoryStore(location.store))
            return store.target(location.ref)
        assert location.path is not None
        if location.kind == "oci":
            return LayoutTarget(location.path, location.ref, write_lock=write_lock)
        from bundler.adapters.archive import ArchiveTarget

        archive = ArchiveTarget(location.path, location.ref, max_volume_size=max_volume_size)
        return archive.appender() if append else archive

    def memory_store(self, location: Location) -> MemoryStore:
        """The memory store a ``memory:`` location names; it must have been handed over."""
        if location.kind != "memory" or location.store is None:
            raise UsageError(f"{location} is not a memory: location")
        store = self.memory.get(location.store)
        if store is None:
            raise NotFoundError(f"{location}: no memory store named {location.store!r}")
        return store

    def layout_entries(self, location: Location) -> list[Descriptor]:
        """The ``index.json`` entries of an ``oci:`` layout or a memory store.

        A layout or store that holds nothing yet (no ``index.json``) has none.
        """
        if location.kind == "memory":
            assert location.store is not None
            store = self.memory.get(location.store)
            return [] if store is None else store.entries
        if location.kind != "oci" or location.path is None:
            raise UsageError(f"{location} is not an oci: layout")
        if not (location.path / INDEX_FILE).exists():
            return []
        return LayoutSource(LayoutDirectory(location.path), None).entries

    def close(self) -> None:
        """Save the blob location cache and close every registry client opened."""
        self.locations.save()
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def check_login(host: str, credential: Credential, options: RegistryOptions) -> bool:
    """Prove ``credential`` works at the registry ``host``; AuthError when it is refused.

    ``/v2/`` needs no scope: a token (or the Basic credential) for it proves the login. Returns
    False when the registry asks for no credentials at all.
    """
    from dataclasses import replace

    from bundler.adapters.registry.client import RegistryClient

    client = RegistryClient(
        host, replace(options, credentials={**options.credentials, host: credential})
    )
    try:
        client.request("GET", "/v2/", ("registry:catalog:*",)).close()
        return client.auth.challenge is not None
    finally:
        client.close()
