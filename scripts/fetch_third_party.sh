#!/usr/bin/env bash
# Fetches the header-only GPU kernel libraries the CUDA backend builds on, pinned, from their PyPI
# wheels into the git-ignored third_party/ (none of their source is committed):
#   FlashInfer (flashinfer-python): batch prefill/decode attention over a paged KV cache, with
#   the CCCL (cub/thrust/libcu++) headers it ships and builds against.
# Only needed where nvcc is present; the CPU-only build never reads third_party/.
# Without network access it keeps what is there, and the build falls back to our own attention
# kernel when the headers are missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
FLASHINFER_VERSION=0.7.4
dest=third_party/flashinfer
if [[ -f "$dest/VERSION" && "$(cat "$dest/VERSION")" == "$FLASHINFER_VERSION" ]]; then
  exit 0
fi
command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]] || exit 0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "flashinfer-python==$FLASHINFER_VERSION"; then
  echo "fetch_third_party: could not download flashinfer-python $FLASHINFER_VERSION;" \
       "the CUDA backend will use its own attention kernel" >&2
  exit 0
fi
python3 - "$tmp"/flashinfer_python-*.whl "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith(("flashinfer/data/include/flashinfer/", "flashinfer/data/cccl/")):
            z.extract(n, sys.argv[2])
PY
rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp/x/flashinfer/data/include" "$dest/include"
# FlashInfer builds against the CCCL it ships (newer than the toolkit's), so we do too.
mv "$tmp/x/flashinfer/data/cccl" "$dest/cccl"
echo "$FLASHINFER_VERSION" > "$dest/VERSION"
echo "fetch_third_party: FlashInfer $FLASHINFER_VERSION headers in $dest/include"
