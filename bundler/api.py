"""bundler as a library: the whole flow, as functions a program calls.

Every function takes locations as strings in the command line's syntax (``REGISTRY/REPO:TAG``,
``oci:DIR[:REF]``, ``archive:FILE.tar``, ``memory:NAME``) or as parsed
:class:`~bundler.services.transports.Location` objects, returns a typed result, and raises the
exception tree of :mod:`bundler.errors` (``BundlerError`` and its families; the CLI maps each to
its exit code). Nothing prints.

Functions share registry connections, tokens and mounts through a :class:`Session`; without one,
each call opens and closes its own::

    with bundler.api.Session() as session:
        packed = bundler.api.pack(spec, "oci:out/bundle", session=session)
        bundler.api.sign("oci:out/bundle", key, session=session)

docs/library.md has the flow end to end (run by the test suite).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.adapters.base import ClosedOnExit
from bundler.adapters.crypto import (
    PrivateKey,
    PublicKey,
    SigningKey,
    decrypt_private_key,
    generate_key,
    load_public_key,
    read_key_file,
    write_key_pair,
)
from bundler.adapters.memory import MemoryStore
from bundler.adapters.registry.options import RegistryOptions
from bundler.adapters.serve import BasicAuth, LayoutServer
from bundler.errors import BundlerError
from bundler.model.policy import TrustPolicy
from bundler.model.reference import Reference
from bundler.model.spec import BundleSpec
from bundler.services.approve import ApprovalResult
from bundler.services.copy import CopyResult, Progress
from bundler.services.discover import Discovery
from bundler.services.inspect import InspectResult
from bundler.services.pack import PackOptions, PackResult
from bundler.services.promote import PromotionResult
from bundler.services.sign import SignResult
from bundler.services.transfer import ExportResult, ImportResult
from bundler.services.transports import Location, Transports, parse_location
from bundler.services.verify import VerifyReport

if TYPE_CHECKING:
    from bundler.adapters.pkcs11 import Pkcs11Key

__all__ = [
    "ApprovalResult",
    "BasicAuth",
    "BundleSpec",
    "BundlerError",
    "CopyResult",
    "Discovery",
    "ExportResult",
    "ImportResult",
    "InspectResult",
    "LayoutServer",
    "Location",
    "PackOptions",
    "PackResult",
    "PrivateKey",
    "PromotionResult",
    "PublicKey",
    "RegistryOptions",
    "Session",
    "SignResult",
    "SigningKey",
    "TrustPolicy",
    "VerifyReport",
    "approve",
    "copy",
    "export",
    "generate_key_pair",
    "images",
    "import_bundle",
    "inspect",
    "list_tags",
    "load_bundle_config",
    "load_private_key",
    "load_public_key_file",
    "load_token_key",
    "load_trust_policy",
    "login",
    "one_key_policy",
    "pack",
    "promote",
    "serve",
    "sign",
    "verify",
    "verify_promotion",
]

Where = str | Location


class Session(ClosedOnExit):
    """Registry options, shared connections and in-memory stores for a series of calls.

    A context manager: leaving it closes every connection it opened.
    """

    def __init__(
        self,
        registry: RegistryOptions | None = None,
        *,
        memory: MutableMapping[str, MemoryStore] | None = None,
        blob_cache: Path | None = None,
        use_blob_cache: bool = True,
    ) -> None:
        self.transports = Transports(
            registry, memory=memory, blob_cache=blob_cache, use_blob_cache=use_blob_cache
        )

    def close(self) -> None:
        """Close every registry connection the session opened."""
        self.transports.close()


@contextlib.contextmanager
def _session(session: Session | None) -> Iterator[Transports]:
    if session is not None:
        yield session.transports
        return
    with Session() as own:
        yield own.transports


def _at(where: Where, *, for_target: bool = False) -> Location:
    return parse_location(where, for_target=for_target) if isinstance(where, str) else where


# ---------------------------------------------------------------------------- inputs


def load_bundle_config(path: str | Path) -> BundleSpec:
    """A bundle config file (schemas/bundle-config) as a spec; paths relative to the file."""
    from bundler.adapters.bundleconfig import load_bundle_config as load

    return load(Path(path))


def load_trust_policy(path: str | Path) -> TrustPolicy:
    """A trust policy file (schemas/trust-policy); key paths relative to the file."""
    from bundler.adapters.trustpolicy import load_trust_policy as load

    return load(Path(path))


def load_private_key(path: str | Path, passphrase: bytes) -> PrivateKey:
    """A private key file (cosign's encrypted format, or PKCS#8 PEM) opened with ``passphrase``."""
    return decrypt_private_key(read_key_file(Path(path)), passphrase, str(path))


def load_token_key(uri: str, pin: str, module: str | Path | None = None) -> Pkcs11Key:
    """The key on a PKCS#11 token that the ``pkcs11:`` URI names, logged in with ``pin``.

    The module is the URI's ``module-path``, ``module``, or ``$COSIGN_PKCS11_MODULE_PATH``
    (docs/keys.md). It signs wherever a key file's key does; ``close()`` logs out.
    """
    from bundler.adapters.pkcs11 import TokenAccess, open_key, parse_uri

    access = TokenAccess(module=None if module is None else str(module), pin=pin)
    return open_key(parse_uri(uri), access)


def generate_key_pair(
    prefix: str | Path, passphrase: bytes, algorithm: str = "ecdsa-p256"
) -> tuple[Path, Path]:
    """``PREFIX.key`` (encrypted, mode 0600) and ``PREFIX.pub``, as ``bundler keys generate``."""
    return write_key_pair(Path(prefix), generate_key(algorithm), passphrase)


def load_public_key_file(path: str | Path) -> PublicKey:
    """A public key from a PEM file (cosign's ``.pub``); KeyFileError if it is not one."""
    from bundler.errors import KeyFileError

    try:
        pem = read_key_file(Path(path))
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from None
    return load_public_key(pem, str(path))


def one_key_policy(public_key: str | Path) -> TrustPolicy:
    """A policy trusting one public key for any bundle (``verify --key``)."""
    from bundler.model.policy import single_key_policy

    path = Path(public_key)
    return single_key_policy(load_public_key(read_key_file(path), str(path)), path.name)


# ---------------------------------------------------------------------------- the flow


def images(
    chart: str | Path,
    *,
    values: Sequence[str | Path] = (),
    set_values: Sequence[str] = (),
    kube_version: str | None = None,
    helm: str | None = None,
    render: bool = True,
) -> Discovery:
    """What a chart runs (rendered by Helm with these values) and which values compose each."""
    from bundler.adapters.chart import load_chart
    from bundler.adapters.helm import Helm, find_helm
    from bundler.errors import UsageError
    from bundler.services.discover import discover
    from bundler.services.pack import render_settings

    binary = find_helm(helm) if render else None
    if render and binary is None:
        raise UsageError("rendering needs helm: install it, pass helm=PATH, or render=False")
    spec = BundleSpec(
        values_files=[Path(v) for v in values],
        set_values=list(set_values),
        kube_version=kube_version,
    )
    settings = render_settings(spec, Helm(binary) if binary else None)
    return discover(load_chart(Path(chart)), helm=binary, settings=settings)


def pack(
    spec: BundleSpec,
    to: Where,
    *,
    options: PackOptions | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    session: Session | None = None,
) -> PackResult:
    """Pack the spec's chart and every image it runs into one bundle at ``to``.

    ``progress`` is told of the bytes written; ``warn`` gets each warning (malformed chart
    entries, images only values name) as one line.
    """
    from bundler.services.pack import pack as pack_service

    target = _at(to, for_target=True)
    with _session(session) as transports:
        return pack_service(spec, target.text, transports, options, progress=progress, warn=warn)


def sign(
    location: Where,
    key: SigningKey,
    *,
    identity: str | None = None,
    recursive: bool = True,
    certificate: str | Path | None = None,
    certificate_chain: str | Path | None = None,
    session: Session | None = None,
) -> SignResult:
    """Add a cosign-compatible signature by ``key`` to the bundle (and what it pins).

    With ``certificate`` (a PEM file for ``key``) and ``certificate_chain``, the signature
    carries them as cosign does, for policies that trust a CA instead of a key.
    """
    from bundler.services.sign import sign as sign_service

    annotations = None
    if certificate is not None:
        from bundler.adapters.x509 import signing_certificate

        chain = Path(certificate_chain) if certificate_chain is not None else None
        annotations = signing_certificate(key.public.key_id, Path(certificate), chain)
    elif certificate_chain is not None:
        from bundler.errors import UsageError

        raise UsageError("a certificate chain goes with --certificate, the signing certificate")
    with _session(session) as transports:
        return sign_service(
            _at(location),
            key,
            transports,
            recursive=recursive,
            identity=identity,
            annotations=annotations,
        )


def verify(
    location: Where, policy: TrustPolicy, *, parallel: int = 4, session: Session | None = None
) -> VerifyReport:
    """Verify the bundle under ``policy``: the report, or the step's VerificationError raised."""
    from bundler.services.verify import open_for_verification
    from bundler.services.verify import verify as verify_service

    with (
        _session(session) as transports,
        open_for_verification(transports, _at(location)) as source,
    ):
        report = verify_service(source, policy, parallel=parallel)
    if report.error is not None:
        raise report.error
    return report


def approve(
    location: Where,
    key: SigningKey,
    policy: TrustPolicy,
    *,
    identity: str | None = None,
    parallel: int = 4,
    progress: Progress | None = None,
    session: Session | None = None,
) -> ApprovalResult:
    """Verify the bundle under ``policy`` (approvals aside), then add ``key``'s approval.

    The policy must trust ``key`` (UsageError otherwise), and its signature must count toward
    the bundle's rule: VerificationError (step 4) before anything is signed when it would not.
    """
    from bundler.services.approve import approve as approve_service

    with _session(session) as transports:
        return approve_service(
            _at(location),
            key,
            policy,
            transports,
            identity=identity,
            parallel=parallel,
            progress=progress,
        )


def verify_promotion(
    location: Where, key: PublicKey, *, session: Session | None = None
) -> dict[str, Any]:
    """The promotion record of the promoted chart at ``location``, signed by ``key``.

    VerificationError when the chart carries no record signed by that key naming it.
    """
    from bundler.services.promote import verify_promotion as verify_service

    with _session(session) as transports, transports.open_source(_at(location)) as source:
        return verify_service(source, key)


def login(
    registry: str,
    username: str,
    password: str,
    *,
    options: RegistryOptions | None = None,
    config_dir: str | Path | None = None,
) -> bool:
    """Check the credentials against ``registry``, then store them in Docker's config.json.

    Returns False when the registry asks for no credentials (they are stored all the same).
    AuthError when the registry refuses them; nothing is stored then.
    """
    from bundler.adapters.registry.credentials import Credential, CredentialStore
    from bundler.services.transports import check_login

    directory = Path(config_dir) if config_dir is not None else None
    credential = Credential(username, password)
    asks = check_login(registry, credential, options or RegistryOptions())
    CredentialStore(directory).store(registry, credential)
    return asks


def export(
    location: Where,
    to: Where,
    *,
    base: Where | None = None,
    max_volume_size: int | None = None,
    parallel: int = 4,
    progress: Progress | None = None,
    session: Session | None = None,
) -> ExportResult:
    """Write the bundle and its signatures to an archive (volumes, or a delta against ``base``)."""
    from bundler.services.transfer import export as export_service

    with _session(session) as transports:
        return export_service(
            _at(location),
            _at(to, for_target=True),
            transports,
            base=_at(base) if base is not None else None,
            max_volume_size=max_volume_size,
            parallel=parallel,
            progress=progress,
        )


def import_bundle(
    location: Where,
    to: Where,
    policy: TrustPolicy,
    *,
    parallel: int = 4,
    progress: Progress | None = None,
    session: Session | None = None,
) -> ImportResult:
    """Verify the bundle under ``policy`` while copying it into ``to``, names written last."""
    from bundler.services.transfer import import_bundle as import_service

    with _session(session) as transports:
        return import_service(
            _at(location),
            _at(to, for_target=True),
            transports,
            policy,
            parallel=parallel,
            progress=progress,
        )


def promote(
    location: Where,
    to: Where,
    policy: TrustPolicy,
    key: SigningKey | None,
    *,
    serve_as: str | None = None,
    style: str = "nested",
    mirror: bool = False,
    allow_downgrade: bool = False,
    dry_run: bool = False,
    helm: str | None = None,
    deploy_values: dict[str, Any] | None = None,
    parallel: int = 4,
    progress: Progress | None = None,
    session: Session | None = None,
) -> PromotionResult:
    """Verify now, relocate, prove by rendering, publish the chart and its signed record."""
    from bundler.services.promote import promote as promote_service

    with _session(session) as transports:
        return promote_service(
            _at(location),
            _at(to, for_target=True),
            transports,
            policy,
            key,
            style=style,
            mirror=mirror,
            allow_downgrade=allow_downgrade,
            dry_run=dry_run,
            parallel=parallel,
            serve_as=Reference.parse(serve_as, default_tag=False) if serve_as else None,
            helm=helm,
            deploy_values=deploy_values,
            progress=progress,
        )


def copy(
    location: Where,
    to: Where,
    *,
    with_referrers: bool = True,
    parallel: int = 4,
    max_volume_size: int | None = None,
    progress: Progress | None = None,
    session: Session | None = None,
) -> CopyResult:
    """Copy any OCI artifact with its signatures and referrers, every byte checked.

    ``max_volume_size`` (bytes) splits an ``archive:`` destination into volumes.
    """
    from bundler.services.copy import copy as copy_service

    with _session(session) as transports, transports.open_source(_at(location)) as source:
        target = transports.open_target(_at(to, for_target=True), max_volume_size=max_volume_size)
        return copy_service(
            source, target, with_referrers=with_referrers, parallel=parallel, progress=progress
        )


def list_tags(repository: Where, *, session: Session | None = None) -> list[str]:
    """Every tag of a registry repository (``REGISTRY/REPO``), following its pagination."""
    from bundler.errors import UsageError

    location = _at(repository, for_target=True)
    reference = location.reference
    if reference is None:
        raise UsageError(f"{repository}: tags are listed for registry repositories only")
    if reference.tag or reference.digest:
        raise UsageError(f"{repository}: name a repository, without tag or digest")
    with _session(session) as transports:
        return transports.list_tags(reference)


def inspect(location: Where, *, session: Session | None = None) -> InspectResult:
    """What a bundle holds: chart, images, platforms, sizes, signatures."""
    from bundler.services.inspect import inspect as inspect_service

    with _session(session) as transports, transports.open_source(_at(location)) as source:
        return inspect_service(source)


def serve(
    layout: Where,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    tls: tuple[str | Path, str | Path] | None = None,
    auth: BasicAuth | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> LayoutServer:
    """A read-only registry over the ``oci:`` layout, bound and ready: call ``serve_forever``.

    ``tls`` is a PEM certificate (chain) and its key; ``auth`` one user that may pull. Stop it
    with ``shutdown`` (from another thread).
    """
    location = _at(layout)
    if location.kind != "oci" or location.path is None:
        from bundler.errors import UsageError

        raise UsageError(f"serve takes an OCI layout, oci:DIR, not {location}")
    pair = (Path(tls[0]), Path(tls[1])) if tls is not None else None
    return LayoutServer(location.path, host, port, tls=pair, auth=auth, log=log)
