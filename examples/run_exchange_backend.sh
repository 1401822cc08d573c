#!/usr/bin/env bash
# Run examples/exchange_backend.py in a virtualenv with httpx: target/example-venv (override
# with KEYWARD_EXAMPLE_VENV), created and filled on first use, then reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${KEYWARD_EXAMPLE_VENV:-$root/target/example-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import httpx' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'httpx>=0.27,<1'
fi
exec "$venv/bin/python" "$here/exchange_backend.py" "$@"
