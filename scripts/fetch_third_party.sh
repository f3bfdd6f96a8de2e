#!/usr/bin/env bash
# Fetches the header-only GPU kernel libraries the CUDA backend builds on, pinned, from their PyPI
# wheels into the git-ignored third_party/ (none of their source is committed):
#   FlashInfer (flashinfer-python): batch prefill/decode attention over a paged KV cache, with
#   the CCCL (cub/thrust/libcu++) headers it ships and builds against.
#   NCCL (nvidia-nccl-cu13), header and library, for tensor parallelism over several GPUs; only
#   when neither the CUDA toolkit nor python3's packages already have it.
# Only needed where nvcc is present; the CPU-only build never reads third_party/.
# Without network access it keeps what is there, and the build falls back to our own attention
# kernel when the headers are missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
FLASHINFER_VERSION=0.7.4
NCCL_VERSION=2.30.7
command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]] || exit 0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# extract WHEEL DIR PREFIX...: the wheel's members under the prefixes, into DIR.
extract() {
  python3 - "$@" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith(tuple(sys.argv[3:])):
            z.extract(n, sys.argv[2])
PY
}

# NCCL: the first place CMake looks that has it wins (CMakeLists.txt); fetched only if none does.
nccl=third_party/nccl
if [[ ! -f "$nccl/VERSION" && ! -f /usr/local/cuda/include/nccl.h && ! -f /usr/include/nccl.h ]] &&
   ! python3 -c "import nvidia.nccl" 2>/dev/null; then
  if python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-nccl-cu13==$NCCL_VERSION"; then
    extract "$tmp"/nvidia_nccl_cu13-*.whl "$tmp/n" nvidia/nccl/include/ nvidia/nccl/lib/
    rm -rf "$nccl"
    mkdir -p third_party
    mv "$tmp/n/nvidia/nccl" "$nccl"
    ln -sf libnccl.so.2 "$nccl/lib/libnccl.so"
    echo "$NCCL_VERSION" > "$nccl/VERSION"
    echo "fetch_third_party: NCCL $NCCL_VERSION in $nccl"
  else
    echo "fetch_third_party: could not download nvidia-nccl-cu13 $NCCL_VERSION;" \
         "the CUDA backend will run on one GPU" >&2
  fi
fi

dest=third_party/flashinfer
if [[ -f "$dest/VERSION" && "$(cat "$dest/VERSION")" == "$FLASHINFER_VERSION" ]]; then
  exit 0
fi
if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "flashinfer-python==$FLASHINFER_VERSION"; then
  echo "fetch_third_party: could not download flashinfer-python $FLASHINFER_VERSION;" \
       "the CUDA backend will use its own attention kernel" >&2
  exit 0
fi
extract "$tmp"/flashinfer_python-*.whl "$tmp/x" flashinfer/data/include/flashinfer/ \
  flashinfer/data/cccl/
rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp/x/flashinfer/data/include" "$dest/include"
# FlashInfer builds against the CCCL it ships (newer than the toolkit's), so we do too.
mv "$tmp/x/flashinfer/data/cccl" "$dest/cccl"
echo "$FLASHINFER_VERSION" > "$dest/VERSION"
echo "fetch_third_party: FlashInfer $FLASHINFER_VERSION headers in $dest/include"
