"""``bundler keys generate`` / ``bundler keys inspect``: signing keys in cosign's formats."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bundler.cli.common import PassphraseFlags, TokenFlags, Ui, command, emit_json, read_key
from bundler.errors import UsageError
from bundler.model.text import printable


class KeyType(StrEnum):
    """``--type`` of ``keys generate``: ECDSA P-256 (cosign's default) or Ed25519."""

    ecdsa_p256 = "ecdsa-p256"
    ed25519 = "ed25519"


keys_app = typer.Typer(
    help="Create and inspect signing keys (cosign-compatible PEM files).",
    no_args_is_help=True,
)


def _emit(result: dict[str, Any], ui: Ui) -> None:
    if ui.json:
        emit_json(result)
        return
    labels = {
        "privateKey": "private key",
        "publicKey": "public key",
        "kind": "kind",
        "algorithm": "algorithm",
        "keyId": "key id",
        "subject": "subject",
        "issuer": "issuer",
        "emails": "emails",
        "hostnames": "hostnames",
        "uris": "uris",
        "oidcIssuer": "OIDC issuer",
        "notBefore": "valid from",
        "notAfter": "valid to",
        "fingerprint": "fingerprint",
        "keyUri": "key uri",
    }
    for name, value in result.items():
        if value in (None, [], ""):
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        typer.echo(printable(f"{labels[name]}: {shown}"))  # from a key or certificate file


def generate_command(
    *,
    prefix: Annotated[
        Path, typer.Argument(metavar="PREFIX", help="Writes PREFIX.key and PREFIX.pub.")
    ],
    key_type: Annotated[
        KeyType, typer.Option("--type", help="Key algorithm.")
    ] = KeyType.ecdsa_p256,
    passphrase: PassphraseFlags,
    pkcs11_uri: Annotated[
        str | None,
        typer.Option(
            "--pkcs11",
            metavar="URI",
            help="Make the key pair on a PKCS#11 token instead (pkcs11:token=...;object=...); "
            "only PREFIX.pub is written.",
        ),
    ] = None,
    token: TokenFlags,
    ui: Ui,
) -> None:
    """Generate a key pair: PREFIX.key (encrypted, mode 0600) and PREFIX.pub.

    The passphrase comes from --passphrase-file, --passphrase-env, or a prompt (asked
    twice); never from an argument. cosign and skopeo read both files. With --pkcs11 the
    pair is made on the token (the private key never leaves it) and PREFIX.pub is written.
    """
    if pkcs11_uri is not None:
        if passphrase.file is not None or passphrase.env is not None:
            raise UsageError("a key made on a token has no passphrase; give its PIN instead")
        _generate_on_token(pkcs11_uri, prefix, key_type, token, ui)
        return
    if token.given():
        raise UsageError("--pin-file, --pin-env and --pkcs11-module go with --pkcs11 URI")
    from bundler.adapters import crypto

    secret = passphrase.read(prefix.with_name(prefix.name + ".key"), new=True)
    key = crypto.generate_key(key_type.value)
    key_path, pub_path = crypto.write_key_pair(prefix, key, secret)
    _emit(
        {
            "privateKey": str(key_path),
            "publicKey": str(pub_path),
            "algorithm": key.algorithm,
            "keyId": key.public.key_id,
        },
        ui,
    )


def _generate_on_token(
    uri: str, prefix: Path, key_type: KeyType, token: TokenFlags, ui: Ui
) -> None:
    from bundler.adapters import pkcs11

    key, pub_path = pkcs11.generate_key_pair(
        pkcs11.parse_uri(uri), token.access(), key_type.value, prefix
    )
    key.close()
    _emit(
        {
            "keyUri": key.uri,
            "publicKey": str(pub_path),
            "algorithm": key.algorithm,
            "keyId": key.public.key_id,
        },
        ui,
    )


def inspect_command(
    *,
    key_file: Annotated[
        Path,
        typer.Argument(
            metavar="KEY", help="A public (.pub) or private (.key) key, or a PEM certificate."
        ),
    ],
    passphrase: PassphraseFlags,
    ui: Ui,
) -> None:
    """Print a key's algorithm and key id (a private key is decrypted first).

    Decrypting proves the passphrase opens the key; a wrong one exits 13.
    """
    from bundler.adapters import crypto

    origin = str(key_file)
    data = read_key(key_file)
    public: crypto.PublicKey
    if crypto.pem_label(data, origin) == "CERTIFICATE":
        from bundler.adapters.x509 import describe_certificate

        _emit(describe_certificate(data, origin), ui)
        return
    if crypto.pem_label(data, origin) == crypto.PUBLIC_KEY_LABEL:
        kind, public = "public", crypto.load_public_key(data, origin)
    else:
        secret = passphrase.read(key_file)
        kind, public = "private", crypto.decrypt_private_key(data, secret, origin).public
    _emit({"kind": kind, "algorithm": public.algorithm, "keyId": public.key_id}, ui)


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to ``app``, the CLI's Typer application."""
    command(keys_app, "generate")(generate_command)
    command(keys_app, "inspect")(inspect_command)
    app.add_typer(keys_app, name="keys")
