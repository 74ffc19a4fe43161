#!/usr/bin/env bash
# Installs FFCV (built from source) into the virtual environment whose bin/ is $1.
# FFCV compiles against OpenCV and libturbojpeg; as root on Debian/Ubuntu we apt-get them.
# Without them (not root, no apt) FFCV is skipped with a message: the `tensor` loader still works.
set -euo pipefail
BIN=${1:-.venv/bin}
if "$BIN/python" -c "import ffcv" 2>/dev/null; then exit 0; fi
libs_present() { pkg-config --exists opencv4 libturbojpeg 2>/dev/null; }
if ! libs_present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> apt-get install libopencv-dev libturbojpeg0-dev pkg-config (for FFCV)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libopencv-dev libturbojpeg0-dev pkg-config >/dev/null
  fi
fi
if ! libs_present; then
  echo "!! FFCV skipped: OpenCV and libturbojpeg development files were not found." >&2
  echo "   Install them (Debian/Ubuntu: sudo apt-get install libopencv-dev libturbojpeg0-dev pkg-config)" >&2
  echo "   then run: $BIN/pip install -e '.[ffcv]'" >&2
  exit 0
fi
echo "==> building FFCV"
# pillow is listed in the extra because FFCV's own metadata forgets it.
"$BIN/pip" install -q -e ".[ffcv]"
