"""``bundler sign``, ``bundler verify`` and ``bundler approve``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bundler.cli.common import (
    ParallelOpt,
    PassphraseFlags,
    RegistryFlags,
    TokenFlags,
    Ui,
    command,
    emit_json,
    progress_bar,
    public_key,
    signing_key,
)
from bundler.errors import UsageError
from bundler.model.policy import TrustPolicy
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.adapters.registry.options import RegistryOptions
    from bundler.services.verify import VerifyReport

KeyOpt = Annotated[
    str,
    typer.Option(
        "--key",
        metavar="KEY",
        help="Encrypted private key file (cosign format), or a pkcs11: URI of a token key.",
    ),
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
    token: TokenFlags,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive/--no-recursive",
            help="Also sign every manifest the bundle pins (as cosign --recursive).",
        ),
    ] = True,
    identity: IdentityOpt = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate",
            metavar="FILE",
            help="PEM certificate for the key (corporate PKI), stored with the signature.",
        ),
    ] = None,
    certificate_chain: Annotated[
        Path | None,
        typer.Option(
            "--certificate-chain",
            metavar="FILE",
            help="PEM intermediates between --certificate and its root, stored with it.",
        ),
    ] = None,
    ui: Ui,
    registry: RegistryFlags,
) -> None:
    """Sign a bundle with a cosign-compatible simple-signing signature.

    It is stored where cosign and skopeo look for it (and inside layouts and archives, so it
    travels with them).
    """
    from bundler import api

    private = signing_key(key, passphrase, token)
    with api.Session(registry.options()) as session:
        result = api.sign(
            source,
            private,
            recursive=recursive,
            identity=identity,
            certificate=certificate,
            certificate_chain=certificate_chain,
            session=session,
        )
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


def _verify_and_render(
    source: str,
    policy: TrustPolicy,
    ui: Ui,
    parallel: int,
    options: RegistryOptions,
) -> VerifyReport:
    from bundler.services.transports import Transports, parse_location
    from bundler.services.verify import open_for_verification, verify

    with (
        Transports(options) as transports,
        progress_bar(ui) as sink,
        open_for_verification(transports, parse_location(source)) as store,
    ):
        report = verify(store, policy, parallel=parallel, progress=sink)
    if report.error is not None:
        ui.known.update(report.to_json())  # the steps that ran go with the error
        raise report.error
    if ui.json:
        emit_json(report.to_json())
    else:
        _render_verified(report)
    return report


def _render_verified(report: VerifyReport) -> None:
    """The text line of a verified bundle (or signed image): digest, what it is, signers."""
    bundle = report.bundle
    image = report.image
    if image is not None:
        signers = ", ".join(f"{s.key_name} ({s.role})" for s in image.signers)
        typer.echo(
            printable(
                f"{image.digest}  verified: a signed {report.kind}, not a bundle; "
                f"signed by {signers}"
            )
        )
        return
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
    from bundler import api

    if key is None:
        raise UsageError("--promotion needs --key PROMOTION.pub")
    public = public_key(key)
    with api.Session(options) as session:
        record = api.verify_promotion(source, public, session=session)
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
    token: TokenFlags,
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
    from bundler import api

    private = signing_key(key, passphrase, token)
    with api.Session(registry.options(parallel)) as session, progress_bar(ui) as sink:
        result = api.approve(
            source,
            private,
            load_policy(policy, None),
            identity=identity,
            parallel=parallel,
            progress=sink,
            session=session,
        )
    if ui.json:
        emit_json(result.to_json())
        return
    _render_verified(result.verification)
    again = "already " if result.already else ""
    approver = result.approver
    typer.echo(
        printable(f"{result.approval.digest}  {again}approved by {approver.name} ({approver.role})")
    )
    if result.still_needed is not None:
        ui.note(f"the policy is not met yet: {result.still_needed}")


def register(app: typer.Typer) -> None:
    """Add the ``sign``, ``verify`` and ``approve`` commands to the CLI's Typer ``app``."""
    command(app, "sign")(sign_command)
    command(app, "verify")(verify_command)
    command(app, "approve")(approve_command)
