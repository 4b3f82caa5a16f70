"""``bundler serve``: an OCI layout served read-only over the distribution API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bundler.cli.common import Ui, command, emit_json
from bundler.errors import NotFoundError, UsageError


def serve_command(
    *,
    layout: Annotated[str, typer.Argument(metavar="oci:DIR", help="The OCI layout to serve.")],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Address to listen on (port 0 picks a free one, printed at start).",
        ),
    ] = "127.0.0.1:5000",
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="PEM certificate (chain).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="PEM private key of it.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="NAME", help="Require basic auth as NAME.")
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="The --user's password, from VAR."),
    ] = None,
    ui: Ui,
) -> None:
    """Serve an OCI layout read-only as a registry, for sites without one.

    containerd, Helm and Argo CD pull from it as from any registry (manifests, blobs with
    ranges, tags, referrers); names are the layout's ref names without their host. Larger sites
    promote into their own registry instead. The address is printed when it listens (with
    -o json, as a document on stdout); -v logs each request.
    """
    from bundler import api

    if not layout.startswith("oci:"):
        raise UsageError(f"serve takes an OCI layout, oci:DIR, not {layout!r}")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:5000")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise NotFoundError(f"{path} does not exist")
    auth = None
    if user is not None:
        if password_env is None or not os.environ.get(password_env):
            raise UsageError("--user needs --password-env VAR naming a set, non-empty variable")
        auth = api.BasicAuth(user, os.environ[password_env])
    elif password_env is not None:
        raise UsageError("--password-env goes with --user")
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    loud = ui.verbose > 0 or ui.debug
    server = api.serve(
        layout,
        host.strip("[]"),
        int(port),
        tls=tls,
        auth=auth,
        log=lambda line: typer.echo(line, err=True) if loud else None,
    )
    try:
        if ui.json:
            emit_json({"serving": layout, "address": server.address})
            sys.stdout.flush()  # the document is read while the server runs
        # Always said, even with -q: a caller learns the port (--listen HOST:0) from it.
        typer.echo(f"serving {layout} at {server.address} (read-only)", err=True)
        server.serve_forever()
    finally:
        server.shutdown()


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the CLI's Typer ``app``."""
    command(app, "serve")(serve_command)
