#!/usr/bin/env bash
# Fills the git-ignored .debs/ with what scripts/gpu_check.sh needs on a bare GPU machine (no
# Debian dev packages there, and nothing can be fetched): the dev packages' .deb files from
# Debian's registry, and instead of libboost1.81-dev (10 MB) a .deb of only the Boost headers the
# build includes (~0.8 MB, listed from build/'s dependency files), so that the working tree,
# third_party/ and .debs/ stay under the device tool's 64 MiB. Run after a build here (build/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p .debs .git/info
grep -qx "/.debs/" .git/info/exclude 2>/dev/null || echo "/.debs/" >>.git/info/exclude
(cd .debs && apt-get download libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread \
  libopenblas0 libpcre2-dev libpcre2-8-0 nlohmann-json3-dev libcli11-dev libfmt-dev libfmt9 \
  libgtest-dev liburing-dev liburing2 libxxhash-dev libxxhash0 libgfortran5 pkgconf pkgconf-bin \
  libpkgconf3 2>/dev/null)
[ -f build/build.ninja ] || { echo "make_gpu_debs: build/ first (scripts/build.sh)" >&2; exit 1; }
stage=$(mktemp -d)
mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: nanoflow-boost-subset
Version: 1.81.0
Architecture: amd64
Maintainer: nanoflow
Description: the Boost 1.81 headers NanoFlow's build includes (from libboost1.81-dev)
CONTROL
{ ninja -C build -t deps | grep -o "/usr/include/boost/[^ ]*" | sort -u
  dpkg -L libboost1.81-dev | grep "/cmake/"; } | while read -r f; do
  [ -f "$f" ] && mkdir -p "$stage$(dirname "$f")" && cp "$f" "$stage$f"
done
dpkg-deb --build -Zxz "$stage" .debs/nanoflow-boost-subset_1.81.0_amd64.deb >/dev/null
rm -rf "$stage"
du -sh .debs
