"""``bundler login`` / ``bundler logout``: credentials in Docker's config.json."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bundler.adapters.registry.credentials import CredentialStore
from bundler.cli.common import CaFileOpt, ConfigDirOpt, InsecureOpt, PlainHttpOpt, registry_options
from bundler.errors import UsageError
from bundler.model.reference import Reference


def _host(registry: str) -> str:
    host = registry.removeprefix("https://").removeprefix("http://").rstrip("/")
    # Validate it as the registry part of a reference.
    Reference.parse(f"{host}/probe:tag")
    if "/" in host:
        raise UsageError(f"{registry!r} is not a registry host")
    return host


def login_command(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str, typer.Option("--username", "-u", help="User name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    plain_http: PlainHttpOpt = False,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Check credentials against a registry, then store them in Docker's config.json.

    The password comes from standard input (--password-stdin) or a prompt, never from an
    argument, so it stays out of shell history and process listings.
    """
    from bundler import api

    host = _host(registry)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise UsageError("empty password")
    options = registry_options(plain_http, ca_file, insecure, config_dir)
    if not api.login(host, username, password, options=options, config_dir=config_dir):
        typer.echo(f"note: {host} asks for no credentials", err=True)
    typer.echo(f"Login succeeded for {username} at {host}")


def logout_command(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    config_dir: ConfigDirOpt = None,
) -> None:
    """Remove stored credentials for a registry."""
    host = _host(registry)
    if CredentialStore(config_dir).erase(host):
        typer.echo(f"Removed credentials for {host}")
    else:
        typer.echo(f"No credentials stored for {host}", err=True)


def register(app: typer.Typer) -> None:
    """Add the ``login`` and ``logout`` commands to ``app``, the CLI's Typer application."""
    app.command("login")(login_command)
    app.command("logout")(logout_command)
