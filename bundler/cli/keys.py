"""``bundler keys generate`` / ``bundler keys inspect``: signing keys in cosign's formats."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bundler.cli.common import OutputFormat, OutputOpt, emit_json
from bundler.errors import NotFoundError, TransportError, UsageError
from bundler.model.text import printable


class KeyType(StrEnum):
    """``--type`` of ``keys generate``: ECDSA P-256 (cosign's default) or Ed25519."""

    ecdsa_p256 = "ecdsa-p256"
    ed25519 = "ed25519"


PassphraseFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="Read the passphrase from the first line of FILE."),
]
PassphraseEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--passphrase-env", metavar="VAR", help="Read the passphrase from environment variable VAR."
    ),
]

keys_app = typer.Typer(
    help="Create and inspect signing keys (cosign-compatible PEM files).",
    no_args_is_help=True,
)


def _prompt_new() -> str:
    return str(
        typer.prompt("Passphrase for the new key", hide_input=True, confirmation_prompt=True)
    )


def _prompt_existing() -> str:
    return str(typer.prompt("Passphrase", hide_input=True, default="", show_default=False))


def _emit(result: dict[str, Any], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        emit_json(result)
        return
    labels = {
        "privateKey": "private key",
        "publicKey": "public key",
        "kind": "kind",
        "algorithm": "algorithm",
        "keyId": "key id",
        "keyUri": "key uri",
    }
    for name, value in result.items():
        typer.echo(printable(f"{labels[name]}: {value}"))  # from a key file


@keys_app.command("generate")
def generate_command(
    prefix: Annotated[Path, typer.Argument(help="Writes PREFIX.key and PREFIX.pub.")],
    key_type: Annotated[
        KeyType, typer.Option("--type", help="Key algorithm.")
    ] = KeyType.ecdsa_p256,
    passphrase_file: PassphraseFileOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    pkcs11_uri: Annotated[
        str | None,
        typer.Option(
            "--pkcs11",
            metavar="URI",
            help="Make the key pair on a PKCS#11 token instead (pkcs11:token=...;object=...); "
            "only PREFIX.pub is written.",
        ),
    ] = None,
    pin_file: Annotated[
        Path | None, typer.Option("--pin-file", help="With --pkcs11: the PIN from FILE.")
    ] = None,
    pin_env: Annotated[
        str | None,
        typer.Option("--pin-env", metavar="VAR", help="With --pkcs11: the PIN from variable VAR."),
    ] = None,
    pkcs11_module: Annotated[
        str | None,
        typer.Option(
            "--pkcs11-module",
            metavar="PATH",
            help="With --pkcs11: the PKCS#11 module (default: $COSIGN_PKCS11_MODULE_PATH).",
        ),
    ] = None,
    output: OutputOpt = OutputFormat.text,
) -> None:
    """Generate a key pair: PREFIX.key (encrypted, mode 0600) and PREFIX.pub.

    The passphrase comes from --passphrase-file, --passphrase-env, or a prompt (asked
    twice); never from an argument. cosign and skopeo read both files. With --pkcs11 the
    pair is made on the token (the private key never leaves it) and PREFIX.pub is written.
    """
    if pkcs11_uri is not None:
        if passphrase_file is not None or passphrase_env is not None:
            raise UsageError("a key made on a token has no passphrase; give its PIN instead")
        _generate_on_token(pkcs11_uri, prefix, key_type, pin_file, pin_env, pkcs11_module, output)
        return
    if pin_file is not None or pin_env is not None or pkcs11_module is not None:
        raise UsageError("--pin-file, --pin-env and --pkcs11-module go with --pkcs11 URI")
    interactive = passphrase_file is None and passphrase_env is None
    from bundler.adapters import crypto

    passphrase = crypto.read_passphrase(
        file=passphrase_file, env=passphrase_env, prompt=_prompt_new if interactive else None
    )
    key = crypto.generate_key(key_type.value)
    key_path, pub_path = crypto.write_key_pair(prefix, key, passphrase)
    _emit(
        {
            "privateKey": str(key_path),
            "publicKey": str(pub_path),
            "algorithm": key.algorithm,
            "keyId": key.public.key_id,
        },
        output,
    )


def _generate_on_token(
    uri: str,
    prefix: Path,
    key_type: KeyType,
    pin_file: Path | None,
    pin_env: str | None,
    module: str | None,
    output: OutputFormat,
) -> None:
    import sys

    from bundler.adapters import pkcs11

    def ask(text: str) -> str:  # on the terminal, never on stdout (it may carry JSON)
        import getpass

        return getpass.getpass(text)

    access = pkcs11.TokenAccess(
        module=module,
        pin_file=pin_file,
        pin_env=pin_env,
        prompt=ask if sys.stdin.isatty() else None,
    )
    key, pub_path = pkcs11.generate_key_pair(pkcs11.parse_uri(uri), access, key_type.value, prefix)
    key.close()
    _emit(
        {
            "keyUri": key.uri,
            "publicKey": str(pub_path),
            "algorithm": key.algorithm,
            "keyId": key.public.key_id,
        },
        output,
    )


@keys_app.command("inspect")
def inspect_command(
    key_file: Annotated[Path, typer.Argument(help="A public (.pub) or private (.key) key.")],
    passphrase_file: PassphraseFileOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    output: OutputOpt = OutputFormat.text,
) -> None:
    """Print a key's algorithm and key id (a private key is decrypted first).

    Decrypting proves the passphrase opens the key; a wrong one exits 13.
    """
    from bundler.adapters.crypto import read_key_file

    origin = str(key_file)
    try:
        data = read_key_file(key_file)  # a regular file, read with a bound
    except FileNotFoundError:
        raise NotFoundError(f"key file {key_file} does not exist") from None
    except OSError as exc:
        raise TransportError(f"cannot read {key_file}: {exc.strerror}") from None
    from bundler.adapters import crypto

    public: crypto.PublicKey
    if crypto.pem_label(data, origin) == crypto.PUBLIC_KEY_LABEL:
        kind, public = "public", crypto.load_public_key(data, origin)
    else:
        interactive = passphrase_file is None and passphrase_env is None
        passphrase = crypto.read_passphrase(
            file=passphrase_file,
            env=passphrase_env,
            prompt=_prompt_existing if interactive else None,
        )
        kind, public = "private", crypto.decrypt_private_key(data, passphrase, origin).public
    _emit({"kind": kind, "algorithm": public.algorithm, "keyId": public.key_id}, output)


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to ``app``, the CLI's Typer application."""
    app.add_typer(keys_app, name="keys")
