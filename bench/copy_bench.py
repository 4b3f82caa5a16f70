#!/usr/bin/env python3
"""Benchmark: copy a synthetic multi-image set into a loopback registry, bundler vs skopeo.

Run by hand (never in CI): ``.venv/bin/python bench/copy_bench.py --mib 500 --runs 3``.

Every run uses a fresh, empty registry per tool so nothing is skipped. skopeo copies the images
one after the other (its normal use, `--all` for indexes); bundler does the same, one `bundler
copy` per image, with its default parallel blob transfers. Each of the two then copies the same
images again into its registry, which holds them all by then: the no-op copy, where start-up and
the checks are all there is. Reported with the SHA-256 hashing limit of this machine measured in
the same run (one thread and two threads over the same bytes), as ratios, plus the peak RSS of
each tool process (from wait4's rusage) and the machine's facts (CPU, SHA-NI, load at start and
end). ``--bundler CMD`` measures another way of running bundler, e.g. an installed console
script, instead of ``python -m bundler.cli.main`` from this tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    blob_files,
    bundler_command,
    hash_limit,
    load_synth,
    machine_facts,
    run_measured,
    start_registry,
    warm,
    write_report,
)

synth = load_synth()
# skopeo: one process per image. bundler: the same, and the whole set as one index in one
# command (the shape of a bundle: an index pinning every image, multi-arch indexes nested).
TOOLS = ("skopeo", "bundler", "bundler-set")
NOOP_TOOLS = ("skopeo", "bundler")  # copied again, per image, once everything is there
SET_REF = "example.local/bench/set:1.0.0"
BIG_REF = "example.local/bench/big:1.0.0"


def copy_all(
    tool: str, layout: Path, refs: list[str], host: str, bundler: list[str]
) -> tuple[float, int]:
    if tool == "bundler-set":
        return run_measured(
            [
                *bundler,
                "copy",
                "-q",
                "--from",
                f"oci:{layout}:{SET_REF}",
                "--to",
                f"{host}/bundler/set:1.0.0",
            ]
        )
    total, peak = 0.0, 0
    for ref in refs:
        repo = ref.split("/", 1)[1]
        if tool == "skopeo":
            cmd = [
                "skopeo",
                "copy",
                "-q",
                "--all",
                "--dest-tls-verify=false",
                f"oci:{layout}:{ref}",
                f"docker://{host}/skopeo/{repo}",
            ]
        else:
            cmd = [
                *bundler,
                "copy",
                "-q",
                "--from",
                f"oci:{layout}:{ref}",
                "--to",
                f"{host}/bundler/{repo}",
            ]
        seconds, rss = run_measured(cmd)
        total += seconds
        peak = max(peak, rss)
    return total, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="size of the image set")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--big-mib",
        type=int,
        default=1024,
        help="size of the one-layer image used for the peak-RSS check (0: skip)",
    )
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument(
        "--bundler", help="command that runs bundler (default: python -m bundler.cli.main)"
    )
    args = parser.parse_args()
    bundler = bundler_command(args.bundler)
    machine = machine_facts()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    work = Path(tempfile.mkdtemp(prefix="bundler-bench-"))
    try:
        layout = work / "layout"
        images = synth.bench_set(layout, args.mib)
        refs = list(images)
        synth.write_index(layout, SET_REF, list(images.values()))
        files = blob_files(layout)
        total_bytes = sum(f.stat().st_size for f in files)
        mib = total_bytes / 2**20
        warm(files)  # the page cache, for everyone alike
        noops = [f"{t}-noop" for t in NOOP_TOOLS]
        results: dict[str, list[float]] = {t: [] for t in (*TOOLS, *noops, "hash1", "hash2")}
        rss: dict[str, int] = {t: 0 for t in TOOLS}
        for run in range(args.runs):
            results["hash1"].append(hash_limit(files, 1))
            results["hash2"].append(hash_limit(files, 2))
            for tool in TOOLS:  # fresh registry for each tool and run
                reg = start_registry("plain", work / f"reg-{tool}-{run}")
                try:
                    seconds, peak = copy_all(tool, layout, refs, reg.host, bundler)
                    if tool in NOOP_TOOLS:
                        noop, _ = copy_all(tool, layout, refs, reg.host, bundler)
                        results[f"{tool}-noop"].append(noop)
                finally:
                    reg.stop()
                    shutil.rmtree(work / f"reg-{tool}-{run}", ignore_errors=True)
                results[tool].append(seconds)
                rss[tool] = max(rss[tool], peak)
        big: dict[str, object] = {}
        if args.big_mib:
            # Memory must not grow with blob size: one image with one large layer.
            big_layout = work / "big"
            synth.write_image(
                big_layout, BIG_REF, [synth.LayerSpec("big", args.big_mib * 2**20, level=0)]
            )
            reg = start_registry("plain", work / "reg-big")
            try:
                for tool in ("skopeo", "bundler"):
                    seconds, peak = copy_all(tool, big_layout, [BIG_REF], reg.host, bundler)
                    big[tool] = {
                        "seconds": round(seconds, 2),
                        "mib_per_s": round(args.big_mib / seconds, 1),
                        "peak_rss_mib": round(peak / 1024, 1),
                    }
            finally:
                reg.stop()
        med = {k: statistics.median(v) for k, v in results.items()}
        report = {
            "machine": {**machine, "load_1m_end": os.getloadavg()[0]},
            "bundler_command": bundler,
            "images": len(refs),
            "blobs": len(files),
            "mib": round(mib, 1),
            "runs": args.runs,
            "seconds_median": {k: round(v, 2) for k, v in med.items()},
            "mib_per_s": {k: round(mib / v, 1) for k, v in med.items()},
            "peak_rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()},
            "per_image_seconds_median": {
                t: round(med[t] / len(refs), 3) for t in ("skopeo", "bundler", *noops)
            },
            "ratio_bundler_vs_skopeo": round(med["skopeo"] / med["bundler"], 2),
            "ratio_bundler_noop_vs_skopeo_noop": round(med["skopeo-noop"] / med["bundler-noop"], 2),
            "ratio_bundler_set_vs_skopeo": round(med["skopeo"] / med["bundler-set"], 2),
            "ratio_bundler_set_vs_hash1": round(med["hash1"] / med["bundler-set"], 2),
            "ratio_bundler_set_vs_hash2": round(med["hash2"] / med["bundler-set"], 2),
            "all_seconds": {k: [round(x, 2) for x in v] for k, v in results.items()},
            "one_large_layer": {"mib": args.big_mib, **big},
        }
        write_report(report, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
