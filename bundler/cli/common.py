"""What every command shares: option groups declared once, the key reader, output helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bundler.errors import KeyFileError, NotFoundError, UsageError

if TYPE_CHECKING:
    # Imported where they are used, so that loading the CLI (``--help``, ``version``) loads no
    # adapter or model module.
    import logging

    from rich.console import Console

    from bundler.adapters.crypto import PrivateKey, PublicKey, SigningKey
    from bundler.adapters.pkcs11 import TokenAccess
    from bundler.adapters.registry.options import RegistryOptions
    from bundler.model.plan import TransferPlan
    from bundler.services.copy import Progress as CopyProgress


class OutputFormat(StrEnum):
    """``--output``: ``text`` for people (stderr progress, a summary), ``json`` for programs."""

    text = "text"
    json = "json"


ValuesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--values",
        "-f",
        metavar="FILE",
        help="Values file for rendering, relative to here (repeatable).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="PATH=VALUE",
        help="A value for rendering, as Helm's --set PATH=VALUE (repeatable).",
    ),
]
SetStringOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set-string", metavar="PATH=VALUE", help="As Helm's --set-string PATH=VALUE (repeatable)."
    ),
]
SetFileOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set-file", metavar="PATH=FILE", help="As Helm's --set-file PATH=FILE (repeatable)."
    ),
]
KubeVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--kube-version", metavar="VERSION", help="Kubernetes version to render for (as Helm's)."
    ),
]
ApiVersionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-versions",
        metavar="GROUP/VERSION",
        help="API version the chart may test for, as Helm's (repeatable).",
    ),
]
SkipTestsOpt = Annotated[
    bool,
    typer.Option(
        "--skip-tests", help="Render without templates/tests (as Helm's), so their images stay out."
    ),
]
IncludeDisabledOpt = Annotated[
    bool,
    typer.Option(
        "--include-disabled",
        help="Also take images that values name for components the render leaves off.",
    ),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=32, metavar="N", help="Blobs transferred at once.")
]


ChunkOpt = Annotated[
    int,
    typer.Option(
        "--chunk-size",
        min=0,
        max=4096,
        metavar="MiB",
        help="Upload blobs larger than this in chunks of this many MiB "
        "(0: one streamed request per blob).",
    ),
]


ConfigDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry-config",
        metavar="DIR",
        help="Directory of the Docker config.json holding "
        "credentials (default: $DOCKER_CONFIG or ~/.docker).",
    ),
]


# Option groups. A command parameter annotated with one of these classes stands for all of the
# group's options (see :func:`command`): each option is declared once, here, and every command
# that talks to registries or opens a key offers the same names with the same help.


@dataclass(frozen=True)
class RegistryFlags:
    """How to reach registries: ``--plain-http``, ``--ca-file``, TLS checks, credentials."""

    plain_http: Annotated[
        bool,
        typer.Option(
            "--plain-http",
            help="Talk plain HTTP to registries (loopback falls back "
            "to HTTP by itself when the server there does not speak TLS).",
        ),
    ] = False
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file", metavar="FILE", help="PEM bundle of CAs to trust for registry TLS."
        ),
    ] = None
    insecure: Annotated[
        bool,
        typer.Option("--insecure-skip-tls-verify", help="Do not verify registry certificates."),
    ] = False
    config_dir: ConfigDirOpt = None

    def options(self, parallel: int = 4, chunk_mib: int = 0) -> RegistryOptions:
        """RegistryOptions of these flags; NotFoundError or UsageError for a bad ``--ca-file``.

        ``chunk_mib`` 0 means one streamed upload per blob; credentials come from the config.
        """
        if self.ca_file is not None:
            import ssl

            if not self.ca_file.is_file():
                raise NotFoundError(f"CA file {self.ca_file} does not exist (--ca-file)")
            try:
                ssl.create_default_context(cafile=str(self.ca_file))
            except (ssl.SSLError, OSError, ValueError):
                raise UsageError(
                    f"CA file {self.ca_file} holds no PEM certificate "
                    "(expected '-----BEGIN CERTIFICATE-----')"
                ) from None
        from bundler.adapters.registry.credentials import CredentialStore
        from bundler.adapters.registry.options import RegistryOptions

        return RegistryOptions(
            ca_bundle=self.ca_file,
            plain_http=self.plain_http,
            insecure_skip_tls_verify=self.insecure,
            credential_store=CredentialStore(self.config_dir),
            parallel=parallel,
            chunk_size=chunk_mib * 1024 * 1024 or None,
        )


@dataclass(frozen=True)
class PassphraseFlags:
    """Where a key's passphrase comes from: a file, a variable, ``COSIGN_PASSWORD``, a prompt."""

    file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            metavar="FILE",
            help="Read the key's passphrase from the first line of FILE.",
        ),
    ] = None
    env: Annotated[
        str | None,
        typer.Option(
            "--passphrase-env",
            metavar="VAR",
            help="Read the key's passphrase from environment variable VAR.",
        ),
    ] = None

    def read(self, key: Path, *, new: bool = False) -> bytes:
        """The passphrase of ``key`` (for a key being made when ``new``: asked twice).

        Without ``--passphrase-file``/``--passphrase-env``, ``COSIGN_PASSWORD`` as cosign reads
        it, else a prompt on the terminal (never on stdout, which may carry JSON); with no
        terminal either, a UsageError naming the ways to give it. A passphrase file that is not
        there is a NotFoundError, one that cannot be read a KeyFileError.
        """
        from bundler.adapters.crypto import read_passphrase

        env = self.env
        if self.file is None and env is None and COSIGN_PASSWORD in os.environ:
            env = COSIGN_PASSWORD
        prompt = None
        if self.file is None and env is None:
            if not sys.stdin.isatty():
                raise UsageError(
                    f"the passphrase of {key} cannot be asked for (no terminal): pass "
                    f"--passphrase-file FILE or --passphrase-env VAR, or set {COSIGN_PASSWORD}"
                )

            def prompt() -> str:
                import getpass

                first = getpass.getpass(f"Passphrase for {key}: ")
                if new and getpass.getpass("Repeat it: ") != first:
                    raise UsageError("the two passphrases differ; nothing was written")
                return first

        return read_passphrase(file=self.file, env=env, prompt=prompt)


