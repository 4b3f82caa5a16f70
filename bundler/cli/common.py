"""Options shared by commands that talk to registries, and output helpers."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bundler.adapters.registry.credentials import CredentialStore
from bundler.adapters.registry.options import RegistryOptions
from bundler.errors import UsageError


class OutputFormat(StrEnum):
    """``--output``: ``text`` for people (stderr progress, a summary), ``json`` for programs."""

    text = "text"
    json = "json"


OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="Result format on stdout.")]
ValuesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--values", "-f", help="Values file for rendering, relative to here (repeatable)."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="A value for rendering, as Helm's --set PATH=VALUE (repeatable)."),
]
SetStringOpt = Annotated[
    list[str] | None,
    typer.Option("--set-string", help="As Helm's --set-string PATH=VALUE (repeatable)."),
]
SetFileOpt = Annotated[
    list[str] | None,
    typer.Option("--set-file", help="As Helm's --set-file PATH=FILE (repeatable)."),
]
KubeVersionOpt = Annotated[
    str | None,
    typer.Option("--kube-version", help="Kubernetes version to render for (as Helm's)."),
]
ApiVersionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-versions", help="API version the chart may test for, as Helm's (repeatable)."
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
PlainHttpOpt = Annotated[
    bool,
    typer.Option(
        "--plain-http",
        help="Talk plain HTTP to registries (loopback falls back "
        "to HTTP by itself when the server there does not speak TLS).",
    ),
]
CaFileOpt = Annotated[
    Path | None, typer.Option("--ca-file", help="PEM bundle of CAs to trust for registry TLS.")
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure-skip-tls-verify", help="Do not verify registry certificates.")
]
ConfigDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry-config",
        help="Directory of the Docker config.json holding "
        "credentials (default: $DOCKER_CONFIG or ~/.docker).",
    ),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=32, help="Blobs transferred at once.")
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


def registry_options(
    plain_http: bool,
    ca_file: Path | None,
    insecure: bool,
    config_dir: Path | None,
    parallel: int = 4,
    chunk_mib: int = 0,
) -> RegistryOptions:
    """RegistryOptions from the shared registry flags; UsageError if ``ca_file`` is missing.

    ``chunk_mib`` 0 means one streamed upload per blob; credentials come from ``config_dir``.
    """
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"CA file {ca_file} does not exist")
    if ca_file is not None:
        import ssl

        try:
            ssl.create_default_context(cafile=str(ca_file))
        except (ssl.SSLError, OSError, ValueError):
            raise UsageError(
                f"CA file {ca_file} holds no PEM certificate "
                "(expected '-----BEGIN CERTIFICATE-----')"
            ) from None
    return RegistryOptions(
        ca_bundle=ca_file,
        plain_http=plain_http,
        insecure_skip_tls_verify=insecure,
        credential_store=CredentialStore(config_dir),
        parallel=parallel,
        chunk_size=chunk_mib * 1024 * 1024 or None,
    )


def emit_json(doc: Any) -> None:
    """Write ``doc`` to stdout as indented JSON, keys in the order given, one trailing newline."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def human_bytes(n: int) -> str:
    """``n`` bytes in B, KiB, MiB or GiB (1024-based), one decimal above bytes."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
