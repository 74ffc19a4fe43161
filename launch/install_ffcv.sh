#!/usr/bin/env bash
# Installs FFCV (built from source) into the virtual environment whose bin/ is $1.
# FFCV compiles against OpenCV and libturbojpeg; as root on Debian/Ubuntu we apt-get them.
# Without them (not root, no apt) or when the build fails, FFCV is skipped with a message: the `tensor`
# loader still works and the FFCV tests skip. In CI (CI=true) FFCV must be tested, so there it is an error.
set -euo pipefail
BIN=${1:-.venv/bin}
if "$BIN/python" -c "import ffcv" 2>/dev/null; then exit 0; fi
skip() {
  echo "!! FFCV skipped: $1" >&2
  echo "   Install them (Debian/Ubuntu: sudo apt-get install libopencv-dev libturbojpeg0-dev pkg-config)" >&2
  echo "   then run: $BIN/pip install -e '.[ffcv]'" >&2
  if [ "${CI:-}" = true ]; then echo "!! CI=true: FFCV is required in CI" >&2; exit 1; fi
  exit 0
}
libs_present() { pkg-config --exists opencv4 libturbojpeg 2>/dev/null; }
if ! libs_present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> apt-get install libopencv-dev libturbojpeg0-dev pkg-config (for FFCV)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libopencv-dev libturbojpeg0-dev pkg-config >/dev/null
  fi
fi
libs_present || skip "OpenCV and libturbojpeg development files were not found."
echo "==> building FFCV"
# pillow is listed in the extra because FFCV's own metadata forgets it.
"$BIN/pip" install -q -e ".[ffcv]" && "$BIN/python" -c "import ffcv" || skip "its build or import failed (output above)."
