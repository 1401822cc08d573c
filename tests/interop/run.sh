#!/usr/bin/env bash
# Interoperability check: drive keyward with the official Python MCP SDK.
#
#   tests/interop/run.sh --install            create the venv and install the SDK, then exit
#   tests/interop/run.sh MODE ARGS...         run tests/interop/python_client.py (see its --help)
#
# The venv lives in target/interop-venv (override with KEYWARD_INTEROP_VENV) and is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${KEYWARD_INTEROP_VENV:-$root/target/interop-venv}"
# The 1.x line of the SDK: Streamable HTTP, legacy SSE and structured tool output.
sdk='mcp>=1.10,<2'

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$sdk"
fi
if [ "${1:-}" = "--install" ]; then
  "$venv/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'
  exit 0
fi
exec "$venv/bin/python" "$here/python_client.py" "$@"
