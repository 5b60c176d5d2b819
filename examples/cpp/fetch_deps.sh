#!/usr/bin/env bash
# Fetch what the C++ example needs besides the system's compiler, CMake, libpng, libjpeg and
# OpenSSL: ONNX Runtime's C/C++ headers and nlohmann/json (Debian trixie's packages, MIT), and the
# ONNX Runtime library of the installed `onnxruntime` Python wheel. See docs/cpp.md.
#
#   examples/cpp/fetch_deps.sh [DEST]        (default DEST: examples/cpp/deps, gitignored)
#
# DEST then holds usr/include/onnxruntime/*.h, usr/include/nlohmann/json.hpp and
# lib/libonnxruntime.so{,.1,.1.X.Y}; configure with `cmake -DONNXRUNTIME_ROOT=DEST`.
#
# apt runs with a private state folder (DEST/apt): the system's sources, package lists and cache
# are neither read nor changed, and nothing is installed (dpkg -x only unpacks the .debs).
# Environment: PYTHON (the interpreter whose onnxruntime wheel to use; default python3),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_KEYRING (default
# /usr/share/keyrings/debian-archive-keyring.gpg).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="${1:-$HERE/deps}"
PYTHON="${PYTHON:-python3}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING="${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
PACKAGES=(libonnxruntime-dev nlohmann-json3-dev)

die() { echo "fetch_deps.sh: $*" >&2; exit 1; }

command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian/Ubuntu system (or provide the headers yourself, see docs/cpp.md)"
command -v dpkg >/dev/null || die "dpkg not found"
[ -r "$KEYRING" ] || die "Debian archive keyring $KEYRING not found (apt-get install debian-archive-keyring, or set DEBIAN_KEYRING)"

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
APT="$DEST/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/parts" "$APT/debs"
cat > "$APT/parts/trixie.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: $KEYRING
SOURCES

APT_OPTS=(
  -o "Dir::State=$APT"
  -o "Dir::State::Lists=$APT/lists"
  -o "Dir::State::status=/dev/null"
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$APT/parts"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$APT/parts"
  -o "Dir::Cache=$APT/cache"
  -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none"
)

echo "== apt-get update (private state in $APT)"
apt-get "${APT_OPTS[@]}" -q update || die "apt-get update failed: is $MIRROR reachable?"
echo "== apt-get download ${PACKAGES[*]}"
(cd "$APT/debs" && rm -f ./*.deb && apt-get "${APT_OPTS[@]}" -q download "${PACKAGES[@]}") \
  || die "apt-get download ${PACKAGES[*]} failed"
for deb in "$APT"/debs/*.deb; do
  echo "   unpacking $(basename "$deb")"
  dpkg -x "$deb" "$DEST"
done
# The package's usr/lib holds only a dangling libonnxruntime.so link and CMake/pkg-config files
# for a system-wide install; the library comes from the wheel (below), so drop them.
rm -rf "$DEST/usr/lib"
[ -f "$DEST/usr/include/onnxruntime/onnxruntime_cxx_api.h" ] || die "libonnxruntime-dev did not provide usr/include/onnxruntime/onnxruntime_cxx_api.h"
[ -f "$DEST/usr/include/nlohmann/json.hpp" ] || die "nlohmann-json3-dev did not provide usr/include/nlohmann/json.hpp"

echo "== ONNX Runtime library from the onnxruntime wheel of $PYTHON"
CAPI="$("$PYTHON" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')" \
  || die "$PYTHON cannot import onnxruntime: pip install onnxruntime (or set PYTHON)"
shopt -s nullglob
LIBS=("$CAPI"/libonnxruntime.so.1.*)
shopt -u nullglob
[ "${#LIBS[@]}" -eq 1 ] || die "expected one libonnxruntime.so.1.X.Y in $CAPI, found ${#LIBS[@]}"
LIB="${LIBS[0]}"
mkdir -p "$DEST/lib"
rm -f "$DEST"/lib/libonnxruntime.so*
cp "$LIB" "$DEST/lib/"
ln -s "$(basename "$LIB")" "$DEST/lib/libonnxruntime.so.1"
ln -s libonnxruntime.so.1 "$DEST/lib/libonnxruntime.so"
echo "$(basename "$LIB")" > "$DEST/lib/ONNXRUNTIME_WHEEL_LIBRARY"

echo "== done: $DEST"
echo "   packages: $(cd "$APT/debs" && ls ./*.deb | sed 's|^./||' | tr '\n' ' ')"
echo "   library: $DEST/lib/$(basename "$LIB")"
echo "   configure: cmake -S examples/cpp -B build/cpp -DONNXRUNTIME_ROOT=$DEST"
