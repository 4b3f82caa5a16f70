"""``bundler sign``, ``bundler verify`` and ``bundler approve``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bundler.cli.common import (
    CaFileOpt,
    ConfigDirOpt,
    InsecureOpt,
    OutputFormat,
    OutputOpt,
    ParallelOpt,
    PlainHttpOpt,
    emit_json,
    registry_options,
)
from bundler.errors import KeyFileError, UsageError
from bundler.model.policy import TrustPolicy
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.services.verify import VerifyReport

KeyOpt = Annotated[
    str,
    typer.Option(
        "--key",
        help="Encrypted private key file (cosign format), or a pkcs11: URI of a token key.",
    ),
]
PassFileOpt = Annotated[
    Path | None, typer.Option("--passphrase-file", help="Read the key's passphrase from FILE.")
]
PassEnvOpt = Annotated[
    str | None, typer.Option("--passphrase-env", help="Read the passphrase from variable VAR.")
]
PinFileOpt = Annotated[
    Path | None, typer.Option("--pin-file", help="Read a pkcs11: key's PIN from FILE.")
]
PinEnvOpt = Annotated[
    str | None,
    typer.Option("--pin-env", metavar="VAR", help="Read a pkcs11: key's PIN from variable VAR."),
]
Pkcs11ModuleOpt = Annotated[
    str | None,
    typer.Option(
        "--pkcs11-module",
        metavar="PATH",
        help="PKCS#11 module of a pkcs11: key (default: $COSIGN_PKCS11_MODULE_PATH).",
    ),
]
PolicyOpt = Annotated[
    Path | None, typer.Option("--policy", help="Trust policy file (schemas/trust-policy).")
]
IdentityOpt = Annotated[
    str | None,
    typer.Option(
        "--identity",
        help="Repository the signature names (critical.identity); "
        "default: the registry repository, or the bundle's name.",
    ),
]


def _terminal_prompt(text: str) -> str:  # on the terminal, never on stdout (it may carry JSON)
    import getpass

    return getpass.getpass(text)


def private_key(  # type: ignore[no-untyped-def]
    key: str,
    passphrase_file: Path | None,
    passphrase_env: str | None,
    pin_file: Path | None = None,
    pin_env: str | None = None,
    pkcs11_module: str | None = None,
):
    """The signing key of ``--key``: a cosign key file, or a ``pkcs11:`` URI of a token key.

    The passphrase or PIN comes from its file or variable, or a prompt when there is a
    terminal. KeyFileError if the key cannot be read or opened.
    """
    from bundler.adapters.pkcs11 import TokenAccess
    from bundler.adapters.signingkeys import load_signing_key

    access = TokenAccess(
        module=pkcs11_module,
        pin_file=pin_file,
        pin_env=pin_env,
        prompt=_terminal_prompt if sys.stdin.isatty() else None,
    )
    return load_signing_key(
        key, passphrase_file=passphrase_file, passphrase_env=passphrase_env, token=access
    )


def load_policy(policy: Path | None, key: Path | None) -> TrustPolicy:
    """The trust policy of ``--policy FILE``, or a one-key policy for ``--key PUBLIC.pem``.

    UsageError unless exactly one of them is given.
    """
    from bundler.adapters.crypto import load_public_key, read_key_file
    from bundler.adapters.trustpolicy import load_trust_policy
    from bundler.model.policy import single_key_policy

    if (policy is None) == (key is None):
        raise UsageError("give exactly one of --policy FILE or --key PUBLIC.pem")
    if policy is not None:
        return load_trust_policy(policy)
    assert key is not None
    try:
        pem = read_key_file(key)  # a regular file, read with a bound
    except OSError as exc:
        raise KeyFileError(f"cannot read key {key}: {exc.strerror}") from None
    return single_key_policy(load_public_key(pem, str(key)), key.name)


def sign_command(
    source: Annotated[
        str,
        typer.Argument(help="The bundle: REGISTRY/REPO[:TAG], oci:DIR[:REF] or archive:FILE.tar."),
    ],
    key: KeyOpt,
    passphrase_file: PassFileOpt = None,
    passphrase_env: PassEnvOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    pkcs11_module: Pkcs11ModuleOpt = None,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive/--no-recursive",
            help="Also sign every manifest the bundle pins (as cosign --recursive).",
        ),
    ] = True,
    identity: IdentityOpt = None,
    output: OutputOpt = OutputFormat.text,
    plain_http: PlainHttpOpt = False,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Sign a bundle with a cosign-compatible simple-signing signature.

    It is stored where cosign and skopeo look for it (and inside layouts and archives, so it
    travels with them).
    """
    from bundler import api

    private = private_key(key, passphrase_file, passphrase_env, pin_file, pin_env, pkcs11_module)
    options = registry_options(plain_http, ca_file, insecure, config_dir)
    with api.Session(options) as session:
        result = api.sign(source, private, recursive=recursive, identity=identity, session=session)
    if output is OutputFormat.json:
        emit_json(result.to_json())
        return
    if not result.signed:
        typer.echo(
            printable(f"{result.digest}  already signed by {result.key_id} as {result.identity}")
        )
        typer.echo(printable(f"nothing written to {result.target}"), err=True)
        return
    typer.echo(printable(f"{result.digest}  signed by {result.key_id} as {result.identity}"))
    already = f" ({len(result.already_signed)} already were)" if result.already_signed else ""
    typer.echo(
        printable(f"{len(result.signed)} manifests signed in {result.target}{already}"), err=True
    )


