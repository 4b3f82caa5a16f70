#!/usr/bin/env python3
"""Benchmark: pack the synthetic image set from a loopback registry into an archive.

Run by hand (never in CI): ``.venv/bin/python bench/pack_bench.py --mib 500 --runs 3``.

The images of ``bench_set`` are pushed once to a plain loopback registry. Then, in each run:
- skopeo copies each image (``--all``) from the registry into one OCI layout directory, one
  after the other: what a user does today to gather a chart's images;
- ``bundler pack`` builds the bundle (a chart naming the six images, rendered with Helm when
  one is found) from the same registry into an ``archive:`` file, every byte verified;
- the SHA-256 limit over the same bytes is measured alongside. Reported as ratios, with peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    BUNDLER,
    blob_files,
    hash_limit,
    load_synth,
    run_measured,
    start_registry,
    warm,
    write_report,
)

synth = load_synth()

CHART_YAML = """apiVersion: v2
name: bench
version: 1.0.0
appVersion: "1.0.0"
"""
TEMPLATE = """{{- range $name, $app := .Values.apps }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
spec:
  selector:
    matchLabels: {app: {{ $name }}}
  template:
    metadata:
      labels: {app: {{ $name }}}
    spec:
      containers:
        - name: {{ $name }}
          image: {{ $app.image }}
---
{{- end }}
"""


def write_chart(directory: Path, refs: list[str]) -> None:
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text(CHART_YAML)
    apps = {ref.split("/")[-1].split(":")[0]: {"image": ref} for ref in refs}
    (directory / "values.yaml").write_text(json.dumps({"apps": apps}, indent=2))
    (directory / "templates" / "apps.yaml").write_text(TEMPLATE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    helm = shutil.which("helm") or str(Path(__file__).resolve().parents[1] / ".tools/bin/helm")
    render = ["--helm", helm] if os.access(helm, os.X_OK) else ["--no-render"]
    work = Path(tempfile.mkdtemp(prefix="bundler-pack-bench-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), DOCKER_CONFIG=str(work / "dc"))
    reg = None
    try:
        layout = work / "layout"
        refs = list(synth.bench_set(layout, args.mib))
        files = blob_files(layout)
        mib = sum(f.stat().st_size for f in files) / 2**20
        warm(files)
        reg = start_registry("plain", work / "registry")
        for ref in refs:  # the vendor's registry, filled once
            run_measured(
                [
                    *BUNDLER,
                    "copy",
                    "-q",
                    "--from",
                    f"oci:{layout}:{ref}",
                    "--to",
                    f"{reg.host}/{ref.split('/', 1)[1]}",
                ],
                env,
            )
        chart = work / "chart"
        write_chart(chart, refs)
        results: dict[str, list[float]] = {"skopeo": [], "bundler": [], "hash1": [], "hash2": []}
        rss = {"skopeo": 0, "bundler": 0}
        for run in range(args.runs):
            results["hash1"].append(hash_limit(files, 1))
            results["hash2"].append(hash_limit(files, 2))
            out = work / f"skopeo-{run}"
            total, peak = 0.0, 0
            for ref in refs:
                seconds, top = run_measured(
                    [
                        "skopeo",
                        "copy",
                        "-q",
                        "--all",
                        "--src-tls-verify=false",
                        f"docker://{reg.host}/{ref.split('/', 1)[1]}",
                        f"oci:{out}:{ref}",
                    ],
                    env,
                )
                total, peak = total + seconds, max(peak, top)
            results["skopeo"].append(total)
            rss["skopeo"] = max(rss["skopeo"], peak)
            shutil.rmtree(out)
            archive = work / f"bundle-{run}.tar"
            seconds, peak = run_measured(
                [
                    *BUNDLER,
                    "pack",
                    "--chart",
                    str(chart),
                    *render,
                    "--mirror",
                    f"example.local={reg.host}",
                    "--no-upstream",
                    "--to",
                    f"archive:{archive}",
                ],
                env,
            )
            results["bundler"].append(seconds)
            rss["bundler"] = max(rss["bundler"], peak)
            archive.unlink()
        med = {k: statistics.median(v) for k, v in results.items()}
        report = {
            "images": len(refs),
            "mib": round(mib, 1),
            "runs": args.runs,
            "rendered": render[0] == "--helm",
            "seconds_median": {k: round(v, 2) for k, v in med.items()},
            "mib_per_s": {k: round(mib / v, 1) for k, v in med.items()},
            "peak_rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()},
            "ratio_bundler_vs_skopeo": round(med["skopeo"] / med["bundler"], 2),
            "ratio_bundler_vs_hash1": round(med["hash1"] / med["bundler"], 2),
            "all_seconds": {k: [round(x, 2) for x in v] for k, v in results.items()},
        }
        write_report(report, args.json)
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
