"""Signing keys on PKCS#11 tokens (HSMs, smart cards, SoftHSM), named by RFC 7512 URIs.

A key is named as cosign names it with ``--key pkcs11:...``::

    pkcs11:token=release;object=vendor?module-path=/usr/lib/softhsm/libsofthsm2.so

Path attributes select the token (``token``, ``serial``, ``model``, ``manufacturer``,
``slot-id``) and the key (``object``, its label; ``id``, its CKA_ID, percent-encoded bytes;
``type=private``). Query attributes name the module (``module-path``) and, if given, the PIN
(``pin-value``, or ``pin-source``: a file whose first line is the PIN). Outside the URI the
module comes from ``--pkcs11-module`` or ``COSIGN_PKCS11_MODULE_PATH`` and the PIN from
``--pin-file``, ``--pin-env``, ``COSIGN_PKCS11_PIN`` or a prompt. A PIN is never part of a
message: every URI this module prints is :meth:`Pkcs11Uri.display`, which leaves it out.

Signatures are cosign's: ECDSA (P-256, P-384) signs SHA-256 of the payload with CKM_ECDSA on
the token and the raw ``r || s`` it returns is DER-encoded; Ed25519 signs the payload itself
with CKM_EDDSA (pure Ed25519, as containers/image verifies). Each signature is checked against
the token's public key object before it is used, so a public key object that does not belong
to the private key is found at once, not by a verifier later.

python-pkcs11 is imported only inside the functions that talk to a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, unquote_to_bytes

from bundler.adapters import crypto
from bundler.errors import KeyFileError, NotFoundError, UsageError

if TYPE_CHECKING:
    import pkcs11 as p11
    from pkcs11._pkcs11 import lib as Library

SCHEME = "pkcs11:"
MODULE_ENV = "COSIGN_PKCS11_MODULE_PATH"
PIN_ENV = "COSIGN_PKCS11_PIN"
MAX_PIN_FILE_BYTES = 4096

_PATH_ATTRIBUTES = ("token", "manufacturer", "serial", "model", "slot-id", "object", "id", "type")
_QUERY_ATTRIBUTES = ("module-path", "pin-value", "pin-source")
_SECRET = "pin-value"  # noqa: S105 - the name of the attribute, not a secret
_UNRESERVED = "-._~:[]@!$'()*+,"  # RFC 7512 pk11-pchar, less the attribute separators

Prompt = Callable[[str], str]  # asks on the terminal with this text; gives what was typed


def is_pkcs11_uri(value: str) -> bool:
    """True when a ``--key`` value names a token key (``pkcs11:...``) rather than a file."""
    return value.startswith(SCHEME)


# ------------------------------------------------------------------------------------ URIs
@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI: path attributes (``id`` as bytes) and query attributes."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: str | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)

    def display(self) -> str:
        """The URI as it may be printed: every attribute but ``pin-value``."""
        path = [
            f"{name}={quote(value, safe=_UNRESERVED)}"
            for name, value in (
                ("token", self.token),
                ("manufacturer", self.manufacturer),
                ("serial", self.serial),
                ("model", self.model),
                ("slot-id", None if self.slot_id is None else str(self.slot_id)),
                ("object", self.object),
            )
            if value is not None
        ]
        if self.id is not None:
            path.append("id=" + "".join(f"%{byte:02x}" for byte in self.id))
        if self.type is not None:
            path.append(f"type={self.type}")
        query = [
            f"{name}={quote(value, safe=_UNRESERVED + '/')}"
            for name, value in (("module-path", self.module_path), ("pin-source", self.pin_source))
            if value is not None
        ]
        return SCHEME + ";".join(path) + ("?" + "&".join(query) if query else "")

    def __str__(self) -> str:
        return self.display()


def _attributes(text: str, separator: str, known: tuple[str, ...], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in text.split(separator) if text else []:
        name, equals, value = part.partition("=")
        if not equals or not name:
            raise UsageError(f"pkcs11 URI: {where} attribute {name or part!r} has no value")
        if name.startswith("x-"):
            continue  # vendor attributes (RFC 7512 section 2.3): not ours to read
        if name not in known:
            raise UsageError(
                f"pkcs11 URI: unknown {where} attribute {name!r}; known: {', '.join(known)}"
            )
        if name in found:
            raise UsageError(f"pkcs11 URI: attribute {name!r} appears twice")
        found[name] = value
    return found


def parse_uri(text: str) -> Pkcs11Uri:
    """The RFC 7512 URI ``text``; UsageError, naming the attribute, when it is malformed.

    The messages never quote the text, which may hold a ``pin-value``.
    """
    if not is_pkcs11_uri(text):
        raise UsageError("a PKCS#11 key is named by a URI that starts with 'pkcs11:'")
    body = text[len(SCHEME) :]
    if "#" in body:
        raise UsageError("pkcs11 URI: a fragment ('#') is not allowed; percent-encode it")
    path_text, _, query_text = body.partition("?")
    path = _attributes(path_text, ";", _PATH_ATTRIBUTES, "path")
    query = _attributes(query_text, "&", _QUERY_ATTRIBUTES, "query")
    values: dict[str, str] = {}
    for name, value in {**path, **query}.items():
        if name == "id":
            continue  # bytes, not text
        try:
            value.encode("ascii")
            values[name] = unquote(value, errors="strict")
        except (UnicodeError, ValueError):
            raise UsageError(f"pkcs11 URI: {name!r} is not valid percent-encoded UTF-8") from None
    slot_id = None
    if "slot-id" in values:
        if not values["slot-id"].isdigit():
            raise UsageError("pkcs11 URI: 'slot-id' must be a decimal number")
        slot_id = int(values["slot-id"])
    key_type = values.get("type")
    if key_type not in (None, "private"):
        raise UsageError("pkcs11 URI: a signing key is 'type=private' (or no 'type' at all)")
    return Pkcs11Uri(
        token=values.get("token"),
        manufacturer=values.get("manufacturer"),
        serial=values.get("serial"),
        model=values.get("model"),
        slot_id=slot_id,
        object=values.get("object"),
        id=unquote_to_bytes(path["id"]) if "id" in path else None,
        type=key_type,
        module_path=values.get("module-path"),
        pin_source=values.get("pin-source"),
        pin_value=values.get(_SECRET),
    )


# ---------------------------------------------------------------------- module and PIN
@dataclass(frozen=True)
class TokenAccess:
    """How to reach a token outside its URI: the module and where the PIN comes from.

    ``prompt`` is None when there is no terminal to ask on.
    """

    module: str | None = None  # --pkcs11-module
    pin_file: Path | None = None  # --pin-file
    pin_env: str | None = None  # --pin-env
    prompt: Prompt | None = field(default=None, repr=False)
    pin: str | None = field(default=None, repr=False)  # given by a program (bundler.api)


def module_path(uri: Pkcs11Uri, access: TokenAccess) -> Path:
    """The module file: the URI's ``module-path``, ``--pkcs11-module`` or the environment.

    UsageError when none names one, or two name different files; NotFoundError when the file
    does not exist.
    """
    if uri.module_path and access.module and Path(uri.module_path) != Path(access.module):
        raise UsageError(
            f"the URI's module-path {uri.module_path} and --pkcs11-module {access.module} "
            "differ: give the module once"
        )
    named = uri.module_path or access.module or os.environ.get(MODULE_ENV)
    if not named:
        raise UsageError(
            f"no PKCS#11 module for {uri}: pass --pkcs11-module PATH, set {MODULE_ENV}, or add "
            "module-path=PATH to the URI"
        )
    path = Path(named)
    if not path.is_file():
        raise NotFoundError(
            f"PKCS#11 module {path} does not exist: install the token's module or name the right "
            f"file with --pkcs11-module or {MODULE_ENV}"
        )
    return path


def _pin_file(path: Path, what: str) -> str:
    from bundler.adapters.crypto import read_secret_line

    line = read_secret_line(path, what, MAX_PIN_FILE_BYTES)  # missing: 3; unreadable: 13
    try:
        return line.decode()
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path} is not UTF-8 text") from None


def _pin_source_path(source: str) -> Path:
    """The ``pin-source`` of cosign: a ``file:`` URI or a plain path."""
    if source.startswith("file://"):
        return Path(source[len("file://") :])
    if source.startswith("file:"):
        return Path(source[len("file:") :])
    if ":" in source.split("/", 1)[0]:
        raise UsageError("pkcs11 URI: 'pin-source' must be a file (file:PATH or a path)")
    return Path(source)


def _given_pin(uri: Pkcs11Uri, access: TokenAccess) -> str | None:
    """The PIN from the one explicit place it was given, or None; UsageError for two."""
    given = [
        name
        for name, value in (
            ("the URI's pin-value", uri.pin_value),
            ("the URI's pin-source", uri.pin_source),
            ("--pin-file", access.pin_file),
            ("--pin-env", access.pin_env),
            ("a PIN argument", access.pin),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(f"give the PIN one way, not {' and '.join(given)}")
    if uri.pin_source is not None:
        return _pin_file(_pin_source_path(uri.pin_source), "PIN source")
    if access.pin_file is not None:
        return _pin_file(access.pin_file, "PIN file")
    if access.pin_env is not None:
        if access.pin_env not in os.environ:
            raise UsageError(f"environment variable {access.pin_env} is not set")
        return os.environ[access.pin_env]
    return uri.pin_value if uri.pin_value is not None else access.pin


def user_pin(uri: Pkcs11Uri, access: TokenAccess, token_label: str) -> str:
    """The token's user PIN, from exactly one place.

    ``pin-value``, ``pin-source``, ``--pin-file``, ``--pin-env`` or the program's ``pin``;
    when none is given, ``COSIGN_PKCS11_PIN``, else the prompt. UsageError when two are given
    or none can be had.
    """
    pin = _given_pin(uri, access)
    if pin is None and PIN_ENV in os.environ:
        pin = os.environ[PIN_ENV]
    if pin is None and access.prompt is not None:
        pin = access.prompt(f"PIN for token {token_label}: ")
    if pin is None:
        raise UsageError(
            f"the PIN of token {token_label} cannot be asked for (no terminal): pass --pin-file "
            f"FILE or --pin-env VAR, or set {PIN_ENV}"
        )
    if not pin:
        raise UsageError(f"the PIN for token {token_label} is empty")
    return pin


# ---------------------------------------------------------------------------- the token
def _library(path: Path) -> Library:
    try:
        import pkcs11 as p11
    except ImportError:
        raise KeyFileError(
            "PKCS#11 keys need the python-pkcs11 package: install airgap-bundler[pkcs11]"
        ) from None
    try:
        return p11.lib(str(path))
    except p11.PKCS11Error as exc:
        reason = str(exc).rsplit(": ", 1)[-1] or type(exc).__name__
        raise KeyFileError(f"cannot load PKCS#11 module {path}: {reason}") from None


def _matches(uri: Pkcs11Uri, token: p11.Token) -> bool:
    serial = token.serial.decode(errors="replace").strip()
    return (
        (uri.token is None or token.label == uri.token)
        and (uri.serial is None or serial == uri.serial)
        and (uri.model is None or token.model == uri.model)
        and (uri.manufacturer is None or token.manufacturer_id == uri.manufacturer)
        and (uri.slot_id is None or token.slot.slot_id == uri.slot_id)
    )


def _token(library: Library, uri: Pkcs11Uri, module: Path) -> p11.Token:
    import pkcs11 as p11

    try:
        tokens = [slot.get_token() for slot in library.get_slots(token_present=True)]
    except p11.PKCS11Error as exc:
        raise KeyFileError(f"PKCS#11 module {module} cannot list its tokens: {exc!r}") from None
    tokens = [t for t in tokens if t.flags & p11.TokenFlag.TOKEN_INITIALIZED]
    chosen = [t for t in tokens if _matches(uri, t)]
    if len(chosen) == 1:
        return chosen[0]
    present = ", ".join(repr(t.label) for t in tokens) or "none"
    if not chosen:
        raise KeyFileError(f"no token matches {uri} (tokens of {module}: {present})")
    raise KeyFileError(
        f"{len(chosen)} tokens match {uri} ({present}): name one with token= or serial="
    )


def _login(token: p11.Token, pin: str, *, rw: bool) -> p11.Session:
    import pkcs11 as p11

    try:
        return token.open(user_pin=pin, rw=rw)
    except p11.PinIncorrect:
        pass
    except p11.UserAlreadyLoggedIn:
        # A login is per process and token: a second key on a token this process has already
        # logged in to shares that login (closing the first key's session ends it for both).
        return token.open(rw=rw)
    except (p11.PinLocked, p11.PinExpired):
        raise KeyFileError(
            f"the user PIN of token {token.label} is locked or expired: its security officer "
            "must reset it"
        ) from None
    except (p11.PinInvalid, p11.PinLenRange):
        raise KeyFileError(
            f"the PIN given for token {token.label} is not a valid PIN: give the user PIN"
        ) from None
    except p11.PKCS11Error as exc:
        raise KeyFileError(f"cannot log in to token {token.label}: {type(exc).__name__}") from None
    raise KeyFileError(f"the PIN for token {token.label} is wrong: give the token's user PIN")


def _key_template(uri: Pkcs11Uri) -> dict[p11.Attribute, object]:
    from pkcs11 import Attribute

    template: dict[Attribute, object] = {}
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


def _find(session: p11.Session, template: dict[p11.Attribute, object]) -> list[p11.Object]:
    return list(session.get_objects(template))


def _algorithm_of_key(obj: p11.Object, where: str) -> tuple[str, crypto.PublicKey]:
    """The algorithm and public key of a token's public key object."""
    from pkcs11 import Attribute, KeyType

    key_type = obj[Attribute.KEY_TYPE]
    if key_type not in (KeyType.EC, KeyType.EC_EDWARDS):
        raise KeyFileError(
            f"{where} is a {getattr(key_type, 'name', key_type)} key; token keys may be ECDSA "
            "(P-256, P-384) or Ed25519"
        )
    public = crypto.token_public_key(obj[Attribute.EC_PARAMS], obj[Attribute.EC_POINT], where)
    return public.algorithm, public


