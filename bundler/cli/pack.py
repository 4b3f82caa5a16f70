"""``bundler pack`` and ``bundler inspect``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from bundler.cli.common import (
    ApiVersionsOpt,
    IncludeDisabledOpt,
    KubeVersionOpt,
    ParallelOpt,
    RegistryFlags,
    SetFileOpt,
    SetOpt,
    SetStringOpt,
    SkipTestsOpt,
    Ui,
    ValuesOpt,
    command,
    emit_json,
    progress_bar,
)
from bundler.errors import NotFoundError, UsageError
from bundler.model.spec import BundleSpec, ExtraImage, ImageSourceSpec
from bundler.model.text import human_bytes, printable


def _source_spec(text: str) -> ImageSourceSpec:
    from bundler.errors import ReferenceFormatError
    from bundler.services.transports import parse_location

    try:
        location = parse_location(text)
    except ReferenceFormatError:
        location = None
    if location is not None and location.kind in ("oci", "docker-archive"):
        assert location.path is not None
        if location.ref is not None:  # each image is looked up there by its own name
            raise UsageError(f"--source {text!r}: name the {location.kind} source without a ref")
        return ImageSourceSpec(location.kind, path=location.path)
    raise UsageError(f"--source {text!r}: expected oci:DIR or docker-archive:FILE.tar")


def _mirror_spec(text: str) -> ImageSourceSpec:
    src, sep, dst = text.partition("=")
    if not sep or not src or not dst:
        raise UsageError(f"--mirror {text!r}: expected REGISTRY=MIRROR[/PREFIX]")
    return ImageSourceSpec("mirror", mirror_from=src, mirror_to=dst)


def _created(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "now":
        return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--created {value!r}: expected 'now' or an RFC 3339 time") from None
    return value


def pack_command(
    *,
    config: Annotated[
        Path | None,
        typer.Argument(metavar="CONFIG", help="Bundle config file (YAML; schemas/bundle-config)."),
    ] = None,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="DEST",
            help="Where to write the bundle: REGISTRY/REPO"
            "[:TAG], oci:DIR[:REF] or archive:FILE.tar.",
        ),
    ] = "",
    chart: Annotated[
        str | None,
        typer.Option(
            "--chart",
            metavar="CHART",
            help="Chart directory, .tgz, or oci://REF "
            "(instead of, or overriding, the config's chart).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="Bundle name.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", metavar="VERSION", help="Bundle version.")
    ] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", metavar="REF", help="An extra image to bundle.")
    ] = None,
    value_path: Annotated[
        list[str] | None,
        typer.Option(
            "--value-path", metavar="DOTTED.PATH", help="A chart value path holding an image."
        ),
    ] = None,
    values: ValuesOpt = None,
    set_values: SetOpt = None,
    set_strings: SetStringOpt = None,
    set_files: SetFileOpt = None,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    include_disabled: IncludeDisabledOpt = False,
    skip_tests: SkipTestsOpt = False,
    platform: Annotated[
        list[str] | None,
        typer.Option("--platform", metavar="OS/ARCH", help="Keep only this os/arch[/variant]."),
    ] = None,
    allow_missing_platforms: Annotated[
        bool,
        typer.Option(
            "--allow-missing-platforms",
            help="Keep an image that lacks a --platform asked for (else pack refuses).",
        ),
    ] = False,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            metavar="LOCATION",
            help="Look images up in oci:DIR or docker-archive:FILE.tar first (by their reference).",
        ),
    ] = None,
    mirror: Annotated[
        list[str] | None,
        typer.Option(
            "--mirror",
            metavar="REGISTRY=MIRROR",
            help="Fetch REGISTRY's images from MIRROR[/PREFIX] instead.",
        ),
    ] = None,
    no_upstream: Annotated[
        bool, typer.Option("--no-upstream", help="Never fetch from the images' own registries.")
    ] = False,
    allow_missing: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-missing", metavar="REF", help="A rendered image that may be left out."
        ),
    ] = None,
    helm: Annotated[
        str | None, typer.Option("--helm", metavar="FILE", help="Helm binary for rendering.")
    ] = None,
    no_render: Annotated[
        bool, typer.Option("--no-render", help="Skip rendering and the completeness check.")
    ] = False,
    created: Annotated[
        str | None,
        typer.Option(
            "--created",
            metavar="TIME",
            help="Stamp the bundle with this time ('now' or RFC 3339); "
            "without it the bundle carries no time and packs reproducibly.",
        ),
    ] = None,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Pack a Helm chart and every image it runs into one OCI bundle."""
    from bundler import api

    if not to:
        raise UsageError("say where the bundle goes: --to REGISTRY/REPO, oci:DIR or archive:FILE")
    spec = api.load_bundle_config(config) if config is not None else BundleSpec()
    if chart is not None:
        if chart.startswith("oci://"):
            spec.chart_ref, spec.chart_path = chart.removeprefix("oci://"), None
        else:
            spec.chart_path, spec.chart_ref = Path(chart), None
    spec.name = name or spec.name
    spec.version = version or spec.version
    spec.images += [ExtraImage(i) for i in image or []]
    spec.value_paths += value_path or []
    for file in values or []:
        if not file.exists():
            raise NotFoundError(f"values file {file} does not exist (--values)")
    # Relative to where bundler runs, not to the folder helm renders in.
    spec.values_files += [file.absolute() for file in values or []]
    spec.platforms += platform or []
    spec.sources = (
        [_source_spec(s) for s in source or []]
        + [_mirror_spec(m) for m in mirror or []]
        + spec.sources
    )
    spec.upstream = spec.upstream and not no_upstream
    spec.allow_missing += allow_missing or []
    spec.set_values += set_values or []
    spec.set_strings += set_strings or []
    spec.set_files += set_files or []
    spec.kube_version = kube_version or spec.kube_version
    spec.api_versions += api_versions or []
    spec.include_disabled = spec.include_disabled or include_disabled
    spec.skip_tests = spec.skip_tests or skip_tests
    spec.allow_missing_platforms = spec.allow_missing_platforms or allow_missing_platforms
    options = api.PackOptions(
        helm=helm, render=not no_render, created=_created(created), parallel=parallel
    )
    with api.Session(registry.options(parallel)) as session, progress_bar(ui) as sink:
        result = api.pack(
            spec,
            to,
            options=options,
            progress=sink,
            warn=None if ui.json else _warn,
            session=session,
        )
    if ui.json:
        emit_json(result.to_json())
        return
    typer.echo(
        printable(f"{result.digest}  {result.target}" + (f" ({result.tag})" if result.tag else ""))
    )
    ui.note(
        f"bundle {result.name} {result.version}: chart {result.chart.name} "
        f"{result.chart.version}, {len(result.images)} images"
        + ("" if result.rendered else " (templates not rendered: completeness unchecked)")
    )
    for img in result.images:
        paths = ", ".join(v.path for v in img.value_paths) or "-"
        ui.note(
            f"  {img.reference}  {img.digest.short()}  {','.join(img.platforms)}  "
            f"{human_bytes(img.size)}  values: {paths}  from {img.pulled_from}"
        )


