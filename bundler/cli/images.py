"""``bundler images``: which images a chart runs, and where each one was found."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bundler.cli.common import OutputFormat, OutputOpt, emit_json
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.services.discover import ImageFinding


def _table(findings: list[ImageFinding]) -> list[str]:
    header = ("REFERENCE", "SOURCE", "VALUE PATH", "DETAIL")
    rows = [(f.reference, f.source, f.value_path or "-", f.detail) for f in findings]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in [header, *rows]
    ]


def images_command(
    chart: Annotated[Path, typer.Argument(help="Chart directory or chart .tgz.")],
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", "-f", help="Values file applied when rendering (repeatable)."),
    ] = None,
    value_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--value-path",
            help="Value path holding an image that discovery cannot "
            "infer, e.g. web.sidecar.ref (repeatable).",
        ),
    ] = None,
    helm: Annotated[
        str | None,
        typer.Option(
            "--helm",
            help="Helm binary used to render templates "
            "(default: $BUNDLER_HELM, else helm on PATH).",
        ),
    ] = None,
    no_render: Annotated[
        bool, typer.Option("--no-render", help="Do not render templates with helm.")
    ] = False,
    output: OutputOpt = OutputFormat.text,
) -> None:
    """List the images a chart references.

    They come from its helm.sh/images annotation, image-shaped values (with their value paths),
    explicitly named value paths and, when helm is available, every container of the rendered
    templates.
    """
    from bundler.adapters.chart import load_chart
    from bundler.services.discover import discover, find_helm

    loaded = load_chart(chart)
    helm_path = None if no_render else find_helm(helm)
    if helm_path is None and not no_render:
        typer.echo(
            "warning: helm not found; rendered templates were not searched "
            "(use --helm PATH, or --no-render to silence this)",
            err=True,
        )
    findings = discover(
        loaded,
        helm=helm_path,
        value_paths=value_paths or (),
        values_files=values or (),
    )
    if output is OutputFormat.json:
        emit_json(
            {
                "chart": {"name": loaded.metadata.name, "version": loaded.metadata.version},
                "rendered": helm_path is not None,
                "images": [f.to_json() for f in findings],
            }
        )
        return
    for line in _table(findings):
        typer.echo(printable(line.rstrip()))  # references from the chart
    unique = len({f.reference for f in findings})
    typer.echo(
        printable(
            f"{unique} images in {loaded.metadata.name} {loaded.metadata.version} "
            f"({len(findings)} findings)"
        ),
        err=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``images`` command to ``app``, the CLI's Typer application."""
    app.command("images")(images_command)