COSIGN_PASSWORD = "COSIGN_PASSWORD"  # noqa: S105 - the name of cosign's variable, not a secret


def read_key(path: Path) -> bytes:
    """The bytes of the key file ``path`` (private or public), read with a bound.

    The one reader every command uses, so a key file gives the same exit code everywhere:
    NotFoundError if nothing is there, KeyFileError if it cannot be read or is not a file.
    """
    from bundler.adapters.crypto import read_key_file

    try:
        return read_key_file(path)  # a regular file, read with a bound
    except FileNotFoundError:
        raise NotFoundError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def private_key(path: Path, passphrase: PassphraseFlags) -> PrivateKey:
    """The decrypted cosign private key of ``path``; KeyFileError if the passphrase fails."""
    from bundler.adapters.crypto import decrypt_private_key

    pem = read_key(path)
    return decrypt_private_key(pem, passphrase.read(path), str(path))


@dataclass
class TokenFlags:
    """How a ``pkcs11:`` key is reached: the module, and where its PIN comes from."""

    pin_file: Annotated[
        Path | None,
        typer.Option("--pin-file", metavar="FILE", help="A pkcs11: key's PIN, from FILE."),
    ] = None
    pin_env: Annotated[
        str | None,
        typer.Option("--pin-env", metavar="VAR", help="A pkcs11: key's PIN, from variable VAR."),
    ] = None
    module: Annotated[
        str | None,
        typer.Option(
            "--pkcs11-module",
            metavar="FILE",
            help="PKCS#11 module for pkcs11: keys (default: $COSIGN_PKCS11_MODULE_PATH).",
        ),
    ] = None

    def access(self) -> TokenAccess:
        """The token access these flags give (a PIN prompt only where there is a terminal)."""
        from bundler.adapters.pkcs11 import TokenAccess

        def ask(text: str) -> str:  # on the terminal, never on stdout (it may carry JSON)
            import getpass

            return getpass.getpass(text)

        return TokenAccess(
            module=self.module,
            pin_file=self.pin_file,
            pin_env=self.pin_env,
            prompt=ask if sys.stdin.isatty() else None,
        )

    def given(self) -> bool:
        """Whether any token option was given."""
        return (self.pin_file, self.pin_env, self.module) != (None, None, None)


