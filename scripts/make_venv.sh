#!/usr/bin/env bash
# Create the project's virtual environment with a Python >= 3.11, or say exactly what is missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: no Python found ('$python'); install Python 3.11 or newer" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $("$python" --version 2>&1) is too old; wga needs Python 3.11 or newer" \
       "(run: make PYTHON=/path/to/python3.11 ...)" >&2
  exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "venv module missing: installing python${version}-venv with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python${version}-venv" \
      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python${version}-venv"; }
    "$python" -m venv "$venv"
  else
    echo "error: '$python -m venv' failed; install the venv module" \
         "(Debian/Ubuntu: sudo apt-get install python${version}-venv) and run make again" >&2
    exit 1
  fi
fi
