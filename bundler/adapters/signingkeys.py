"""The one reader of a ``--key`` value that signs: a cosign key file or a ``pkcs11:`` URI."""

from __future__ import annotations

import os
from pathlib import Path

from bundler.adapters.crypto import SigningKey, decrypt_private_key, read_key_file, read_passphrase
from bundler.adapters.pkcs11 import TokenAccess, is_pkcs11_uri, open_key, parse_uri
from bundler.errors import KeyFileError, UsageError

COSIGN_PASSWORD = "COSIGN_PASSWORD"  # noqa: S105 - the name of cosign's variable, not a secret


def load_signing_key(
    value: str,
    *,
    passphrase_file: Path | None = None,
    passphrase_env: str | None = None,
    token: TokenAccess | None = None,
) -> SigningKey:
    """The signing key ``value`` names, ready to sign.

    A ``pkcs11:`` URI is a key on a token (module and PIN as :mod:`bundler.adapters.pkcs11`
    finds them); anything else is the path of a cosign encrypted key file, opened with the
    passphrase from ``passphrase_file``, ``passphrase_env``, ``COSIGN_PASSWORD`` or
    ``token.prompt``. Options of the other kind are refused (UsageError), so a PIN is never
    taken for a passphrase. KeyFileError when the key cannot be opened.
    """
    access = token or TokenAccess()
    if is_pkcs11_uri(value):
        if passphrase_file is not None or passphrase_env is not None:
            raise UsageError(
                "--passphrase-file/--passphrase-env open key files; a pkcs11: key takes "
                "--pin-file or --pin-env"
            )
        return open_key(parse_uri(value), access)
    if access.module is not None or access.pin_file is not None or access.pin_env is not None:
        raise UsageError(
            f"--pkcs11-module/--pin-file/--pin-env are for pkcs11: keys; {value} is a key file "
            "(it takes --passphrase-file or --passphrase-env)"
        )
    path = Path(value)
    try:
        pem = read_key_file(path)  # a regular file, read with a bound
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from None
    if passphrase_file is None and passphrase_env is None and COSIGN_PASSWORD in os.environ:
        passphrase_env = COSIGN_PASSWORD  # as cosign reads it, in pipelines
    prompt = None
    if passphrase_file is None and passphrase_env is None:
        ask = access.prompt
        if ask is None:
            raise UsageError(
                f"the passphrase of {path} cannot be asked for (no terminal): pass "
                f"--passphrase-file FILE or --passphrase-env VAR, or set {COSIGN_PASSWORD}"
            )

        def prompt() -> str:
            assert ask is not None
            return ask(f"Passphrase for {path}: ")

    passphrase = read_passphrase(file=passphrase_file, env=passphrase_env, prompt=prompt)
    return decrypt_private_key(pem, passphrase, str(path))
