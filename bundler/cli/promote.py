"""``bundler promote``: verified bundles into the internal registry, for Argo CD."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bundler.cli.common import (
    ParallelOpt,
    PassphraseFlags,
    RegistryFlags,
    SetOpt,
    SetStringOpt,
    TokenFlags,
    Ui,
    ValuesOpt,
    command,
    emit_json,
    progress_bar,
    signing_key,
)
from bundler.cli.trust import load_policy
from bundler.errors import TransportError, UsageError
from bundler.model.text import printable

if TYPE_CHECKING:
    from bundler.services.promote import PromotionResult


def promote_command(
    *,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC", help="The bundle: REGISTRY/REPO[:TAG], oci:DIR or archive:FILE.tar."
        ),
    ],
    to: Annotated[
        str, typer.Option("--to", metavar="DEST", help="REGISTRY/PREFIX to promote into.")
    ],
    policy: Annotated[
        Path, typer.Option("--policy", metavar="FILE", help="Trust policy the bundle must meet.")
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="Promotion key that signs the promotion record: a private key file (cosign "
            "format) or a pkcs11: URI.",
        ),
    ] = None,
    passphrase: PassphraseFlags,
    token: TokenFlags,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            metavar="nested|flat|host",
            help="Where images go under PREFIX: nested "
            "(PREFIX/<repository>), flat (PREFIX/<name>) or host "
            "(PREFIX/<upstream host>/<repository>).",
        ),
    ] = "nested",
    mirror_mode: Annotated[
        bool,
        typer.Option(
            "--mirror-mode",
            help="Leave the chart byte-identical; push images "
            "under PREFIX/<upstream host>/... and write containerd hosts.toml.",
        ),
    ] = False,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade", help="Promote a version older than the newest already promoted."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify and print the plan; write nothing.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Write the Argo CD Application, the repository "
            "secret template, the promotion record (and hosts.toml files "
            "in mirror mode) into DIR.",
        ),
    ] = None,
    app_namespace: Annotated[
        str,
        typer.Option(
            "--dest-namespace",
            "--app-namespace",
            metavar="NAMESPACE",
            help="Namespace the Argo CD application deploys into.",
        ),
    ] = "default",
    app_name: Annotated[
        str | None,
        typer.Option(
            "--app-name", metavar="NAME", help="Argo CD application name (default: the bundle's)."
        ),
    ] = None,
    project: Annotated[
        str, typer.Option("--project", metavar="NAME", help="Argo CD project.")
    ] = "default",
    dest_server: Annotated[
        str,
        typer.Option(
            "--dest-server", metavar="URL", help="Cluster API server the application deploys to."
        ),
    ] = "https://kubernetes.default.svc",
    sync_policy: Annotated[
        str,
        typer.Option(
            "--sync-policy", metavar="auto|manual", help="auto (prune and self-heal) or manual."
        ),
    ] = "manual",
    track: Annotated[
        str | None,
        typer.Option(
            "--track",
            metavar="RANGE",
            help="Follow a SemVer range (1.x, '>=1.2 <2') instead of the promoted version.",
        ),
    ] = None,
    serve_as: Annotated[
        str | None,
        typer.Option(
            "--serve-as",
            metavar="REGISTRY/PREFIX",
            help="With --to oci:DIR: the REGISTRY/PREFIX the "
            "layout will be served under (the chart names images there).",
        ),
    ] = None,
    containerd_ca: Annotated[
        str | None,
        typer.Option(
            "--containerd-ca", metavar="FILE", help="CA file path on the nodes, for hosts.toml."
        ),
    ] = None,
    hosts_fallback: Annotated[
        bool,
        typer.Option(
            "--hosts-fallback",
            help="In mirror mode, let containerd fall back to the upstream registry when the "
            "mirror fails (hosts.toml names the mirror alone otherwise).",
        ),
    ] = False,
    values: ValuesOpt = None,
    set_values: SetOpt = None,
    set_strings: SetStringOpt = None,
    helm: Annotated[
        str | None, typer.Option("--helm", metavar="FILE", help="Helm binary for the proof render.")
    ] = None,
    ui: Ui,
    parallel: ParallelOpt = 4,
    registry: RegistryFlags,
) -> None:
    """Promote a bundle that verifies, now, under the policy; refuses rollbacks.

    Images are relocated and pinned by digest, the chart's values rewritten and the chart pushed
    as a Helm OCI chart, and a signed promotion record attached. Nothing is tagged before its
    content is in.
    """
    from bundler import api

    trust = load_policy(policy, None)
    signer = signing_key(key, passphrase, token) if key is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    deploy_values: dict[str, object] = {}
    if values or set_values or set_strings:
        from bundler.adapters.helm import Helm, find_helm

        binary = find_helm(helm)
        if binary is None:
            raise UsageError("values for the proof render need helm: install it or pass --helm")
        deploy_values = Helm(binary).user_values(values or [], set_values or [], set_strings or [])
    with api.Session(registry.options(parallel)) as session, progress_bar(ui) as sink:
        result = api.promote(
            source,
            to,
            trust,
            signer,
            serve_as=serve_as,
            style=layout,
            mirror=mirror_mode,
            allow_downgrade=allow_downgrade,
            dry_run=dry_run,
            helm=helm,
            deploy_values=deploy_values,
            parallel=parallel,
            progress=sink,
            session=session,
        )
    if out is not None and not dry_run:
        argo = _Argo(
            app_namespace, app_name, project, dest_server, sync_policy, track, registry.ca_file
        )
        nodes = _Containerd(containerd_ca, registry.insecure, registry.plain_http, hosts_fallback)
        _write_outputs(out, result, argo, nodes)
    if ui.json:
        emit_json(result.to_json())
        return
    plan = result.plan
    verb = (
        "would promote"
        if dry_run
        else ("already promoted" if plan.already_promoted else "promoted")
    )
    typer.echo(
        printable(
            f"{plan.chart.digest}  {plan.registry}/{plan.chart_repository}:{plan.chart_tag}"
            f"  ({verb} {plan.bundle.name} {plan.bundle.version})"
        )
    )
    for relocation in plan.relocations:
        ui.note(f"  {relocation.source} -> {relocation.pinned}")


@dataclass(frozen=True)
class _Argo:
    """The Argo CD choices of the command line."""

    namespace: str
    name: str | None
    project: str
    server: str
    sync_policy: str
    track: str | None
    ca_file: Path | None


@dataclass(frozen=True)
class _Containerd:
    """How the nodes' containerd reaches the mirror (mirror mode's hosts.toml)."""

    ca: str | None
    insecure: bool
    plain_http: bool
    fallback: bool


def _write_outputs(out: Path, result: PromotionResult, argo: _Argo, nodes: _Containerd) -> None:
    from bundler.adapters.deploy import (
        ChartLocation,
        argocd_application,
        argocd_repository_secret,
        argocd_tls_certs,
        containerd_hosts,
    )
    from bundler.adapters.files import atomic_write

    plan = result.plan
    repository, _, chart = plan.chart_repository.rpartition("/")
    location = ChartLocation(
        plan.registry, repository, chart, plan.bundle.lock.chart.version, str(plan.chart.digest)
    )
    k8s_name = re.sub(r"[^a-z0-9-]+", "-", plan.bundle.name.lower()).strip("-")[:50] or "bundle"
    files: dict[str, bytes] = {
        "application.yaml": argocd_application(
            location,
            name=argo.name or k8s_name,
            destination_namespace=argo.namespace,
            destination_server=argo.server,
            project=argo.project,
            sync_policy=argo.sync_policy,
            track=argo.track,
        ),
        "repository-secret.yaml": argocd_repository_secret(location, name=f"{k8s_name}-charts"),
        "promotion.json": json.dumps(result.to_json(), indent=2).encode() + b"\n",
    }
    if argo.ca_file is not None:
        try:
            ca_pem = argo.ca_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --ca-file {argo.ca_file}: {exc.strerror}") from None
        files["tls-certs.yaml"] = argocd_tls_certs(location, ca_pem)
    if plan.mirror:
        scheme = "http://" if nodes.plain_http else ""  # containerd speaks what the mirror does
        mirrors = {upstream: f"{scheme}{base}" for upstream, base in plan.hosts.items()}
        hosts = containerd_hosts(
            mirrors, ca_file=nodes.ca, skip_verify=nodes.insecure, fallback=nodes.fallback
        )
        for path, data in hosts.items():
            files[f"certs.d/{path}"] = data
    try:
        for name, data in files.items():
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
    except OSError as exc:
        raise TransportError(f"cannot write {out}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    """Add the ``promote`` command to ``app``, the CLI's Typer application."""
    command(app, "promote")(promote_command)
