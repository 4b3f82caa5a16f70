"""Helm as a subprocess: the one place bundler runs the ``helm`` binary.

Helm is the source of truth for what a chart runs, so bundler does not re-implement its template
engine: it renders with ``helm template`` and reads the result. Values are passed to Helm as
files bundler writes itself (JSON, which Helm reads as YAML), so what Helm sees is exactly the
document recorded in the bundle lock. ``--set``/``--set-string``/``--set-file`` are parsed by Helm
itself (:meth:`Helm.user_values`): a scratch chart with no values prints ``toJson .Values``.

Every run has a timeout, a bounded output, no stdin, and a scratch working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundler.errors import ChartError, NotFoundError, UsageError
from bundler.model.rendering import RenderSettings

HELM_ENV = "BUNDLER_HELM"
HELM_TIMEOUT = 120.0
MAX_RENDERED_BYTES = 64 * 1024 * 1024

_PROBE_CHART = b"apiVersion: v2\nname: bundler-values\nversion: 0.0.0\n"
_PROBE_TEMPLATE = b"{{ toJson .Values }}\n"


def find_helm(explicit: str | None = None) -> str | None:
    """``explicit``, else ``$BUNDLER_HELM``, else ``helm`` on PATH; ``None`` if there is none.

    A binary named explicitly (argument or environment) that is missing is a usage error.
    """
    for named, how in ((explicit, "--helm"), (os.environ.get(HELM_ENV), f"${HELM_ENV}")):
        if named:
            found = shutil.which(named)
            if found is None:
                raise UsageError(f"helm binary {named!r} ({how}) not found or not executable")
            return os.path.abspath(found)  # helm runs in a scratch directory
    found = shutil.which("helm")
    return os.path.abspath(found) if found else None


def _local_files(files: Sequence[Path], set_files: Sequence[str]) -> list[str]:
    """``--values`` arguments for ``files``, once every file they and ``--set-file`` name is there.

    NotFoundError for the first that is not (relative to the working directory, as Helm reads
    them), before Helm runs.
    """
    argv: list[str] = []
    for path in files:
        absolute = Path(path).absolute()
        if not absolute.is_file():
            raise NotFoundError(
                f"values file {path} does not exist (paths are relative to {Path.cwd()})"
            )
        argv += ["--values", str(absolute)]
    for item in set_files:  # PATH=FILE[,PATH=FILE...], as Helm splits it
        for pair in item.split(","):
            file = pair.partition("=")[2]
            if file and not Path(file).absolute().is_file():
                raise NotFoundError(
                    f"--set-file {pair}: {file} does not exist (paths are relative to {Path.cwd()})"
                )
    return argv


class Helm:
    """One helm binary; each call is one bounded ``helm template`` run."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def _run(self, argv: list[str], cwd: str, what: str) -> str:
        try:
            proc = subprocess.run(
                [self.binary, *argv],
                capture_output=True,
                timeout=HELM_TIMEOUT,
                check=False,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise UsageError(f"helm binary {self.binary} not found") from None
        except subprocess.TimeoutExpired:
            raise ChartError(
                f"helm template of {what} did not finish in {HELM_TIMEOUT:.0f}s"
            ) from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            first = next((ln for ln in lines if ln.startswith("Error")), lines[0] if lines else "")
            raise ChartError(f"helm template of {what} failed: {first or 'no message'}")
        if len(proc.stdout) > MAX_RENDERED_BYTES:
            raise ChartError(f"helm template of {what}: output over {MAX_RENDERED_BYTES} bytes")
        return proc.stdout.decode(errors="replace")

    def template(
        self,
        archive: bytes,
        what: str,
        settings: RenderSettings,
        extra_values: Sequence[dict[str, Any]] = (),
    ) -> str:
        """``helm template`` of a chart archive with the settings' values, then ``extra_values``.

        Hooks and ``templates/tests`` are rendered too (Helm's default). ChartError with Helm's
        own first error line when the chart does not render.
        """
        with tempfile.TemporaryDirectory(prefix="bundler-helm-") as tmp:
            chart = Path(tmp) / "chart.tgz"
            chart.write_bytes(archive)
            argv = ["template", settings.release, str(chart), "--namespace", settings.namespace]
            for number, doc in enumerate([settings.values, *extra_values]):
                if not doc:
                    continue
                path = Path(tmp) / f"values-{number}.json"
                path.write_text(json.dumps(doc))
                argv += ["--values", str(path)]
            if settings.kube_version:
                argv += ["--kube-version", settings.kube_version]
            for api in settings.api_versions:
                argv += ["--api-versions", api]
            if settings.skip_tests:
                argv.append("--skip-tests")
            return self._run(argv, tmp, what)

    def user_values(
        self,
        files: Sequence[Path] = (),
        set_values: Sequence[str] = (),
        set_strings: Sequence[str] = (),
        set_files: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The values document Helm makes of ``-f`` files and ``--set*`` flags, merged as Helm does.

        Files are read relative to the caller's working directory (as ``helm`` itself would).
        NotFoundError naming a values file or a ``--set-file`` file that does not exist.
        """
        argv = _local_files(files, set_files)
        for flag, items in (
            ("--set", set_values),
            ("--set-string", set_strings),
            ("--set-file", set_files),
        ):
            for item in items:
                argv += [flag, item]
        if not argv:
            return {}
        with tempfile.TemporaryDirectory(prefix="bundler-helm-") as tmp:
            chart = Path(tmp) / "chart"
            (chart / "templates").mkdir(parents=True)
            (chart / "Chart.yaml").write_bytes(_PROBE_CHART)
            (chart / "templates" / "values.yaml").write_bytes(_PROBE_TEMPLATE)
            probe = ["template", "values", str(chart), "--show-only", "templates/values.yaml"]
            try:
                out = self._run(probe + argv, os.getcwd(), "the values given")
            except ChartError as exc:
                raise UsageError(
                    str(exc).replace("helm template of the values given", "values")
                ) from None
        body = "\n".join(ln for ln in out.splitlines() if ln and not ln.startswith(("---", "#")))
        doc = json.loads(body or "{}")
        if not isinstance(doc, dict):
            raise UsageError("the values given are not a mapping")
        return doc