def _warn(message: str) -> None:
    typer.echo(f"warning: {printable(message)}", err=True)


def inspect_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="REGISTRY/REPO[:TAG][@DIGEST], oci:DIR[:REF] or archive:FILE.tar[:REF].",
        ),
    ],
    ui: Ui,
    lock: Annotated[bool, typer.Option("--lock", help="Print the bundle's lock document.")] = False,
    registry: RegistryFlags,
) -> None:
    """Show what a bundle (or any OCI artifact) holds: chart, images, platforms, sizes, signatures.

    Every manifest shown is digest-checked; signatures are listed, not verified.
    """
    from bundler import api
    from bundler.services.inspect import lock_json

    with api.Session(registry.options()) as session:
        result = api.inspect(source, session=session)
    if lock:
        if result.lock is None:
            raise UsageError(f"{source} is not a bundle: it has no lock document")
        typer.echo(lock_json(result.lock))
        return
    if ui.json:
        emit_json(result.to_json())
        return
    kind = "bundle" if result.is_bundle else result.media_type
    # Everything below comes from the inspected artifact, which is not verified: escape it.
    typer.echo(
        printable(
            f"{result.digest}  {kind}"
            + (f" {result.name} {result.version}" if result.is_bundle else "")
        )
    )
    if result.chart:
        typer.echo(
            printable(
                f"chart   {result.chart['name']} {result.chart['version']}  "
                f"{human_bytes(result.chart['size'])}"
            )
        )
    for img in result.images:
        typer.echo(
            printable(
                f"image   {img.reference}  {img.digest.short()}  "
                f"{','.join(img.platforms) or '-'}  {human_bytes(img.size)}"
            )
        )
    typer.echo(
        f"bytes   {human_bytes(result.total_bytes)} total, "
        f"{human_bytes(result.unique_bytes)} unique"
    )
    if result.absent_blobs or result.delta_base:
        typer.echo(
            printable(
                f"delta   of {result.delta_base or 'an unnamed base'}: "
                f"{result.absent_blobs} blobs ({human_bytes(result.absent_bytes)}) left out; "
                "import it where the base is"
            )
        )
    if result.signatures:
        for sig in result.signatures:
            typer.echo(
                printable(
                    f"signed  {sig.kind} {sig.tag or sig.artifact_type or ''} {sig.digest.short()}"
                )
            )
            for cert in sig.certificates:
                named = [cert.get("emails"), cert.get("uris")]
                who = ", ".join(str(v) for found in named if isinstance(found, list) for v in found)
                typer.echo(
                    printable(
                        f"        certificate {who or cert.get('subject') or '-'} "
                        f"issued by {cert.get('issuer', '?')}"
                    )
                )
    else:
        typer.echo("signed  no signatures found")


def register(app: typer.Typer) -> None:
    """Add the ``pack`` and ``inspect`` commands to ``app``, the CLI's Typer application."""
    command(app, "pack")(pack_command)
    command(app, "inspect")(inspect_command)
