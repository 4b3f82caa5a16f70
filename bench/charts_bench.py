"""Real charts end to end: what renders, what is bundled, how each image is relocated, how long.

For each chart (a directory) and scenario (extra ``--set``/``-f`` flags): ``bundler images``,
synthetic stand-ins under exactly the rendered references, ``bundler pack`` into an OCI layout,
``bundler sign``, ``bundler promote`` into another layout (served as ``internal.example:5000``),
then Helm renders the promoted chart taken from that layout and every image it runs must be
under the internal prefix and pinned by digest. Prints the markdown table of docs/charts.md.

    .venv/bin/python bench/charts_bench.py ../shared/data/charts/* [--set-for CHART=FLAG ...]

Run by hand; the numbers are for reading side by side in one run, not for asserting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BUNDLER, ROOT, load_synth

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]
from pack_support import rendered_images, stand_ins  # noqa: E402

SERVE_AS = "internal.example:5000/apps"
PASS = "bench"


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout, took


def promoted_chart(layout: Path, name: str) -> bytes:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        ref = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        if ref.startswith(f"{SERVE_AS}/{name}:"):
            digest = entry["digest"].split(":", 1)[1]
            manifest = json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
            layer = manifest["layers"][0]["digest"].split(":", 1)[1]
            return (layout / "blobs" / "sha256" / layer).read_bytes()
    raise SystemExit(f"no promoted chart {name} in {layout}")


def one(chart: Path, flags: list[str], helm: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "BP": PASS, "BUNDLER_HELM": helm}
    synth = load_synth()
    for name in ("vendor", "promoter"):
        run([*BUNDLER, "keys", "generate", str(work / name), "--passphrase-env", "BP"], work, env)
    listed, t_images = run([*BUNDLER, "images", str(chart), *flags, "-o", "json"], work, env)
    images = json.loads(listed)["images"]
    flags = flags + stand_ins(synth, work / "layout", images)
    pack = ["pack", "--chart", str(chart), "--to", f"oci:{work / 'bundle'}"]
    source = ["--source", f"oci:{work / 'layout'}", "--no-upstream"]
    packed, t_pack = run([*BUNDLER, *pack, *source, *flags, "-o", "json"], work, env)
    result = json.loads(packed)
    key = ["--passphrase-env", "BP", "--key"]
    run([*BUNDLER, "sign", f"oci:{work / 'bundle'}", *key, str(work / "vendor.key")], work, env)
    (work / "policy.yaml").write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - name: vendor\n    role: vendor\n    path: {work / 'vendor.pub'}\n"
        f"bundles:\n  - name: {result['name']}\n    require:\n      - role: vendor\n"
    )
    promote = ["promote", f"oci:{work / 'bundle'}", "--to", f"oci:{work / 'internal'}"]
    promote += ["--serve-as", SERVE_AS, "--policy", str(work / "policy.yaml")]
    promote += [*key, str(work / "promoter.key"), "-o", "json"]
    promoted, t_promote = run([*BUNDLER, *promote], work, env)
    record = json.loads(promoted)
    archive = work / "promoted.tgz"
    archive.write_bytes(promoted_chart(work / "internal", result["chart"]["name"]))
    rendered, _ = run([helm, "template", "rel", str(archive)], work, env)
    runs = rendered_images(rendered)
    outside = [r for r in runs if not r.startswith(f"{SERVE_AS}/") or "@sha256:" not in r]
    hows = [h for r in record["relocations"] for h in r["how"]]
    return {
        "chart": f"{result['chart']['name']} {result['chart']['version']}",
        "rendered": len({i["reference"] for i in images if i["rendered"]}),
        "bundled": len(result["images"]),
        "by_values": sum(1 for h in hows if ": values " in h),
        "by_literal": sum(1 for h in hows if ": literal in " in h),
        "outside": outside,
        "seconds": (t_images, t_pack, t_promote),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("charts", nargs="+", type=Path)
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="CHART:NAME:FLAGS",
        help="Also run CHART (folder name) with these space-separated flags.",
    )
    parser.add_argument("--helm", default=str(ROOT / ".tools" / "bin" / "helm"))
    args = parser.parse_args()
    plan: list[tuple[Path, str, list[str]]] = [(c, "default", []) for c in args.charts]
    for spec in args.scenario:
        folder, name, flags = spec.split(":", 2)
        plan += [(c, name, flags.split()) for c in args.charts if c.name == folder]
    print("| chart | values | rendered | bundled | uses by values | uses by literal | "
          "images / pack / promote (s) | promoted chart runs outside |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---|---|")
    failed = False
    for chart, name, flags in plan:
        work = Path(tempfile.mkdtemp(prefix="charts-bench-"))
        try:
            row = one(chart.resolve(), flags, args.helm, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        seconds = " / ".join(f"{s:.1f}" for s in row["seconds"])
        outside = ", ".join(row["outside"]) or "none"
        failed |= bool(row["outside"])
        print(
            f"| {row['chart']} | {name} {' '.join(flags)} | {row['rendered']} | {row['bundled']} "
            f"| {row['by_values']} | {row['by_literal']} | {seconds} | {outside} |"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