class Pkcs11Key:
    """A signing key on a token, logged in; the same interface as a decrypted key file.

    The private key never leaves the token; the PIN is not kept once the session is open.
    """

    __slots__ = ("_key", "_session", "algorithm", "public", "uri")

    def __init__(
        self, session: p11.Session, key: p11.Object, public: crypto.PublicKey, uri: str
    ) -> None:
        self._session = session
        self._key = key
        self.public = public
        self.algorithm = public.algorithm
        self.uri = uri  # without any PIN: display() of what selected it

    def sign(self, payload: bytes) -> bytes:
        """The signature cosign would make over ``payload``, made on the token and checked.

        ECDSA: CKM_ECDSA over SHA-256(payload), DER-encoded. Ed25519: CKM_EDDSA, pure.
        """
        import pkcs11 as p11

        try:
            if self.algorithm == "ed25519":
                signature = self._key.sign(payload, mechanism=p11.Mechanism.EDDSA)  # type: ignore[attr-defined]
            else:
                digest = hashlib.sha256(payload).digest()
                raw = self._key.sign(digest, mechanism=p11.Mechanism.ECDSA)  # type: ignore[attr-defined]
                signature = crypto.ecdsa_der_signature(bytes(raw), self.algorithm)
        except p11.PKCS11Error as exc:
            raise KeyFileError(
                f"{self.uri}: the token did not sign: {type(exc).__name__}"
            ) from None
        signature = bytes(signature)
        if not self.public.verify(payload, signature):
            raise KeyFileError(
                f"{self.uri}: the token's signature does not verify with the public key object "
                "beside it; the two do not belong together"
            )
        return signature

    def close(self) -> None:
        """Log out and close the session (signing after this fails)."""
        import pkcs11 as p11

        with contextlib.suppress(p11.PKCS11Error):
            self._session.close()

    def __repr__(self) -> str:
        return f"Pkcs11Key({self.algorithm}, {self.public.key_id}, {self.uri})"


