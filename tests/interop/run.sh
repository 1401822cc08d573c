#!/usr/bin/env bash
# Interoperability check: drive keyward with the official Python MCP SDK.
#
#   tests/interop/run.sh --install            create both venvs and install the SDKs, then exit
#   tests/interop/run.sh MODE ARGS...         the 1.x SDK: tests/interop/python_client.py
#                                             (stdio, http, sse; protocol 2025-era, with sessions)
#   tests/interop/run.sh sdk2 MODE ARGS...    the 2.x SDK: tests/interop/python_client_2026.py
#                                             (stdio, http with mode=2026-07-28 or auto)
#
# The 1.x line (`mcp>=1.10,<2`) lives in target/interop-venv, the 2.x line (`mcp>=2.3,<3`) in
# target/interop-venv2 (override with KEYWARD_INTEROP_VENV / KEYWARD_INTEROP_VENV2); both are
# reused. The 2.x SDK still speaks the 2025 revisions, but its client API is new: the existing
# 1.x runs stay as they are, so what 2025-era clients see is checked by a 2025-era client.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv1="${KEYWARD_INTEROP_VENV:-$root/target/interop-venv}"
venv2="${KEYWARD_INTEROP_VENV2:-$root/target/interop-venv2}"

ensure() { # VENV SDK
  if [ ! -x "$1/bin/python" ] || ! "$1/bin/python" -c 'import mcp' 2>/dev/null; then
    python3 -m venv "$1"
    "$1/bin/python" -m pip install --quiet --disable-pip-version-check "$2"
  fi
}

if [ "${1:-}" = "--install" ]; then
  ensure "$venv1" 'mcp>=1.10,<2'
  ensure "$venv2" 'mcp>=2.3,<3'
  "$venv1/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'
  "$venv2/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'
  exit 0
fi
if [ "${1:-}" = "sdk2" ]; then
  shift
  ensure "$venv2" 'mcp>=2.3,<3'
  exec "$venv2/bin/python" "$here/python_client_2026.py" "$@"
fi
ensure "$venv1" 'mcp>=1.10,<2'
exec "$venv1/bin/python" "$here/python_client.py" "$@"
