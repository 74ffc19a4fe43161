#!/usr/bin/env bash
# Installs headless Chromium, in which a test renders the study report (tests/browser.py). As root on
# Debian/Ubuntu we apt-get it; elsewhere it is skipped with a message and that test skips, except in CI
# (CI=true), where it is an error.
set -euo pipefail
have() { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> apt-get install chromium (the report test renders index.html in it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null || true
fi
have && exit 0
echo "!! Chromium skipped: not installed (Debian/Ubuntu: sudo apt-get install chromium); the browser check of the report skips" >&2
if [ "${CI:-}" = true ]; then echo "!! CI=true: Chromium is required in CI" >&2; exit 1; fi