def signing_key(key: str, passphrase: PassphraseFlags, token: TokenFlags) -> SigningKey:
    """The signing key of ``--key``: a cosign key file, or a ``pkcs11:`` URI of a token key.

    Options of the other kind are refused (a PIN is never taken for a passphrase); key files
    are read as every command reads them (missing: exit 3; unreadable or wrong passphrase: 13).
    """
    from bundler.adapters.pkcs11 import is_pkcs11_uri, open_key, parse_uri

    if is_pkcs11_uri(key):
        if passphrase.file is not None or passphrase.env is not None:
            raise UsageError(
                "--passphrase-file/--passphrase-env open key files; a pkcs11: key takes "
                "--pin-file or --pin-env"
            )
        return open_key(parse_uri(key), token.access())
    if token.given():
        raise UsageError(
            f"--pkcs11-module/--pin-file/--pin-env are for pkcs11: keys; {key} is a key file "
            "(it takes --passphrase-file or --passphrase-env)"
        )
    return private_key(Path(key), passphrase)


def public_key(path: Path) -> PublicKey:
    """The public key (PEM) of ``path``; KeyFileError if it is not one."""
    from bundler.adapters.crypto import load_public_key

    return load_public_key(read_key(path), str(path))


@dataclass
class Ui:
    """How a command speaks: ``-o/--output``, ``-q/--quiet``, ``-v/--verbose``, ``--debug``.

    Every command has these. Results go to stdout (as JSON with ``-o json``), diagnostics and
    progress to stderr. ``known`` collects result fields known before a failure, which the
    error boundary adds to the JSON error document.
    """

    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Result format on stdout.")
    ] = OutputFormat.text
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress and no summary on stderr: warnings and errors only."
        ),
    ] = False
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Say more on stderr (twice: as --debug).",
        ),
    ] = 0
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Log every registry request (method, URL without its query, status) on "
            "stderr; never a credential.",
        ),
    ] = False
    known: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def json(self) -> bool:
        """``-o json``: stdout carries one JSON document and nothing else."""
        return self.output is OutputFormat.json

    @property
    def chatty(self) -> bool:
        """Summaries and notes go to stderr: not with ``-q``."""
        return not self.quiet

    def note(self, message: str) -> None:
        """A line for people on stderr, unless ``-q``."""
        if self.chatty:
            from bundler.model.text import printable

            typer.echo(printable(message), err=True)

    def progress_console(self) -> Console | None:
        """A console on stderr to draw progress on, or None.

        None with ``-q``, with ``-o json``, or when stderr is not a terminal.
        """
        if self.quiet or self.json:
            return None
        from rich.console import Console

        console = Console(stderr=True)
        return console if console.is_terminal else None


_GROUPS: tuple[type, ...] = (RegistryFlags, PassphraseFlags, TokenFlags, Ui)
_current: Ui | None = None


def current_ui() -> Ui | None:
    """The Ui of the command running, or None before a command's options are parsed."""
    return _current


_log_handler: logging.Handler | None = None


