"""Start real ``docker-registry`` (CNCF distribution 2.8) processes on loopback.

Three flavours:

``plain``
    HTTP on ``127.0.0.1:PORT``, no auth.
``tls``
    HTTPS with a throw-away CA (see :mod:`tests.harness.certs`) and htpasswd
    basic auth (bcrypt, as distribution requires).
``token``
    HTTP on loopback with ``auth.token`` pointing at an in-process
    :class:`~tests.harness.tokenserver.TokenServer`.

Usage::

    reg = start_registry("tls", tmp_path)
    try:
        ...  # reg.url, reg.ca_path, reg.username, reg.password, reg.skopeo_args(dest=True)
    finally:
        reg.stop()

or ``with registry("token", tmp_path) as reg: ...``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bcrypt

from .certs import generate_server_certs, generate_token_signing_cert
from .tokenserver import TokenServer

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "REGISTRY_BINARY",
    "RegistryKind",
    "RegistryServer",
    "RegistryStartError",
    "find_registry_binary",
    "free_port",
    "registry",
    "start_registry",
]

RegistryKind = Literal["plain", "tls", "token"]
KINDS: tuple[str, ...] = ("plain", "tls", "token")

REGISTRY_BINARY = "docker-registry"
DEFAULT_USERNAME = "tester"
DEFAULT_PASSWORD = "s3cret-pass"
TOKEN_SERVICE = "test-registry"
TOKEN_ISSUER = "test-token-issuer"


# Processes started by this module and not yet stopped; reaped at interpreter exit
# so an aborted test run does not leave registries behind.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _reap_leftovers() -> None:
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    _LIVE.clear()


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message holds its log tail."""