def _public_object(session: p11.Session, private: p11.Object, where: str) -> p11.Object:
    """The public key object that belongs to ``private``: the same CKA_ID, else the same label."""
    from pkcs11 import Attribute, ObjectClass

    key_id = private[Attribute.ID]
    label = private[Attribute.LABEL]
    for template in (
        {Attribute.ID: key_id} if key_id else None,
        {Attribute.LABEL: label} if label else None,
    ):
        if template is None:
            continue
        found = _find(session, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, **template})
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise KeyFileError(f"{where}: {len(found)} public key objects share its id or label")
    raise KeyFileError(
        f"{where}: the token holds no public key object with its id or label; put the public "
        "key on the token beside it"
    )


def open_key(uri: Pkcs11Uri, access: TokenAccess) -> Pkcs11Key:
    """The token key ``uri`` names, logged in and ready to sign.

    KeyFileError (a wrong PIN, no such token or key, an unsupported key) or NotFoundError (no
    module file); UsageError when the URI selects no key or the PIN cannot be had.
    """
    if uri.object is None and uri.id is None:
        raise UsageError(f"{uri} names no key: add object=LABEL or id=%XX to the URI")
    from pkcs11 import Attribute, ObjectClass

    module = module_path(uri, access)
    token = _token(_library(module), uri, module)
    session = _login(token, user_pin(uri, access, token.label), rw=False)
    try:
        where = uri.display()
        found = _find(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, **_key_template(uri)})
        if not found:
            raise KeyFileError(f"token {token.label} holds no private key that {where} names")
        if len(found) > 1:
            raise KeyFileError(
                f"{len(found)} private keys on token {token.label} match {where}: add id= to "
                "the URI"
            )
        _, public = _algorithm_of_key(_public_object(session, found[0], where), where)
        return Pkcs11Key(session, found[0], public, where)
    except BaseException:
        session.close()
        raise


