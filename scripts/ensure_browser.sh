#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it; it never
# downloads a browser of its own).
set -euo pipefail
# The path the browser tests launch (tests/browser/conftest.py; CHROMIUM_PATH overrides it).
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] && exit 0
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "chromium not found: installing Debian's chromium package with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
