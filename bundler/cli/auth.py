"""``bundler login`` / ``bundler logout``: credentials in Docker's config.json."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bundler.adapters.registry.credentials import CredentialStore
from bundler.cli.common import ConfigDirOpt, RegistryFlags, Ui, command, emit_json
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
    *,
    host: Annotated[str, typer.Argument(metavar="REGISTRY", help="Registry host[:port].")],
    username: Annotated[str, typer.Option("--username", "-u", metavar="NAME", help="User name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    ui: Ui,
    registry: RegistryFlags,
) -> None:
    """Check credentials against a registry, then store them in Docker's config.json.

    The password comes from standard input (--password-stdin) or a prompt, never from an
    argument, so it stays out of shell history and process listings.
    """
    from bundler import api

    host = _host(host)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, err=True)
    if not password:
        raise UsageError("empty password")
    options = registry.options()
    asks = api.login(host, username, password, options=options, config_dir=registry.config_dir)
    if not asks:
        ui.note(f"note: {host} asks for no credentials")
    if ui.json:
        emit_json({"registry": host, "username": username, "credentialsAsked": asks})
        return
    typer.echo(f"Login succeeded for {username} at {host}")


def logout_command(
    *,
    host: Annotated[str, typer.Argument(metavar="REGISTRY", help="Registry host[:port].")],
    ui: Ui,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Remove stored credentials for a registry."""
    name = _host(host)
    removed = CredentialStore(config_dir).erase(name)
    if ui.json:
        emit_json({"registry": name, "removed": removed})
    elif removed:
        typer.echo(f"Removed credentials for {name}")
    else:
        ui.note(f"No credentials stored for {name}")


def register(app: typer.Typer) -> None:
    """Add the ``login`` and ``logout`` commands to ``app``, the CLI's Typer application."""
    command(app, "login")(login_command)
    command(app, "logout")(logout_command)
