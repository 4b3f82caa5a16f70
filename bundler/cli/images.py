"""``bundler images``: which images a chart runs, where, and which values control each one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bundler.cli.common import (
    ApiVersionsOpt,
    IncludeDisabledOpt,
    KubeVersionOpt,
    SetFileOpt,
    SetOpt,
    SetStringOpt,
    SkipTestsOpt,
    Ui,
    ValuesOpt,
    command,
    emit_json,
)
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.services.discover import DiscoveredImage


def _line(image: DiscoveredImage) -> str:
    """``REFERENCE  # where it runs; values that control it`` (the reference alone is pasteable)."""
    where = sorted({u.where for u in image.uses})
    notes = []
    if where:
        more = f" and {len(where) - 2} more" if len(where) > 2 else ""
        notes.append("runs in " + ", ".join(where[:2]) + more)
    else:
        notes.append("named by " + ", ".join(sorted(image.found_by)))
    if image.value_paths:
        notes.append("values " + ", ".join(sorted(image.value_paths)))
    elif image.uses and all(u.composition is None for u in image.uses):
        notes.append("no value controls it (literal in a template)")
    return f"{image.reference}  # " + "; ".join(notes)


def images_command(
    *,
    chart: Annotated[Path, typer.Argument(metavar="CHART", help="Chart directory or chart .tgz.")],
    values: ValuesOpt = None,
    set_values: SetOpt = None,
    set_strings: SetStringOpt = None,
    set_files: SetFileOpt = None,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    include_disabled: IncludeDisabledOpt = False,
    skip_tests: SkipTestsOpt = False,
    value_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--value-path",
            metavar="DOTTED.PATH",
            help="Value path holding an image that discovery cannot "
            "infer, e.g. web.sidecar.ref (repeatable).",
        ),
    ] = None,
    helm: Annotated[
        str | None,
        typer.Option(
            "--helm",
            metavar="FILE",
            help="Helm binary used to render templates "
            "(default: $BUNDLER_HELM, else helm on PATH).",
        ),
    ] = None,
    no_render: Annotated[
        bool,
        typer.Option("--no-render", help="Do not render: list what values and annotations name."),
    ] = False,
    ui: Ui,
) -> None:
    """List the images a chart runs, one per line, ready to paste.

    Helm renders the chart with the values given; each image the render runs is listed once, with
    where it runs and the values that control it (found by rendering the chart again with those
    values changed). Images named by the helm.sh/images annotation are added. Images that values
    name for components the render leaves off are listed with --include-disabled.
    """
    from bundler.adapters.chart import load_chart
    from bundler.adapters.helm import Helm, find_helm
    from bundler.model.spec import BundleSpec
    from bundler.services.discover import discover
    from bundler.services.pack import render_settings

    loaded = load_chart(chart)
    helm_path = None if no_render else find_helm(helm)
    if helm_path is None and not no_render:
        typer.echo(
            "warning: helm not found; the chart was not rendered, so this is what values and "
            "annotations name, not what runs (use --helm PATH, or --no-render to silence this)",
            err=True,
        )
    spec = BundleSpec(
        values_files=list(values or []),
        set_values=list(set_values or []),
        set_strings=list(set_strings or []),
        set_files=list(set_files or []),
        kube_version=kube_version,
        api_versions=list(api_versions or []),
        skip_tests=skip_tests,
    )
    settings = render_settings(spec, Helm(helm_path) if helm_path else None)
    discovery = discover(loaded, helm=helm_path, value_paths=value_paths or (), settings=settings)
    selected = discovery.selected(include_disabled)
    if ui.json:
        emit_json(
            {
                "chart": {"name": loaded.metadata.name, "version": loaded.metadata.version},
                "rendered": helm_path is not None,
                "images": [i.to_json() for i in selected.values()],
                "disabled": [i.to_json() for i in discovery.disabled.values()],
                "warnings": discovery.warnings,
            }
        )
        return
    for warning in discovery.warnings:
        typer.echo(f"warning: {printable(warning)}", err=True)
    for image in selected.values():
        typer.echo(printable(_line(image)))  # references from the chart
    summary = f"{len(selected)} images in {loaded.metadata.name} {loaded.metadata.version}"
    if discovery.disabled and not include_disabled:
        summary += (
            f"; {len(discovery.disabled)} more named in values for components that are off "
            "(--include-disabled lists them)"
        )
    ui.note(summary)


def register(app: typer.Typer) -> None:
    """Add the ``images`` command to ``app``, the CLI's Typer application."""
    command(app, "images")(images_command)