def _verify_and_render(
    source: str,
    policy: TrustPolicy,
    output: OutputFormat,
    parallel: int,
    plain_http: bool,
    ca_file: Path | None,
    insecure: bool,
    config_dir: Path | None,
) -> VerifyReport:
    from bundler.services.transports import Transports, parse_location
    from bundler.services.verify import open_for_verification, verify

    options = registry_options(plain_http, ca_file, insecure, config_dir, parallel)
    with (
        Transports(options) as transports,
        open_for_verification(transports, parse_location(source)) as store,
    ):
        report = verify(store, policy, parallel=parallel)
    if output is OutputFormat.json:
        emit_json(report.to_json())
    else:
        _render_verified(report)
    if report.error is not None:
        raise report.error
    return report


def _render_verified(report: VerifyReport) -> None:
    """The text line of a verified bundle: digest, name, version, images, signers."""
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
    source: Annotated[
        str,
        typer.Argument(help="The bundle: REGISTRY/REPO[:TAG], oci:DIR[:REF] or archive:FILE.tar."),
    ],
    policy: PolicyOpt = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Trust exactly this public key instead.")
    ] = None,
    promotion: Annotated[
        bool,
        typer.Option(
            "--promotion",
            help="SRC is a promoted chart: check its promotion "
            "record against --key (the promotion public key).",
        ),
    ] = False,
    output: OutputOpt = OutputFormat.text,
    parallel: ParallelOpt = 4,
    plain_http: PlainHttpOpt = False,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Verify a bundle offline.

    That is signatures and trust policy, the lock against the index, every manifest and blob,
    and nothing extra. Steps as in docs/verification.md; exit 12 names the step that failed.
    """
    if promotion:
        _verify_promotion(source, key, output, plain_http, ca_file, insecure, config_dir)
        return
    _verify_and_render(
        source,
        load_policy(policy, key),
        output,
        parallel,
        plain_http,
        ca_file,
        insecure,
        config_dir,
    )


def _verify_promotion(
    source: str,
    key: Path | None,
    output: OutputFormat,
    plain_http: bool,
    ca_file: Path | None,
    insecure: bool,
    config_dir: Path | None,
) -> None:
    from bundler import api

    if key is None:
        raise UsageError("--promotion needs --key PROMOTION.pub")
    public = api.load_public_key_file(key)
    options = registry_options(plain_http, ca_file, insecure, config_dir)
    with api.Session(options) as session:
        record = api.verify_promotion(source, public, session=session)
    if output is OutputFormat.json:
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
    source: Annotated[str, typer.Argument(help="The bundle to approve.")],
    key: KeyOpt,
    policy: Annotated[Path, typer.Option("--policy", help="Trust policy naming the approver.")],
    passphrase_file: PassFileOpt = None,
    passphrase_env: PassEnvOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    pkcs11_module: Pkcs11ModuleOpt = None,
    identity: IdentityOpt = None,
    output: OutputOpt = OutputFormat.text,
    parallel: ParallelOpt = 4,
    plain_http: PlainHttpOpt = False,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Verify a bundle against the policy, then add this approver's signature.

    Every requirement except the approver's own role must already be met (approvals are what
    this command collects); the approving key must be one the policy trusts, and its signature
    must count toward the bundle's rule (a role the rule requires, the identity it names), or
    nothing is written.
    """
    from bundler import api

    private = private_key(key, passphrase_file, passphrase_env, pin_file, pin_env, pkcs11_module)
    options = registry_options(plain_http, ca_file, insecure, config_dir, parallel)
    with api.Session(options) as session:
        result = api.approve(
            source,
            private,
            load_policy(policy, None),
            identity=identity,
            parallel=parallel,
            session=session,
        )
    if output is OutputFormat.json:
        emit_json(result.to_json())
        return
    _render_verified(result.verification)
    again = "already " if result.already else ""
    approver = result.approver
    typer.echo(
        printable(f"{result.approval.digest}  {again}approved by {approver.name} ({approver.role})")
    )
    if result.still_needed is not None:
        typer.echo(printable(f"the policy is not met yet: {result.still_needed}"), err=True)


def register(app: typer.Typer) -> None:
    """Add the ``sign``, ``verify`` and ``approve`` commands to the CLI's Typer ``app``."""
    app.command("sign")(sign_command)
    app.command("verify")(verify_command)
    app.command("approve")(approve_command)