def begin(ui: Ui | None) -> None:
    """Make ``ui`` the running command's (None: no command yet), and set up logging for it.

    ``-v`` logs bundler's INFO records on stderr, ``-vv`` or ``--debug`` DEBUG ones too (every
    registry request among them); without either, only warnings. ``logging`` is imported only
    then: every start of the program pays for what this module imports.
    """
    global _current, _log_handler
    _current = ui
    chatty = ui is not None and (ui.debug or ui.verbose > 0)
    if not chatty and _log_handler is None:
        return
    import logging

    logger = logging.getLogger("bundler")
    if _log_handler is not None:
        logger.removeHandler(_log_handler)
        _log_handler = None
    if ui is None or not chatty:
        logger.setLevel(logging.WARNING)
        return

    class PrintableFormatter(logging.Formatter):
        """Log lines as the terminal may show them: names from outside lose their escapes."""

        def format(self, record: logging.LogRecord) -> str:
            from bundler.model.text import printable

            return printable(super().format(record))

    _log_handler = logging.StreamHandler(sys.stderr)  # this run's stderr
    _log_handler.setFormatter(PrintableFormatter("%(name)s: %(message)s"))
    logger.addHandler(_log_handler)
    logger.setLevel(logging.DEBUG if ui.debug or ui.verbose >= 2 else logging.INFO)


@functools.cache
def _group_options(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """``(field, annotated type, default)`` of each option of the group ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple((f.name, hints[f.name], f.default) for f in dataclasses.fields(cls) if f.init)


def command(app: typer.Typer, name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command function on ``app`` as ``name``, its option groups expanded.

    A parameter annotated :class:`RegistryFlags`, :class:`PassphraseFlags` or :class:`Ui`
    becomes the group's options on the command line, and arrives as one object. Every command
    takes a :class:`Ui` (so every one has ``-o``, ``-q``, ``-v``, ``--debug``); one without is a
    programming error, found when the CLI is built.
    """

    def register(func: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(func, eval_str=True)
        groups: dict[str, type] = {}
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.annotation in _GROUPS:
                groups[param.name] = param.annotation
                params += [
                    inspect.Parameter(
                        f"{param.name}__{option}",
                        inspect.Parameter.KEYWORD_ONLY,
                        annotation=hint,
                        default=default,
                    )
                    for option, hint, default in _group_options(param.annotation)
                ]
            else:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        if Ui not in groups.values():
            raise TypeError(f"command {name!r} takes no Ui: every command has -o, -q and -v")

        @functools.wraps(func)
        def run(**kwargs: Any) -> None:
            for param_name, group in groups.items():
                values = {
                    option: kwargs.pop(f"{param_name}__{option}")
                    for option, _, _ in _group_options(group)
                }
                kwargs[param_name] = group(**values)
                if group is Ui:
                    begin(kwargs[param_name])
            func(**kwargs)

        del run.__wrapped__  # Typer reads the signature below, not the function's own
        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(run)
        return func

    return register


@contextlib.contextmanager
def progress_bar(ui: Ui) -> Iterator[CopyProgress | None]:
    """A progress bar on stderr for the blobs a copy moves, as the copy service's view of it.

    None (no bar) when :meth:`Ui.progress_console` says not to draw. The bar counts only bytes
    that really move: a blob already there or mounted is taken out of its total.
    """
    console = ui.progress_console()
    if console is None:
        yield None
        return
    import threading

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bundler.services.copy import Progress as CopyProgress

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[moved]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

    class BarProgress(CopyProgress):
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.done = 0
            self.total = 0
            self.task = bar.add_task("planning", total=None, moved="")

        def planned(self, plan: TransferPlan) -> None:
            self.checking(f"{len(plan.manifests)} manifests, {len(plan.blobs)} blobs", plan)

        def checking(self, what: str, plan: TransferPlan) -> None:
            with self.lock:  # a command may copy or check several times: the totals add up
                self.total += plan.blob_bytes
                self._show(what)

        def advance(self, nbytes: int) -> None:
            with self.lock:
                self.done += nbytes
                self._show()

        def not_moved(self, nbytes: int) -> None:
            with self.lock:
                self.total -= nbytes
                self._show()

        def _show(self, description: str | None = None) -> None:
            from bundler.model.text import human_bytes

            moved = f"{human_bytes(self.done)} / {human_bytes(self.total)}"
            bar.update(
                self.task,
                total=self.total,
                completed=self.done,
                description=description,
                moved=moved,
            )

    with bar:
        yield BarProgress()


def emit_json(doc: Any) -> None:
    """Write ``doc`` to stdout as indented JSON, keys in the order given, one trailing newline."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