def find_registry_binary() -> str | None:
    """Path of ``docker-registry`` (or ``$BUNDLER_TEST_REGISTRY_BIN``), or ``None``."""
    override = os.environ.get("BUNDLER_TEST_REGISTRY_BIN")
    if override:
        return override if Path(override).is_file() else shutil.which(override)
    return shutil.which(REGISTRY_BINARY)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RegistryServer:
    """A running registry process and everything a client needs to reach it."""

    kind: str
    host: str  # "127.0.0.1:PORT"
    url: str  # "http(s)://127.0.0.1:PORT"
    ca_path: Path | None  # CA bundle (PEM) for tls, else None
    username: str | None
    password: str | None
    token_server: TokenServer | None
    process: subprocess.Popen[bytes] | None
    log_path: Path
    workdir: Path = field(default_factory=Path)
    config_path: Path = field(default_factory=Path)
    storage_dir: Path = field(default_factory=Path)
    cert_dir: Path | None = None  # dir holding only ca.crt (skopeo --cert-dir)

    # ------------------------------------------------------------- helpers
    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def insecure(self) -> bool:
        """True when the registry speaks plain HTTP."""
        return self.scheme == "http"

    @property
    def verify(self) -> str | bool:
        """Value for ``requests``' ``verify=``: the CA path for tls, else True."""
        return str(self.ca_path) if self.ca_path else True

    @property
    def creds(self) -> str | None:
        """``user:password`` or None."""
        if self.username is None or self.password is None:
            return None
        return f"{self.username}:{self.password}"

    def ref(self, name: str) -> str:
        """``127.0.0.1:PORT/<name>`` (name may carry ``:tag`` or ``@digest``)."""
        return f"{self.host}/{name}"

    def docker_ref(self, name: str) -> str:
        """skopeo/containers-image transport reference ``docker://HOST/<name>``."""
        return f"docker://{self.ref(name)}"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def basic_auth_header(self) -> dict[str, str]:
        """``{"Authorization": "Basic ..."}`` for kinds with a user, else ``{}``."""
        if self.creds is None:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.creds.encode()).decode()}

    def auth_headers(
        self, scopes: list[str] | None = None, *, anonymous: bool = False
    ) -> dict[str, str]:
        """Headers that authorize a raw HTTP request to this registry.

        ``tls``: Basic credentials.  ``token``: a bearer token freshly issued by the
        token server for *scopes* (e.g. ``["repository:demo/web:pull,push"]``);
        goes through the HTTP endpoint, so it is recorded like any client request.
        ``plain``: ``{}``.
        """
        if self.kind == "tls":
            return {} if anonymous else self.basic_auth_header()
        if self.kind == "token":
            assert self.token_server is not None
            query = [("service", self.token_server.service)]
            query += [("scope", s) for s in scopes or []]
            url = self.token_server.realm + "?" + urllib.parse.urlencode(query)
            req = urllib.request.Request(url)
            if not anonymous:
                for k, v in self.basic_auth_header().items():
                    req.add_header(k, v)
            with urllib.request.urlopen(req, timeout=10) as resp:
                token = json.load(resp)["token"]
            return {"Authorization": f"Bearer {token}"}
        return {}

    def docker_config(self, directory: Path | str) -> Path:
        """Write ``<directory>/config.json`` with ``auths`` for this host; return its path.

        Point ``DOCKER_CONFIG`` at *directory* (or pass the file to
        ``--authfile``).  For ``plain`` the ``auths`` map is empty.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        auths: dict[str, dict[str, str]] = {}
        if self.creds is not None:
            auths[self.host] = {"auth": base64.b64encode(self.creds.encode()).decode()}
        path = d / "config.json"
        path.write_text(json.dumps({"auths": auths}, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def skopeo_args(
        self, dest: bool = False, *, src: bool = False, anonymous: bool = False
    ) -> list[str]:
        """skopeo flags to talk to this registry.

        ``dest=True`` -> ``--dest-*`` (copy target), ``src=True`` -> ``--src-*``
        (copy source), neither -> unprefixed (``inspect``, ``list-tags``, ``delete``).
        ``anonymous=True`` leaves out ``--creds``.
        """
        if dest and src:
            raise ValueError("dest and src are mutually exclusive")
        p = "--dest-" if dest else "--src-" if src else "--"
        args: list[str] = []
        if self.kind == "tls":
            assert self.cert_dir is not None
            args += [f"{p}cert-dir", str(self.cert_dir)]
        else:
            args.append(f"{p}tls-verify=false")
        if self.creds is not None and not anonymous:
            args += [f"{p}creds", self.creds]
        return args

    # ------------------------------------------------------------ lifecycle
    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the registry (kill after *timeout*) and the token server."""
        proc, self.process = self.process, None
        if proc is not None:
            _LIVE.pop(proc.pid, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        elif proc is not None:
            proc.wait()
        ts, self.token_server = self.token_server, None
        if ts is not None:
            ts.stop()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- config
def _config_yaml(
    *,
    port: int,
    storage: Path,
    tls: tuple[Path, Path] | None = None,
    htpasswd: Path | None = None,
    token: TokenServer | None = None,
    token_bundle: Path | None = None,
) -> str:
    # JSON is valid YAML; this avoids depending on PyYAML here.
    cfg: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": "loopback-test-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    http = cfg["http"]
    assert isinstance(http, dict)
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if htpasswd is not None:
        cfg["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
    if token is not None:
        assert token_bundle is not None
        cfg["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token_bundle),
            }
        }
    return json.dumps(cfg, indent=2) + "\n"


def _write_htpasswd(path: Path, username: str, password: str) -> None:
    # Distribution only understands bcrypt entries. Cost 4 (the minimum) keeps
    # each authenticated request cheap; the registry re-checks on every request.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{hashed}\n")
    path.chmod(0o600)


def _clean_env() -> dict[str, str]:
    # REGISTRY_* variables override the config file in distribution; drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.pop("OTEL_TRACES_EXPORTER", None)
    return env


def _probe(url: str, ca_path: Path | None, timeout: float = 1.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_path)) if ca_path else None
    try:
        with urllib.request.urlopen(url + "/v2/", timeout=timeout, context=ctx) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as e:
        return e.code in (200, 401)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, ca_path: Path | None, log_path: Path, deadline_s: float
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RegistryStartError(
                f"docker-registry exited with code {proc.returncode} before answering "
                f"{url}/v2/; log tail ({log_path}):\n{_tail(log_path)}"
            )
        if _probe(url, ca_path):
            return
        time.sleep(0.05)
    raise RegistryStartError(
        f"docker-registry did not answer {url}/v2/ within {deadline_s:.0f}s; "
        f"log tail ({log_path}):\n{_tail(log_path)}"
    )