def _generation_parameters(algorithm: str) -> tuple[bytes, p11.KeyType, p11.Mechanism]:
    from pkcs11 import KeyType, Mechanism

    if algorithm == "ecdsa-p256":
        return crypto.EC_PARAMS_P256, KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
    if algorithm == "ed25519":
        return crypto.EC_PARAMS_ED25519, KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
    raise UsageError(
        f"cannot generate {algorithm!r} keys; choose one of {', '.join(crypto.ALGORITHMS)}"
    )


def generate_key_pair(
    uri: Pkcs11Uri, access: TokenAccess, algorithm: str, prefix: Path
) -> tuple[Pkcs11Key, Path]:
    """A new key pair on the token, labelled ``object`` (CKA_ID: ``id``, or 16 random bytes).

    Its public key is written to PREFIX.pub (never overwritten; checked first); if that fails,
    the pair is removed from the token again. The private key is made sensitive and not
    extractable. UsageError when the token already holds an object with that label or id, or
    cannot make such keys.
    """
    if uri.object is None:
        raise UsageError(f"{uri} names no label for the new key: add object=LABEL to the URI")
    import pkcs11 as p11
    from pkcs11 import Attribute, MechanismFlag

    pub_path = crypto.public_key_path(prefix)  # refuses an existing file before any work
    params, key_type, mechanism = _generation_parameters(algorithm)
    module = module_path(uri, access)
    token = _token(_library(module), uri, module)
    sign_mechanism = p11.Mechanism.EDDSA if algorithm == "ed25519" else p11.Mechanism.ECDSA
    supported = token.slot.get_mechanisms()
    if mechanism not in supported or sign_mechanism not in supported:
        raise UsageError(
            f"token {token.label} cannot make {algorithm} keys (it lacks {mechanism.name} or "
            f"{sign_mechanism.name}); choose another --type"
        )
    key_id = uri.id if uri.id is not None else secrets.token_bytes(16)
    session = _login(token, user_pin(uri, access, token.label), rw=True)
    try:
        for template, what in (
            ({Attribute.LABEL: uri.object}, "label"),
            ({Attribute.ID: key_id}, "id"),
        ):
            if _find(session, dict(template)):
                raise UsageError(
                    f"token {token.label} already holds an object with that {what}; refusing to "
                    "make a second key under it"
                )
        try:
            domain = session.create_domain_parameters(
                key_type, {Attribute.EC_PARAMS: params}, local=True
            )
            public_object, private_object = domain.generate_keypair(
                id=key_id,
                label=uri.object,
                store=True,
                mechanism=mechanism,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
        except p11.PKCS11Error as exc:
            raise KeyFileError(
                f"token {token.label} did not make the key pair: {type(exc).__name__}"
            ) from None
        where = Pkcs11Uri(token=token.label, object=uri.object, id=key_id).display()
        try:
            _, public = _algorithm_of_key(public_object, where)
            key = Pkcs11Key(session, private_object, public, where)
            key.sign(b"a key pair made on the token signs and verifies")
            crypto.write_public_key(pub_path, public)
        except BaseException:
            _destroy(public_object, private_object)
            raise
        return key, pub_path
    except BaseException:
        session.close()
        raise


def _destroy(*objects: p11.Object) -> None:
    """Remove objects just made on a token (a key pair that cannot be used or written)."""
    import pkcs11 as p11

    for obj in objects:
        with contextlib.suppress(p11.PKCS11Error):
            obj.destroy()
