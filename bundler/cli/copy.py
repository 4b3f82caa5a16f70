"""``bundler copy``: any OCI artifact between registries, layout directories and archives."""

from __future__ import annotations

from typing import Annotated

import typer

from bundler.cli.common import (
    ChunkOpt,
    ParallelOpt,
    RegistryFlags,
    Ui,
    command,
    emit_json,
    progress_bar,
)
from bundler.errors import UsageError
from bundler.model.text import human_bytes, printable

# The services (and the HTTP stack under them) are imported inside the commands: every start
# of the program pays for what is imported here.


def copy_command(
    *,
    source: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="SRC",
            help="Source: REGISTRY/REPO[:TAG][@DIGEST], oci:DIR[:REF] or archive:FILE.tar[:REF].",
        ),
    ],
    destination: Annotated[
        str, typer.Option("--to", metavar="DEST", help="Destination, same forms.")
    ],
    ui: Ui,
    no_referrers: Annotated[
        bool, typer.Option("--no-referrers", help="Leave signatures and other referrers behind.")
    ] = False,
    parallel: ParallelOpt = 4,
    chunk_size: ChunkOpt = 0,
    registry: RegistryFlags,
    max_volume_size: Annotated[
        str | None,
        typer.Option(
            "--max-volume-size",
            metavar="SIZE",
            help="Split an archive: target into volumes of at most SIZE bytes "
            "(K, M, G, T are powers of 1024; at least 1M), plus a checksummed parts "
            "list. FAT32 holds files below 4 GiB: use 4095M there.",
        ),
    ] = None,
) -> None:
    """Copy an image, an index with all its children, or any OCI artifact.

    Its signatures and referrers come along. Every manifest and blob is digest-checked on the
    way; names are written only after all content under them is in place.
    """
    # The services directly, not bundler.api: a per-image copy is the command whose start-up
    # matters most, and the API imports every use case.
    from bundler.services import copy as copy_service
    from bundler.services.transports import Transports, parse_location

    src = parse_location(source)
    dst = parse_location(destination, for_target=True)
    volume_size: int | None = None
    if max_volume_size is not None:
        from bundler.adapters.volumes import parse_volume_size

        volume_size = parse_volume_size(max_volume_size)
        if dst.kind != "archive":
            raise UsageError("--max-volume-size applies only to an archive: destination")
    with (
        Transports(registry.options(parallel, chunk_size)) as transports,
        transports.open_source(src) as source_store,
        progress_bar(ui) as sink,
    ):
        target_store = transports.open_target(dst, max_volume_size=volume_size)
        result = copy_service.copy(
            source_store,
            target_store,
            with_referrers=not no_referrers,
            parallel=parallel,
            progress=sink,
        )
    if ui.json:
        emit_json(result.to_json())
        return
    name = f"{result.target}" + (f" ({result.tag})" if result.tag else "")
    typer.echo(printable(f"{result.digest}  {name}"))
    ui.note(
        f"{result.manifests} manifests, {result.blobs} blobs "
        f"({result.blobs_copied} copied, {result.blobs_skipped} already there, "
        f"{result.blobs_mounted} mounted), {human_bytes(result.bytes_copied)} moved "
        f"in {result.seconds:.1f}s; {len(result.referrers)} referrers, "
        f"{max(len(result.tags) - (1 if result.tag else 0), 0)} signature tags"
    )


def tags_command(
    *,
    repository: Annotated[
        str, typer.Argument(metavar="REPO", help="REGISTRY/REPO whose tags to list.")
    ],
    ui: Ui,
    registry: RegistryFlags,
) -> None:
    """List a repository's tags (following the registry's pagination)."""
    from bundler import api
    from bundler.services.transports import parse_location

    location = parse_location(repository, for_target=True)
    with api.Session(registry.options()) as session:
        tags = api.list_tags(location, session=session)
    assert location.reference is not None  # list_tags refused anything else
    if ui.json:
        emit_json({"repository": location.reference.name, "tags": tags})
        return
    for tag in tags:
        typer.echo(printable(tag))  # tags come from the registry


def register(app: typer.Typer) -> None:
    """Add the ``copy`` and ``tags`` commands to ``app``, the CLI's Typer application."""
    command(app, "copy")(copy_command)
    command(app, "tags")(tags_command)