# ----------------------------------------------------------------------- start
def start_registry(
    kind: str,
    workdir: Path | str,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    binary: str | None = None,
    startup_timeout: float = 10.0,
    attempts: int = 3,
) -> RegistryServer:
    """Write a config under *workdir*, start ``docker-registry serve``, wait for ``/v2/``.

    *workdir* gets ``config.yml``, ``registry.log``, ``storage/`` and, depending on
    *kind*, ``certs/`` (CA + server cert), ``cadir/ca.crt``, ``htpasswd`` or
    ``token/`` (signing cert).  Raises :class:`RegistryStartError` (with the
    log tail) if the registry does not answer within *startup_timeout* seconds;
    retries on a fresh port up to *attempts* times if the process dies early
    (e.g. a port race).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
    exe = binary or find_registry_binary()
    if exe is None:
        raise FileNotFoundError(f"{REGISTRY_BINARY} not found on PATH")

    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    storage = wd / "storage"
    storage.mkdir(exist_ok=True)

    ca_path: Path | None = None
    cert_dir: Path | None = None
    tls: tuple[Path, Path] | None = None
    htpasswd: Path | None = None
    token: TokenServer | None = None
    token_bundle: Path | None = None
    user: str | None = None
    pw: str | None = None

    if kind == "tls":
        certs = generate_server_certs(wd / "certs")
        ca_path = certs.ca_cert
        cert_dir = wd / "cadir"  # skopeo: only *.crt CAs may live in --cert-dir
        cert_dir.mkdir(exist_ok=True)
        shutil.copyfile(certs.ca_cert, cert_dir / "ca.crt")
        tls = (certs.server_cert, certs.server_key)
        htpasswd = wd / "htpasswd"
        _write_htpasswd(htpasswd, username, password)
        user, pw = username, password
    elif kind == "token":
        signing = generate_token_signing_cert(wd / "token")
        token_bundle = signing.cert
        token = TokenServer(
            signing.cert,
            signing.key,
            users={username: password},
            service=TOKEN_SERVICE,
            issuer=TOKEN_ISSUER,
        ).start()
        user, pw = username, password

    scheme = "https" if kind == "tls" else "http"
    log_path = wd / "registry.log"
    config_path = wd / "config.yml"
    last_error: Exception | None = None
    try:
        for _ in range(max(1, attempts)):
            port = free_port()
            config_path.write_text(
                _config_yaml(
                    port=port,
                    storage=storage,
                    tls=tls,
                    htpasswd=htpasswd,
                    token=token,
                    token_bundle=token_bundle,
                )
            )
            url = f"{scheme}://127.0.0.1:{port}"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [exe, "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=wd,
                    env=_clean_env(),
                    start_new_session=True,  # keep Ctrl-C of pytest from racing teardown
                )
            _LIVE[proc.pid] = proc
            server = RegistryServer(
                kind=kind,
                host=f"127.0.0.1:{port}",
                url=url,
                ca_path=ca_path,
                username=user,
                password=pw,
                token_server=token,
                process=proc,
                log_path=log_path,
                workdir=wd,
                config_path=config_path,
                storage_dir=storage,
                cert_dir=cert_dir,
            )
            try:
                _wait_ready(proc, url, ca_path, log_path, startup_timeout)
            except RegistryStartError as e:
                last_error = e
                server.token_server = None  # keep the token server for the retry
                server.stop()
                if proc.returncode is not None and "address already in use" in _tail(log_path):
                    continue
                raise
            return server
        assert last_error is not None
        raise last_error
    except BaseException:
        if token is not None:
            token.stop()
        raise


@contextlib.contextmanager
def registry(kind: str, workdir: Path | str, **kwargs: object) -> Iterator[RegistryServer]:
    """Context-manager form of :func:`start_registry`; stops the registry on exit."""
    server = start_registry(kind, workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
