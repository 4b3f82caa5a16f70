#!/usr/bin/env bash
# The main job, end to end, on the embedded default: OCI layouts and archives, no server.
#
#   vendor:   build the example images, pack the example chart with every image it runs,
#             sign the bundle, export it to an archive (the removable medium)
#   customer: import it (signature checked first) into a staging layout, verify it against the
#             trust policy, approve it, promote it into the internal layout (served as
#             registry.internal.example/platform): images relocated and pinned by digest, the
#             chart's values rewritten, a signed promotion record; show what Argo CD will run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh run
export PATH="$PWD/.tools/bin:$PATH"
OUT="out"
rm -rf "$OUT/images" "$OUT/keys" "$OUT/vendor" "$OUT/demo-bundle.tar" "$OUT/staging" \
    "$OUT/internal" "$OUT/argocd" "$OUT/promoted-chart"
mkdir -p "$OUT/keys"
B=.venv/bin/bundler
json() { .venv/bin/python -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

# Demo keys; their passphrase comes from the environment, as in a pipeline.
export BUNDLER_DEMO_PASSPHRASE="${BUNDLER_DEMO_PASSPHRASE:-demo-only-passphrase}"
for who in vendor alice bob promoter; do
    $B keys generate "$OUT/keys/$who" --passphrase-env BUNDLER_DEMO_PASSPHRASE > /dev/null
done
pass=(--passphrase-env BUNDLER_DEMO_PASSPHRASE)

echo "== vendor"
.venv/bin/python examples/images/synth.py example "$OUT/images" > /dev/null
digest=$($B pack examples/bundle.yaml --to "oci:$OUT/vendor" --output json | json '["digest"]')
echo "packed    $digest  (examples/chart/demo + 4 images; config examples/bundle.yaml)"
again=$($B pack examples/bundle.yaml --to "oci:$OUT/repack" --output json | json '["digest"]')
rm -rf "$OUT/repack"
[ "$again" = "$digest" ] || { echo "packing again gave $again, not $digest" >&2; exit 1; }
echo "repacked  $again  (reproducible)"
$B sign "oci:$OUT/vendor" --key "$OUT/keys/vendor.key" "${pass[@]}" > /dev/null
echo "signed    by $OUT/keys/vendor.key (the bundle and every manifest it pins)"
$B export "oci:$OUT/vendor" --to "archive:$OUT/demo-bundle.tar" > /dev/null
echo "exported  archive:$OUT/demo-bundle.tar"

echo "== customer"
$B import "archive:$OUT/demo-bundle.tar" --to "oci:$OUT/staging" --key "$OUT/keys/vendor.pub"
$B verify "oci:$OUT/staging" --policy examples/trust-policy.yaml || \
    echo "           (refused above, as it must be: the policy also requires an approval)"
$B approve "oci:$OUT/staging" --key "$OUT/keys/alice.key" "${pass[@]}" \
    --policy examples/trust-policy.yaml
$B verify "oci:$OUT/staging" --policy examples/trust-policy.yaml
$B promote "oci:$OUT/staging" --to "oci:$OUT/internal" \
    --serve-as registry.internal.example/platform --policy examples/trust-policy.yaml \
    --key "$OUT/keys/promoter.key" "${pass[@]}" --out "$OUT/argocd"
chart="registry.internal.example/platform/demo:1.0.0"
$B verify "oci:$OUT/internal:$chart" --promotion --key "$OUT/keys/promoter.pub"

echo "== what Argo CD will deploy (helm template of the promoted chart)"
layer=$(.venv/bin/python - "$OUT/internal" "$chart" <<'PY'
import json, sys
root, ref = sys.argv[1], sys.argv[2]
entry = next(m for m in json.load(open(f"{root}/index.json"))["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
manifest = json.load(open(f"{root}/blobs/sha256/{entry['digest'].split(':')[1]}"))
print(f"{root}/blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}")
PY
)
mkdir -p "$OUT/promoted-chart" && cp "$layer" "$OUT/promoted-chart/demo-1.0.0.tgz"
helm template demo "$OUT/promoted-chart/demo-1.0.0.tgz" | grep -E '^\s+image:' | sort -u
echo "Argo CD Application: $OUT/argocd/application.yaml"
