"""Registry credentials from Docker's ``config.json`` and its credential helpers.

Looked up in the order Docker uses: ``credHelpers[host]``, then ``credsStore``, then ``auths``.
``DOCKER_CONFIG`` names the directory holding ``config.json`` (default ``~/.docker``).
Written by ``bundler login``: through the configured helper if there is one, else base64 in
``auths``, always with file mode 0600 and an atomic replace.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import AuthError, UsageError

HELPER_TIMEOUT_S = 30
# Docker Hub's historical key in config.json.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True)
class Credential:
    """A username and password (or identity token); ``repr`` never shows the password."""

    username: str
    password: str

    @property
    def is_identity_token(self) -> bool:
        """True when ``password`` is an OAuth2 refresh (identity) token: helpers say ``<token>``."""
        # Helpers return the username "<token>" for OAuth2 refresh (identity) tokens.
        return self.username == "<token>"

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(username={self.username!r}, password=***)"


def default_config_dir() -> Path:
    """``$DOCKER_CONFIG`` when set, else ``~/.docker``: where ``config.json`` lives."""
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".docker"


def _normalise_host(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    key = key.split("/", 1)[0]
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


class CredentialStore:
    """Reads and writes one Docker ``config.json``."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self.config_dir = config_dir or default_config_dir()
        self.path = self.config_dir / "config.json"

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise AuthError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise AuthError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise AuthError(f"{self.path} is not a JSON object")
        return doc

    def _helper_for(self, doc: dict[str, Any], host: str) -> str | None:
        helpers = doc.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _normalise_host(key) == host and isinstance(helper, str):
                    return helper
        store = doc.get("credsStore")
        return store if isinstance(store, str) and store else None

    def get(self, host: str) -> Credential | None:
        """The credential for ``host``: its credential helper first, then ``auths`` in config.json.

        None when neither has one. AuthError for an ``auth`` entry that is not base64
        ``user:password``.
        """
        host = _normalise_host(host)
        doc = self._load()
        helper = self._helper_for(doc, host)
        if helper:
            found = _helper_get(helper, host)
            if found is not None:
                return found
        return self._from_auths(doc, host)

    def _from_auths(self, doc: dict[str, Any], host: str) -> Credential | None:
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict):
            return None
        for key, entry in auths.items():
            if _normalise_host(key) != host or not isinstance(entry, dict):
                continue
            if entry.get("identitytoken"):
                return Credential("<token>", str(entry["identitytoken"]))
            if entry.get("auth"):
                try:
                    decoded = base64.b64decode(entry["auth"], validate=True).decode()
                except (ValueError, UnicodeDecodeError, TypeError):
                    raise AuthError(
                        f"{self.path}: the 'auth' entry for {key} is not base64 user:password"
                    ) from None
                user, sep, password = decoded.partition(":")
                if not sep:
                    raise AuthError(f"{self.path}: the 'auth' entry for {key} has no ':'")
                return Credential(user, password)
            if entry.get("username") and entry.get("password"):
                return Credential(str(entry["username"]), str(entry["password"]))
        return None

    def store(self, host: str, credential: Credential) -> None:
        """Save ``credential`` for ``host`` in its helper, else as a base64 ``auth`` entry.

        Any other ``auths`` entry for the same host (another spelling of it) is replaced.
        """
        host = _normalise_host(host)
        doc = self._load()
        helper = self._helper_for(doc, host)
        if helper:
            payload = json.dumps(
                {"ServerURL": host, "Username": credential.username, "Secret": credential.password}
            )
            _run_helper(helper, "store", payload, secrets=(credential.password,))
            return
        auths = doc.setdefault("auths", {})
        if not isinstance(auths, dict):
            raise AuthError(f"{self.path}: 'auths' is not an object")
        token = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
        for key in [k for k in auths if _normalise_host(k) == host]:
            del auths[key]
        auths[host] = {"auth": token}
        self._save(doc)

    def erase(self, host: str) -> bool:
        """Remove every credential for ``host`` (helper and ``auths``); True if there was one."""
        host = _normalise_host(host)
        doc = self._load()
        removed = False
        helper = self._helper_for(doc, host)
        if helper:
            with contextlib.suppress(AuthError):
                _run_helper(helper, "erase", host)
                removed = True
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict):
            raise AuthError(f"{self.path}: 'auths' is not an object")
        for key in [k for k in auths if _normalise_host(k) == host]:
            del auths[key]
            removed = True
        if removed:
            self._save(doc)
        return removed

    def _save(self, doc: dict[str, Any]) -> None:
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".config.json-", dir=self.config_dir)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as out:
                    json.dump(doc, out, indent="\t")
                    out.write("\n")
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise AuthError(f"cannot write {self.path}: {exc.strerror}") from None


def _redact(message: str, stdin: str, secrets: tuple[str, ...]) -> str:
    """A helper's first line of output with nothing of what we sent it (nor any secret) in it.

    Helpers echo their input when they fail ("invalid input: {...Secret...}"): the line is
    withheld when it holds the JSON we sent with a secret (``store``) or names a ``Secret``;
    any secret left is starred. A ``get`` or ``erase`` sends only the host name.
    """
    if (secrets and stdin in message) or '"Secret"' in message or "Secret:" in message:
        return "(its message repeated what it was sent and is withheld)"
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _run_helper(helper: str, action: str, stdin: str, secrets: tuple[str, ...] = ()) -> str:
    if not helper.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"credential helper name {helper!r} is not a plain program name")
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, action],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer in time") from None
    if proc.returncode != 0:
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        first = _redact(lines[0], stdin, secrets)[:200] if lines else "no output"
        raise AuthError(f"{program} {action} failed: {first}")
    return proc.stdout


def _helper_get(helper: str, host: str) -> Credential | None:
    try:
        out = _run_helper(helper, "get", host)
    except AuthError as exc:
        if "credentials not found" in str(exc).lower():
            return None
        raise
    try:
        doc = json.loads(out)
        return Credential(str(doc["Username"]), str(doc["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"docker-credential-{helper} returned malformed JSON") from None
