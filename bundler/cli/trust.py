"""``bundler sign``, ``bundler verify`` and ``bundler approve``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bundler.cli.common import (
    ParallelOpt,
    PassphraseFlags,
    RegistryFlags,
    Ui,
    command,
    emit_json,
    private_key,
    progress_bar,
    public_key,
)
from bundler.errors import UsageError
from bundler.model.policy import TrustPolicy
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.adapters.registry.options import RegistryOptions
    from bundler.model.digest import Digest
    from bundler.services.sign import SignResult
    from bundler.services.verify import VerifyReport

KeyOpt = Annotated[
    Path,
    typer.Option("--key", metavar="FILE", help="Encrypted private key (cosign format)."),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", metavar="FILE", help="Trust policy file (schemas/trust-policy)."),
]
IdentityOpt = Annotated[
    str | None,
    typer.Option(
        "--identity",
        metavar="REPO",
        help="Repository the signature names (critical.identity); "
        "default: the registry repository, or the bundle's name.",
    ),
]


def load_policy(policy: Path | None, key: Path | None) -> TrustPolicy:
    """The trust policy of ``--policy FILE``, or a one-key policy for ``--key PUBLIC.pem``.

    UsageError unless exactly one of them is given.
    """
    from bundler.adapters.trustpolicy import load_trust_policy
    from bundler.model.policy import single_key_policy

    if (policy is None) == (key is None):
        raise UsageError("give exactly one of --policy FILE or --key PUBLIC.pem")
    if policy is not None:
        return load_trust_policy(policy)
    assert key is not None
    return single_key_policy(public_key(key), key.name)


def sign_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="The bundle: REGISTRY/REPO[:TAG], oci:DIR[:REF] or archive:FILE.tar.",
        ),
    ],
    key: KeyOpt,
    passphrase: PassphraseFlags,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive/--no-recursive",
            help="Also sign every manifest the bundle pins (as cosign --recursive).",
        ),
    ] = True,
    identity: IdentityOpt = None,
    ui: Ui,
    registry: RegistryFlags,
) -> None:
    """Sign a bundle with a cosign-compatible simple-signing signature.

    It is stored where cosign and skopeo look for it (and inside layouts and archives, so it
    travels with them).
    """
    private = private_key(key, passphrase)
    result = _sign(source, private, recursive, identity, None, registry.options())
    if ui.json:
        emit_json(result.to_json())
        return
    if not result.signed:
        typer.echo(
            printable(f"{result.digest}  already signed by {result.key_id} as {result.identity}")
        )
        ui.note(f"nothing written to {result.target}")
        return
    typer.echo(printable(f"{result.digest}  signed by {result.key_id} as {result.identity}"))
    already = f" ({len(result.already_signed)} already were)" if result.already_signed else ""
    ui.note(f"{len(result.signed)} manifests signed in {result.target}{already}")


def _sign(
    source: str,
    private: Any,
    recursive: bool,
    identity: str | None,
    expected: Digest | None,
    options: RegistryOptions,
) -> SignResult:
    from bundler.services.sign import sign
    from bundler.services.transports import Transports, parse_location

    transports = Transports(options)
    try:
        return sign(
            parse_location(source),
            private,
            transports,
            recursive=recursive,
            identity=identity,
            expected=expected,
        )
    finally:
        transports.close()


def _verify_and_render(
    source: str,
    policy: TrustPolicy,
    ui: Ui,
    parallel: int,
    options: RegistryOptions,
    emit: bool = True,
) -> VerifyReport:
    from bundler.services.transports import Transports, parse_location
    from bundler.services.verify import open_for_verification, verify

    with Transports(options) as transports, progress_bar(ui) as sink:
        store = open_for_verification(transports, parse_location(source))
        try:
            report = verify(store, policy, parallel=parallel, progress=sink)
        finally:
            store.close()
    if report.error is not None:
        ui.known.update(report.to_json())  # the steps that ran go with the error
        raise report.error
    if emit and ui.json:
        emit_json(report.to_json())
    elif emit:
        _render_verified(report)
    return report


def _render_verified(report: VerifyReport) -> None:
    """The text line of a verified bundle: digest, name, version, images, signers."""
    bundle = report.bundle
    if bundle is None:
        return
    signers = ", ".join(f"{s.key_name} ({s.role})" for s in bundle.signers)
    typer.echo(
        printable(
            f"{bundle.digest}  verified: {bundle.name} {bundle.version}, "
            f"{len(bundle.lock.images)} images, signed by {signers}"
        )
    )


def verify_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="The bundle: REGISTRY/REPO[:TAG], oci:DIR[:REF] or archive:FILE.tar.",
        ),
    ],
    policy: PolicyOpt = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="FILE", help="Trust exactly this public key instead."),
    ] = None,
    promotion: Annotated[
        bool,
        typer.Option(
            "--promotion",
            help="SRC is a promoted chart: check its promotion "
            "record against --key (the promotion public key).",
        ),
    ] = False,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Verify a bundle offline.

    That is signatures and trust policy, the lock against the index, every manifest and blob,
    and nothing extra. Steps as in docs/verification.md; exit 12 names the step that failed.
    """
    if promotion:
        _verify_promotion(source, key, ui, registry.options())
        return
    _verify_and_render(source, load_policy(policy, key), ui, parallel, registry.options(parallel))


