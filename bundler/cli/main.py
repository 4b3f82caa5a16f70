"""Entry point and the one error boundary: exception families become exit codes."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import ClassVar

import typer

from bundler import __version__
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


class Commands(LazyGroup):
    """bundler's commands, in the order ``--help`` lists them.

    Each command's module is imported only when that command runs (or shows its own help); the
    summaries are the first paragraphs of the commands' help texts, kept equal to them by
    ``tests/unit/test_cli_startup.py``.
    """

    listing: ClassVar[tuple[LazyCommand | str, ...]] = (
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
            "pack",
            "bundler.cli.pack",
            "Pack a Helm chart and every image it runs into one OCI bundle.",
        ),
        LazyCommand(
            "inspect",
            "bundler.cli.pack",
            "Show what a bundle (or any OCI artifact) holds: chart, images, platforms, sizes, "
            "signatures.",
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
            "sign",
            "bundler.cli.trust",
            "Sign a bundle with a cosign-compatible simple-signing signature.",
        ),
        LazyCommand("verify", "bundler.cli.trust", "Verify a bundle offline."),
        LazyCommand(
            "approve",
            "bundler.cli.trust",
            "Verify a bundle against the policy, then add this approver's signature.",
        ),
        LazyCommand(
            "login",
            "bundler.cli.auth",
            "Check credentials against a registry, then store them in Docker's config.json.",
        ),
        LazyCommand("logout", "bundler.cli.auth", "Remove stored credentials for a registry."),
        LazyCommand(
            "images",
            "bundler.cli.images",
            "List the images a chart runs, one per line, ready to paste.",
        ),
        "version",
        LazyCommand(
            "keys",
            "bundler.cli.keys",
            "Create and inspect signing keys (cosign-compatible PEM files).",
        ),
    )


app = typer.Typer(
    name="bundler",
    cls=Commands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could print secrets
    rich_markup_mode=None,  # help texts are plain: "os/arch[/variant]" is not markup
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command()
def version() -> None:
    """Print bundler's version."""
    typer.echo(__version__)


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


def run() -> None:
    """Run the CLI.

    Typer handles usage errors (exit 2) and --help; bundler's own errors arrive here and leave
    as one line on stderr with their family's exit code. SIGINT and SIGTERM stop the command
    cleanly: exit 130 or 143.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup and background jobs
            signal.signal(signum, _on_signal)
    try:
        app()
    except BundlerError as error:
        from bundler.model.text import printable  # imported on the error paths only

        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        typer.echo(f"error: {printable(message)}", err=True)  # names in it came from outside
        sys.exit(exit_code_for(error))
    except Interrupted as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # a bug: say so in one line, without locals
        from bundler.model.text import printable

        typer.echo(f"internal error: {type(error).__name__}: {printable(error)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
