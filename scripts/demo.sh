#!/usr/bin/env bash
# The main job on the embedded default (OCI layout directories, no server):
#   1. build the example images into an OCI layout (no internet needed),
#   2. pack the example chart and every image it runs into one bundle, written as an archive,
#   3. sign it with a freshly made vendor key (the signature travels inside the archive),
#   4. carry the archive across (archive: -> oci:), verify it there and inspect what arrived,
#   5. check the bundle digest survived and that packing again gives the same digest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh run
OUT="out"
rm -rf "$OUT/images" "$OUT/demo-bundle.tar" "$OUT/customer" "$OUT/demo-keys"
mkdir -p "$OUT/demo-keys"
.venv/bin/python examples/images/synth.py example "$OUT/images"

# The completeness check renders the chart with Helm (installed by scripts/setup.sh).
render=(--helm .tools/bin/helm)

packed=$(.venv/bin/bundler pack examples/bundle.yaml "${render[@]}" \
    --to "archive:$OUT/demo-bundle.tar" --output json)
digest=$(printf '%s' "$packed" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
echo "packed   $digest  archive:$OUT/demo-bundle.tar"

# A demo key: its passphrase comes from the environment, as it would in a release pipeline.
export BUNDLER_DEMO_PASSPHRASE="${BUNDLER_DEMO_PASSPHRASE:-demo-only-passphrase}"
.venv/bin/bundler keys generate "$OUT/demo-keys/vendor" --passphrase-env BUNDLER_DEMO_PASSPHRASE \
    > /dev/null
.venv/bin/bundler sign "archive:$OUT/demo-bundle.tar" --key "$OUT/demo-keys/vendor.key" \
    --passphrase-env BUNDLER_DEMO_PASSPHRASE > /dev/null
echo "signed   $digest  with $OUT/demo-keys/vendor.key"

arrived=$(.venv/bin/bundler copy --from "archive:$OUT/demo-bundle.tar" --to "oci:$OUT/customer" \
    --output json)
got=$(printf '%s' "$arrived" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
[ "$got" = "$digest" ] || { echo "bundle digest changed in transit: $digest -> $got" >&2; exit 1; }
echo "carried  $got  oci:$OUT/customer"
.venv/bin/bundler verify "oci:$OUT/customer" --key "$OUT/demo-keys/vendor.pub"

.venv/bin/bundler inspect "oci:$OUT/customer"

again=$(.venv/bin/bundler pack examples/bundle.yaml "${render[@]}" --to "oci:$OUT/repack" \
    --output json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
rm -rf "$OUT/repack"
[ "$again" = "$digest" ] || { echo "packing again gave $again, not $digest" >&2; exit 1; }
echo "repacked $again  (reproducible)"
