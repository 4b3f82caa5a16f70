#!/usr/bin/env bash
# The main job on the embedded default (OCI layout directories, no server): build the example
# images, carry each one oci: -> archive: -> oci:, and check every digest survived.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh run
OUT="${1:-out/demo}"
rm -rf "$OUT" && mkdir -p "$OUT"
.venv/bin/python examples/images/synth.py example "$OUT/vendor"
refs=$(.venv/bin/python - "$OUT/vendor" <<'PY'
import json, sys
for m in json.load(open(f"{sys.argv[1]}/index.json"))["manifests"]:
    print(m["annotations"]["org.opencontainers.image.ref.name"])
PY
)
for ref in $refs; do
    name="${ref##*/}"; name="${name%%:*}"
    .venv/bin/bundler copy -q --from "oci:$OUT/vendor:$ref" --to "archive:$OUT/$name.tar"
    .venv/bin/bundler copy -q --from "archive:$OUT/$name.tar" --to "oci:$OUT/customer:$ref" \
        --output json > "$OUT/$name.json"
    want=$(.venv/bin/python -c 'import json,sys; d=json.load(open(sys.argv[1])); print([m["digest"] for m in d["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"]==sys.argv[2]][0])' "$OUT/vendor/index.json" "$ref")
    got=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$OUT/$name.json")
    [ "$want" = "$got" ] || { echo "digest changed for $ref: $want -> $got" >&2; exit 1; }
    echo "$got  $ref  (oci: -> $OUT/$name.tar -> oci:$OUT/customer)"
done
echo "all example images carried across with identical digests"
