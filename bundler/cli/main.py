"""Entry point and the one error boundary: exception families become exit codes."""

from __future__ import annotations

import os
import signal
import sys
from enum import StrEnum
from types import FrameType
from typing import Annotated, ClassVar, NoReturn

import typer
from typer._click.exceptions import ClickException  # Typer's own copy of click

from bundler import __version__
from bundler.cli.common import Ui, begin, command, current_ui, emit_json
from bundler.cli.lazy import LazyCommand, LazyGroup
from bundler.errors import (
    AuthError,
    BundlerError,
    ChartError,
    ConfigError,
    DigestMismatchError,
    IncompleteError,
    IntegrityError,
    KeyFileError,
    ManifestError,
    NotFoundError,
    RelocationError,
    RollbackError,
    SizeMismatchError,
    TransportError,
    UnsafeArchiveError,
    UsageError,
    VerificationError,
)

# Exit codes are part of the interface: scripts branch on them. Most specific first.
EXIT_CODES: list[tuple[type[BaseException], int, str]] = [
    (VerificationError, 12, "verification failed"),
    (ConfigError, 10, "invalid config"),
    (UsageError, 2, "usage"),
    (NotFoundError, 3, "not found"),
    (AuthError, 4, "authentication"),
    (TransportError, 5, "transport"),
    (DigestMismatchError, 6, "integrity"),
    (SizeMismatchError, 6, "integrity"),
    (ManifestError, 7, "invalid content"),
    (UnsafeArchiveError, 8, "unsafe archive"),
    (IntegrityError, 6, "integrity"),
    (ChartError, 9, "invalid chart"),
    (IncompleteError, 11, "incomplete bundle"),
    (KeyFileError, 13, "key"),
    (RollbackError, 14, "rollback"),
    (RelocationError, 15, "relocation"),
]


# Commands are listed in the order of the flow, not alphabetically; anything new goes last.
class Commands(LazyGroup):
    """bundler's commands, in the order ``--help`` lists them: the order of the flow.

    Each command's module is imported only when that command runs (or shows its own help); the
    summaries are the first paragraphs of the commands' help texts, kept equal to them by
    ``tests/unit/test_cli_startup.py``.
    """

    listing: ClassVar[tuple[LazyCommand | str, ...]] = (
        LazyCommand(
            "pack",
            "bundler.cli.pack",
            "Pack a Helm chart and every image it runs into one OCI bundle.",
        ),
        LazyCommand(
            "images",
            "bundler.cli.images",
            "List the images a chart runs, one per line, ready to paste.",
        ),
        LazyCommand(
            "sign",
            "bundler.cli.trust",
            "Sign a bundle with a cosign-compatible simple-signing signature.",
        ),
        LazyCommand(
            "approve",
            "bundler.cli.trust",
            "Verify a bundle against the policy, then add this approver's signature.",
        ),
        LazyCommand("verify", "bundler.cli.trust", "Verify a bundle offline."),
        LazyCommand(
            "export",
            "bundler.cli.transfer",
            "Write a bundle with its signatures to an archive for removable media.",
        ),
        LazyCommand(
            "import",
            "bundler.cli.transfer",
            "Verify a bundle against the trust policy, then stream it into a registry or layout.",
        ),
        LazyCommand(
            "promote",
            "bundler.cli.promote",
            "Promote a bundle that verifies, now, under the policy; refuses rollbacks.",
        ),
        LazyCommand(
            "serve",
            "bundler.cli.serve",
            "Serve an OCI layout read-only as a registry, for sites without one.",
        ),
        LazyCommand(
            "copy",
            "bundler.cli.copy",
            "Copy an image, an index with all its children, or any OCI artifact.",
        ),
        LazyCommand(
            "tags",
            "bundler.cli.copy",
            "List a repository's tags (following the registry's pagination).",
        ),
        LazyCommand(
            "inspect",
            "bundler.cli.pack",
            "Show what a bundle (or any OCI artifact) holds: chart, images, platforms, sizes, "
            "signatures.",
        ),
        LazyCommand(
            "login",
            "bundler.cli.auth",
            "Check credentials against a registry, then store them in Docker's config.json.",
        ),
        LazyCommand("logout", "bundler.cli.auth", "Remove stored credentials for a registry."),
        LazyCommand(
            "keys",
            "bundler.cli.keys",
            "Create and inspect signing keys (cosign-compatible PEM files).",
        ),
        "version",
        "completion",
    )


FLOW = tuple(e if isinstance(e, str) else e.name for e in Commands.listing)
PROG = "bundler"
COMPLETE_VAR = "_BUNDLER_COMPLETE"


