# Sourced by the GPU scripts (gpu_check.sh, gpu_ab.sh): on a bare machine without the Debian dev
# packages, unpacks the .deb files of .debs/ (git-ignored; `apt-get download` them here, see
# gpu_check.sh) into /tmp/nf-deps and points pkg-config, CMake and the loader at them. Sets the
# array cmake_extra (extra CMake arguments); a no-op where .debs/ is empty.
cmake_extra=()
if compgen -G ".debs/*.deb" >/dev/null; then
  deps=/tmp/nf-deps
  mkdir -p "$deps"
  for f in .debs/*.deb; do dpkg -x "$f" "$deps"; done
  lib=$deps/usr/lib/x86_64-linux-gnu
  ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
  export PKG_CONFIG_PATH=$lib/openblas-pthread/pkgconfig:$lib/pkgconfig:$deps/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$deps
  export LD_LIBRARY_PATH=$lib/openblas-pthread:$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cmake_extra+=(-DCMAKE_PREFIX_PATH="$deps/usr" -DPKG_CONFIG_EXECUTABLE="$deps/usr/bin/pkgconf")
fi