def _verify_promotion(source: str, key: Path | None, ui: Ui, options: RegistryOptions) -> None:
    from bundler.services.promote import verify_promotion
    from bundler.services.transports import Transports, parse_location

    if key is None:
        raise UsageError("--promotion needs --key PROMOTION.pub")
    public = public_key(key)
    with Transports(options) as transports:
        store = transports.open_source(parse_location(source))
        try:
            record = verify_promotion(store, public)
        finally:
            store.close()
    if ui.json:
        emit_json(record)
        return
    bundle = record["bundle"]
    typer.echo(
        printable(
            f"{record['chart']['digest']}  promotion verified: {bundle['name']} "
            f"{bundle['version']} from bundle {bundle['digest']}"
        )
    )


def approve_command(
    *,
    source: Annotated[str, typer.Argument(metavar="SRC", help="The bundle to approve.")],
    key: KeyOpt,
    policy: Annotated[
        Path,
        typer.Option("--policy", metavar="FILE", help="Trust policy naming the approver."),
    ],
    passphrase: PassphraseFlags,
    identity: IdentityOpt = None,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Verify a bundle against the policy, then add this approver's signature.

    Every requirement except the approver's own role must already be met (approvals are what
    this command collects); the approving key must be one the policy trusts, and its signature
    must count toward the bundle's rule (a role the rule requires, the identity it names), or
    nothing is written.
    """
    from bundler.errors import VerificationError
    from bundler.services.trust import approval_problem

    full = load_policy(policy, None)
    private = private_key(key, passphrase)
    mine = [k for k in full.keys if k.key.key_id == private.public.key_id]
    if not mine:
        raise UsageError(f"{key} is not a key the policy trusts; it cannot approve")
    role = mine[0].role
    if all(r.role == role for rule in full.rules for r in rule.require):
        raise UsageError(f"the policy asks only for {role!r} signatures: nothing to verify first")
    # Steps 1 to 6 with the signature requirements left out; the kernel then judges the
    # signatures against the full rule, with the approval this command would add.
    before = replace(full, rules=tuple(replace(rule, require=()) for rule in full.rules))
    options = registry.options(parallel)
    report = _verify_and_render(source, before, ui, parallel, options, emit=False)
    assert report.bundle is not None  # a failed verification raised above
    claim = identity or _signing_identity(source, options)
    problem = approval_problem(report.bundle, full, mine[0], claim)
    if problem is not None:
        raise VerificationError(4, f"{problem}; nothing was signed")
    if not ui.json:
        _render_verified(report)
    result = _sign(source, private, False, identity, report.bundle.digest, options)
    if ui.json:
        emit_json({"verification": report.to_json(), "approval": result.to_json()})
        return
    again = "" if result.signed else "already "
    typer.echo(printable(f"{result.digest}  {again}approved by {mine[0].name} ({role})"))


def _signing_identity(source: str, options: RegistryOptions) -> str:
    """The identity ``sign`` names for ``source`` when no ``--identity`` is given."""
    from bundler.services.sign import default_identity
    from bundler.services.transports import Transports, parse_location

    location = parse_location(source)
    transports = Transports(options)
    try:
        store = transports.open_source(location)
        try:
            return default_identity(location, store, store.fetch_manifest(store.resolve()))
        finally:
            store.close()
    finally:
        transports.close()


def register(app: typer.Typer) -> None:
    """Add the ``sign``, ``verify`` and ``approve`` commands to the CLI's Typer ``app``."""
    command(app, "sign")(sign_command)
    command(app, "verify")(verify_command)
    command(app, "approve")(approve_command)
