"""Registry repositories as copy sources and targets."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator

from bundler.adapters.base import ClosedOnExit
from bundler.adapters.registry.blobcache import BlobLocationCache
from bundler.adapters.registry.client import RegistryClient
from bundler.adapters.stream import VerifiedStream
from bundler.errors import AuthError, NotFoundError, RegistryError, TransportError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.plan import TransferPlan
from bundler.model.reference import Reference, is_valid_tag


class RegistrySource(ClosedOnExit):
    """A repository of a registry as a copy :class:`~bundler.adapters.base.Source`.

    Manifests fetched once are kept in memory for the run; blob pulls are recorded in ``locations``
    so that a later push to the same registry can mount instead of upload.
    """

    def __init__(
        self,
        client: RegistryClient,
        reference: Reference,
        locations: BlobLocationCache | None = None,
    ) -> None:
        self.client = client
        self.locations = locations
        self.reference = reference
        self.repo = reference.repository
        self.name = str(reference)
        self._cache: dict[Digest, Manifest] = {}

    def resolve(self) -> Descriptor:
        """Source.resolve: GET by digest, else by tag; NotFoundError names the reference."""
        ref = self.reference
        wanted = str(ref.digest) if ref.digest else ref.tag
        assert wanted is not None
        try:
            raw, media_type, digest = self.client.get_manifest(self.repo, wanted)
        except NotFoundError:
            raise NotFoundError(f"{ref} not found") from None
        manifest = parse_manifest(raw, media_type=media_type, expected=digest)
        self._cache[manifest.digest] = manifest
        return manifest.descriptor()

    def ref_name(self) -> str | None:
        """``registry/repository:tag`` when the reference has a tag, else None."""
        if self.reference.tag is None:
            return None
        return str(self.reference.with_digest(None))

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """Source.fetch_manifest, from the run's cache when this manifest was already read."""
        cached = self._cache.get(descriptor.digest)
        if cached is not None:
            return cached
        raw, media_type, _digest = self.client.get_manifest(self.repo, str(descriptor.digest))
        manifest = parse_manifest(
            raw, media_type=media_type or descriptor.media_type, expected=descriptor.digest
        )
        self._cache[manifest.digest] = manifest
        return manifest

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Source.open_blob; also records that this repository holds the blob."""
        if self.locations is not None:
            self.locations.record(self.client.host, descriptor.digest, self.repo)
        return self.client.get_blob(self.repo, descriptor)

    def find_tag(self, tag: str) -> Descriptor | None:
        """Source.find_tag: a HEAD of the tag in this repository; None when it does not exist."""
        return self.client.head_manifest(self.repo, tag)

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Source.referrers: the referrers API, else the ``sha256-<hex>`` tag-schema index."""
        found = self.client.referrers(self.repo, subject)
        if found is not None:
            return found
        # Tag-schema fallback (OCI 1.1): an index under the tag sha256-<hex>.
        fallback = self.client.head_manifest(self.repo, subject.tag_form())
        if fallback is None:
            return []
        index = self.fetch_manifest(fallback)
        return list(index.manifests) if index.is_index else []

    def inventory(self) -> None:
        """Source.inventory: none; a registry holds what others put there."""
        return None

    def close(self) -> None:
        """Source.close: nothing to release; the transports close the client they opened."""
        pass


