#!/usr/bin/env python3
"""Benchmark: export a signed bundle to an archive, and import it into a loopback registry.

Run by hand (never in CI): ``cd bench && ../.venv/bin/python transfer_bench.py --mib 500``.

Setup (not timed): the synthetic image set, packed and signed as one bundle in an OCI layout
(the vendor side) and pushed to a loopback registry. Then, per run:
- export: ``bundler export`` from the registry and from the layout to ``archive:`` — compared
  with SHA-256 over the same unique bytes on two threads (the rate at which any verifying
  export must hash them);
- import: ``bundler import`` of that archive into a fresh registry, verification included,
  compared with skopeo copying the same images one after the other from the same archive
  (``oci-archive:FILE:REF`` -> ``docker://``) into another fresh registry.
Also the archive size against the unique blob bytes, and the peak RSS of every command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
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
from pack_bench import write_chart

synth = load_synth()
PASS_ENV = "BUNDLER_BENCH_PASSPHRASE"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundler-transfer-bench-"))
    env = dict(
        os.environ,
        XDG_CACHE_HOME=str(work / "cache"),
        DOCKER_CONFIG=str(work / "dc"),
        **{PASS_ENV: "bench"},
    )
    vendor = None
    try:
        images = work / "images"
        refs = list(synth.bench_set(images, args.mib))
        write_chart(work / "chart", refs)
        layout = work / "vendor-layout"
        subprocess.run(
            [*BUNDLER, "keys", "generate", str(work / "k"), "--passphrase-env", PASS_ENV],
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(
            [
                *BUNDLER,
                "pack",
                "--chart",
                str(work / "chart"),
                "--source",
                f"oci:{images}",
                "--no-upstream",
                "--no-render",
                "--to",
                f"oci:{layout}",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(
            [
                *BUNDLER,
                "sign",
                f"oci:{layout}",
                "--key",
                str(work / "k.key"),
                "--passphrase-env",
                PASS_ENV,
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        vendor = start_registry("plain", work / "vendor-registry")
        bundle_ref = f"{vendor.host}/vendor/bench:1.0.0"
        subprocess.run(
            [*BUNDLER, "copy", "-q", "--from", f"oci:{layout}", "--to", bundle_ref],
            check=True,
            env=env,
            capture_output=True,
        )
        files = blob_files(layout)
        unique = sum(f.stat().st_size for f in files)
        mib = unique / 2**20
        warm(files)
        results: dict[str, list[float]] = {
            k: []
            for k in ("export_from_registry", "export_from_layout", "import", "skopeo", "hash2")
        }
        rss: dict[str, int] = {k: 0 for k in results}
        archive_size = 0
        for run in range(args.runs):
            results["hash2"].append(hash_limit(files, 2))
            archive = work / f"export-{run}.tar"
            for label, src in (
                ("export_from_registry", bundle_ref),
                ("export_from_layout", f"oci:{layout}"),
            ):
                archive.unlink(missing_ok=True)
                seconds, peak = run_measured(
                    [*BUNDLER, "export", src, "--to", f"archive:{archive}"], env
                )
                results[label].append(seconds)
                rss[label] = max(rss[label], peak)
            archive_size = archive.stat().st_size
            internal = start_registry("plain", work / f"internal-{run}")
            try:
                seconds, peak = run_measured(
                    [
                        *BUNDLER,
                        "import",
                        f"archive:{archive}",
                        "--to",
                        f"{internal.host}/internal/bench",
                        "--key",
                        str(work / "k.pub"),
                    ],
                    dict(env, XDG_CACHE_HOME=str(work / f"cache-import-{run}")),
                )
                results["import"].append(seconds)
                rss["import"] = max(rss["import"], peak)
            finally:
                internal.stop()
            other = start_registry("plain", work / f"skopeo-{run}")
            try:
                total, top = 0.0, 0
                for ref in refs:
                    seconds, peak = run_measured(
                        [
                            "skopeo",
                            "copy",
                            "-q",
                            "--all",
                            "--dest-tls-verify=false",
                            f"oci-archive:{archive}:{ref}",
                            f"docker://{other.host}/skopeo/{ref.split('/', 1)[1]}",
                        ],
                        env,
                    )
                    total, top = total + seconds, max(top, peak)
                results["skopeo"].append(total)
                rss["skopeo"] = max(rss["skopeo"], top)
            finally:
                other.stop()
            archive.unlink()
        med = {k: statistics.median(v) for k, v in results.items()}
        report = {
            "unique_mib": round(mib, 1),
            "archive_mib": round(archive_size / 2**20, 1),
            "archive_overhead_pct": round(100 * (archive_size - unique) / unique, 3),
            "runs": args.runs,
            "seconds_median": {k: round(v, 2) for k, v in med.items()},
            "mib_per_s": {k: round(mib / v, 1) for k, v in med.items()},
            "peak_rss_mib": {k: round(v / 1024, 1) for k, v in rss.items() if v},
            "export_registry_vs_hash2": round(med["hash2"] / med["export_from_registry"], 2),
            "export_layout_vs_hash2": round(med["hash2"] / med["export_from_layout"], 2),
            "import_vs_skopeo": round(med["skopeo"] / med["import"], 2),
            "all_seconds": {k: [round(x, 2) for x in v] for k, v in results.items()},
        }
        write_report(report, args.json)
    finally:
        if vendor is not None:
            vendor.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
