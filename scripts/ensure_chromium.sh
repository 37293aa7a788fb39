#!/usr/bin/env bash
# The browser tests drive a system Chromium through Playwright. Make sure one is there:
# as root on Debian/Ubuntu install the distribution's package; otherwise let Playwright fetch
# its own build; if neither works, say what to install.
set -uo pipefail
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then exit 0; fi
done
if [ -n "${WGA_CHROMIUM:-}" ] && [ -x "$WGA_CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium for the browser tests (apt-get install chromium)" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }) \
    && exit 0
fi
if .venv/bin/python -m playwright install chromium >/dev/null 2>&1; then exit 0; fi
echo "error: no Chromium for the browser tests: install it (sudo apt-get install chromium)" \
     "or point WGA_CHROMIUM at a Chromium binary" >&2
exit 1