class RegistryTarget:
    """A repository of a registry as a copy :class:`~bundler.adapters.base.Target`.

    Blobs upload in parallel; a blob another repository of the same registry holds is mounted (at
    most ``MAX_MOUNT_TRIES`` candidates). Referrers go to the referrers API, or, where the registry
    has none, into the tag-schema fallback index.
    """

    parallel_blobs = True
    requires_name = False
    write_lock = None  # a registry orders writers itself (and tags by compare-and-set)
    MAX_MOUNT_TRIES = 3
    FALLBACK_ATTEMPTS = 5

    def __init__(
        self,
        client: RegistryClient,
        reference: Reference,
        locations: BlobLocationCache | None = None,
    ) -> None:
        self.client = client
        self.locations = locations or BlobLocationCache(None)
        self.reference = reference
        self.repo = reference.repository
        self.name = str(reference)
        self._referrers_api: bool | None = None
        self._lock = threading.Lock()

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Target.open_blob: the blob from this repository."""
        return self.client.get_blob(self.repo, descriptor)

    def layout(self) -> None:
        """Target.layout: none; a registry addresses blobs by digest itself."""
        return None

    def remove_blob(self, digest: Digest) -> None:
        """Target.remove_blob: nothing; a registry collects unreferenced blobs itself."""

    def root_tag(self, source_ref: str | None) -> str | None:
        """Target.root_tag: the target's tag, else the source's tag when it is a valid tag."""
        if self.reference.tag:
            return self.reference.tag
        if source_ref is None:
            return None
        if is_valid_tag(source_ref):
            return source_ref
        try:
            return Reference.parse(source_ref, default_tag=False).tag
        except Exception:
            return None

    def begin(self, plan: TransferPlan) -> None:
        """Target.begin: only reaches the registry (auth, scheme) before any upload is planned."""
        _ = self.client.base_url  # reach the registry before planning any upload

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Target.has_blob: a HEAD of the blob; a hit is recorded for later mounts."""
        found = self.client.blob_exists(self.repo, descriptor)
        if found:
            self.locations.record(self.client.host, descriptor.digest, self.repo)
        return found

    def mount_blob(self, descriptor: Descriptor, source: object) -> bool:
        """Link the blob from a repository of this registry known to hold it."""
        host = self.client.host
        candidates: list[str] = []
        if isinstance(source, RegistrySource) and source.client.host == host:
            candidates.append(source.repo)
        candidates += self.locations.candidates(host, descriptor.digest)
        tried: list[str] = []
        for repo in candidates:
            if repo == self.repo or repo in tried:
                continue
            if len(tried) == self.MAX_MOUNT_TRIES:
                break
            tried.append(repo)
            try:
                mounted = self.client.mount_blob(self.repo, descriptor, repo)
            except (AuthError, RegistryError, NotFoundError):
                mounted = False  # no pull right on that repository, or it is gone
            if mounted:
                self.locations.record(host, descriptor.digest, self.repo)
                return True
            self.locations.forget(host, descriptor.digest, repo)
        return False

    def put_blob(self, stream: VerifiedStream) -> None:
        """Target.put_blob: a monolithic PUT or PATCH chunks, as the client decides."""
        self.client.upload_blob(self.repo, stream)
        self.locations.record(self.client.host, stream.descriptor.digest, self.repo)

    def put_manifest(self, manifest: Manifest) -> None:
        """Target.put_manifest; an ``OCI-Subject`` reply shows the referrers API is there."""
        resp = self.client.put_manifest(
            self.repo, str(manifest.digest), manifest.raw, manifest.media_type
        )
        if manifest.subject is not None and resp.headers.get("OCI-Subject"):
            self._referrers_api = True

    def tag(self, tag: str, manifest: Manifest) -> None:
        """Target.tag: a PUT of the manifest's bytes under ``tag``; visible at once."""
        self.client.put_manifest(self.repo, tag, manifest.raw, manifest.media_type)

    def add_referrer(self, subject: Digest, referrer: Manifest) -> None:
        """Target.add_referrer; without a referrers API, merges into the ``sha256-<hex>`` index.

        The fallback is a read-modify-write that other writers can race; it is retried
        ``FALLBACK_ATTEMPTS`` times, then TransportError.
        """
        with self._lock:
            if self._referrers_api is None:
                self._referrers_api = self.client.referrers(self.repo, subject) is not None
            if self._referrers_api:
                return
            # Read-modify-write of the fallback index: racy by the spec's own admission. The
            # lock orders this process's writers; against other processes, re-read after each
            # write and merge again until the entry is there (bounded).
            tag = subject.tag_form()
            descriptor = referrer.descriptor().to_json()
            artifact_type = referrer.artifact_type or (
                referrer.config.media_type if referrer.config else None
            )
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if referrer.annotations:
                descriptor["annotations"] = dict(referrer.annotations)
            for attempt in range(1, self.FALLBACK_ATTEMPTS + 1):
                entries = self._fallback_entries(tag)
                if any(e.get("digest") == str(referrer.digest) for e in entries):
                    return
                entries.append(descriptor)
                doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
                raw_index = json.dumps(doc, separators=(",", ":")).encode()
                self.client.put_manifest(self.repo, tag, raw_index, mt.OCI_INDEX)
                time.sleep(0.05 * attempt * random.random())  # noqa: S311 - jitter only
            if not any(
                e.get("digest") == str(referrer.digest) for e in self._fallback_entries(tag)
            ):
                raise TransportError(
                    f"{self.name}: another writer kept replacing the referrers index {tag}; "
                    f"{referrer.digest} is not listed (run again)"
                )

    def _fallback_entries(self, tag: str) -> list[dict[str, object]]:
        existing = self.client.head_manifest(self.repo, tag)
        if existing is None:
            return []
        raw, media_type, digest = self.client.get_manifest(self.repo, str(existing.digest))
        index = parse_manifest(raw, media_type=media_type, expected=digest)
        if not index.is_index:
            return []
        entries: list[dict[str, object]] = json.loads(raw).get("manifests", [])
        return entries

    def commit(self) -> None:
        """Target.commit: nothing to do, tags were written last by the copy."""
        pass  # tags are written last by the copy; there is nothing more to publish

    def abort(self, error: BaseException | None = None) -> None:
        """Target.abort: nothing to undo; untagged uploads are invisible and garbage-collectable."""
        pass  # untagged uploads are invisible and garbage-collectable; a re-run skips them