app = typer.Typer(
    name="bundler",
    cls=Commands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could print secrets
    rich_markup_mode=None,  # help texts are plain: "os/arch[/variant]" is not markup
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_command(*, ui: Ui) -> None:
    """Print bundler's version."""
    if ui.json:
        emit_json({"version": __version__})
        return
    typer.echo(__version__)


command(app, "version")(version_command)


class Shell(StrEnum):
    """The shells ``bundler completion`` writes a script for."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_command(
    *,
    shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
    ui: Ui,
) -> None:
    """Print the shell completion script for SHELL.

    Load it in the shell's start-up file, e.g. `eval "$(bundler completion bash)"` in ~/.bashrc,
    or save it where the shell looks: ~/.local/share/bash-completion/completions/bundler,
    ~/.zfunc/_bundler (zsh, with fpath+=~/.zfunc), ~/.config/fish/completions/bundler.fish.
    """
    script = _completion_script(shell.value)
    if ui.json:
        emit_json({"shell": shell.value, "script": script})
        return
    typer.echo(script)


def _completion_script(shell: str) -> str:
    from typer._click.shell_completion import get_completion_class  # Typer's copy of click
    from typer._completion_classes import completion_init

    completion_init()  # Typer's bash/zsh/fish scripts, which its completion handler answers
    completer = get_completion_class(shell)
    assert completer is not None
    return str(completer(typer.main.get_command(app), {}, PROG, COMPLETE_VAR).source())


def _completion_request() -> None:
    """Ready an answer to the shell asking for completions (``_BUNDLER_COMPLETE`` is set).

    Both spellings of the request work: click's (``bash_source``) and Typer's (``source_bash``).
    """
    request = os.environ.get(COMPLETE_VAR)
    if not request:
        return
    from typer._completion_classes import completion_init

    completion_init()
    first, _, second = request.partition("_")
    if first in Shell.__members__ and second in ("source", "complete"):
        os.environ[COMPLETE_VAR] = f"{second}_{first}"


command(app, "completion")(completion_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(
        False,
        "--version",
        help="Print bundler's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Pack, carry, verify and promote Helm charts with every image they run, as one artifact."""


def exit_code_for(error: BaseException) -> int:
    """The exit code of the first family in ``EXIT_CODES`` that ``error`` belongs to, else 1."""
    for family, code, _ in EXIT_CODES:
        if isinstance(error, family):
            return code
    return 1


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM, raised in the main thread by :func:`run`'s handler.

    A ``BaseException`` other than ``KeyboardInterrupt``, so it unwinds through the services'
    clean-up (every ``finally`` and ``except BaseException`` runs: transfers in flight end,
    partial files are removed, no name is written) and past Typer, which would otherwise turn a
    ``KeyboardInterrupt`` into a silent exit.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as shells report a command ended by that signal."""
        return 128 + self.signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Say at once that the signal was seen: the clean-up may wait for transfers in flight. A
    # second signal of the same kind ends the process at once, without clean-up.
    signal.signal(signum, signal.SIG_DFL)
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    sys.stderr.write(f"{what}: stopping; nothing half-written is kept (again to quit at once)\n")
    sys.stderr.flush()
    raise Interrupted(signum)


def _json_requested(argv: list[str]) -> bool:
    """Whether ``argv`` asks for ``-o json``: for failures before the options are parsed."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("-o", "--output") and argv[i + 1 : i + 2] == ["json"]:
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


def _fail(message: str, code: int, show: bool = True) -> NoReturn:
    """Leave with ``code``: the one line on stderr, and with ``-o json`` the error on stdout.

    The JSON document is ``{"error": ..., "exitCode": ...}`` plus the command's result fields
    known when it failed (``Ui.known``), so a program reading stdout always gets one document.
    """
    ui = current_ui()
    wants_json = ui.json if ui is not None else _json_requested(sys.argv[1:])
    if show or wants_json:  # imported only here: a bare `bundler` (help, exit 2) needs none
        from bundler.model.text import printable

        if show:
            typer.echo(f"error: {printable(message)}", err=True)  # names in it came from outside
        if wants_json:
            known = ui.known if ui is not None else {}
            emit_json({**known, "error": printable(message), "exitCode": code})
    sys.exit(code)


def run() -> None:
    """Run the CLI.

    Typer's usage errors (exit 2), bundler's own errors and bugs all arrive here and leave as
    one line on stderr with their family's exit code (and, with ``-o json``, a JSON error
    document on stdout). SIGINT and SIGTERM stop the command cleanly: exit 130 or 143.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup and background jobs
            signal.signal(signum, _on_signal)
    begin(None)
    _completion_request()
    try:
        code = app(prog_name=PROG, complete_var=COMPLETE_VAR, standalone_mode=False)
    except ClickException as error:  # the command line does not parse: Typer says why
        error.show()
        _fail(error.format_message().splitlines()[0], error.exit_code, show=False)
    except typer.Abort:  # end of input at a prompt
        _fail("aborted: no answer at the prompt", 1)
    except BundlerError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        _fail(message, exit_code_for(error))
    except Interrupted as stop:  # the handler said so on stderr already
        what = "interrupted" if stop.signum == signal.SIGINT else "terminated"
        _fail(what, stop.exit_code, show=False)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as error:  # a bug: say so in one line, without locals
        from bundler.model.text import printable

        typer.echo(f"internal error: {type(error).__name__}: {printable(error)}", err=True)
        _fail(f"internal error: {type(error).__name__}", 1, show=False)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
