"""``bundler export`` and ``bundler import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bundler.cli.common import (
    ParallelOpt,
    RegistryFlags,
    Ui,
    command,
    emit_json,
    progress_bar,
)
from bundler.errors import UsageError
from bundler.model.text import human_bytes, printable


def export_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="The bundle: REGISTRY/REPO[:TAG], oci:DIR[:REF] or archive:FILE.tar.",
        ),
    ],
    to: Annotated[str, typer.Option("--to", metavar="DEST", help="archive:FILE.tar to write.")],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            metavar="LOCATION",
            help="A previous bundle the far side already holds (any "
            "location): only the blobs it lacks are written.",
        ),
    ] = None,
    max_volume_size: Annotated[
        str | None,
        typer.Option(
            "--max-volume-size",
            metavar="SIZE",
            help="Split into volumes of at most this size "
            "(4095M for FAT32, whose files end 1 byte short of 4G) with a checksummed parts "
            "list.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an archive that is already there.")
    ] = False,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Write a bundle with its signatures to an archive for removable media.

    Every blob goes in once, metadata first; with --base, only what the far side lacks.
    """
    from bundler import api
    from bundler.adapters.volumes import parse_volume_size
    from bundler.services.transports import parse_location

    volume = parse_volume_size(max_volume_size) if max_volume_size else None
    target = parse_location(to, for_target=True)
    if target.kind == "archive" and target.path is not None and not force:
        from bundler.adapters.volumes import parts_list_path

        for existing in (target.path, parts_list_path(target.path)):
            if existing.exists() or existing.is_symlink():
                raise UsageError(
                    f"{existing} is already there: export writes a new archive; pass --force "
                    "to replace it"
                )
    with api.Session(registry.options(parallel)) as session, progress_bar(ui) as sink:
        result = api.export(
            source,
            target,
            base=base,
            max_volume_size=volume,
            parallel=parallel,
            progress=sink,
            session=session,
        )
    if ui.json:
        emit_json(result.to_json())
        return
    copied = result.copy
    typer.echo(printable(f"{copied.digest}  {copied.target}"))
    ui.note(
        f"{copied.manifests} manifests, {copied.blobs - copied.blobs_omitted} blobs "
        f"({human_bytes(copied.bytes_copied)}) written"
        + (
            f", {copied.blobs_omitted} left to the base ({human_bytes(result.omitted_bytes)})"
            if result.base
            else ""
        )
    )


def import_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="archive:FILE.tar (or its volumes' parts list), oci:DIR or REGISTRY/REPO.",
        ),
    ],
    to: Annotated[
        str,
        typer.Option("--to", metavar="DEST", help="REGISTRY/REPO[:TAG] or oci:DIR to import into."),
    ],
    policy: Annotated[
        Path | None,
        typer.Option("--policy", metavar="FILE", help="Trust policy the bundle must meet."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="FILE", help="Or: trust exactly this public key."),
    ] = None,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Verify a bundle against the trust policy, then stream it into a registry or layout.

    Signatures and lock go first, every blob is digest-checked on the way, names come last. A
    rejected or interrupted import leaves nothing tagged; a re-run continues.
    """
    from bundler import api
    from bundler.cli.trust import load_policy

    trust = load_policy(policy, key)
    with api.Session(registry.options(parallel)) as session, progress_bar(ui) as sink:
        result = api.import_bundle(
            source, to, trust, parallel=parallel, progress=sink, session=session
        )
    if ui.json:
        emit_json(result.to_json())
        return
    copied = result.copy
    verified = result.verified
    signers = ", ".join(f"{s.key_name} ({s.role})" for s in verified.signers)
    typer.echo(
        printable(f"{copied.digest}  {copied.target}" + (f" ({copied.tag})" if copied.tag else ""))
    )
    ui.note(
        f"verified {verified.name} {verified.version} (signed by {signers}); "
        f"{copied.blobs_copied} blobs copied, {copied.blobs_skipped} already there, "
        f"{copied.blobs_mounted} mounted, {human_bytes(copied.bytes_copied)}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``import`` commands to ``app``, the CLI's Typer application."""
    command(app, "export")(export_command)
    command(app, "import")(import_command)
