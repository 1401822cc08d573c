#!/usr/bin/env bash
# Checks every GitHub request keyward sends against GitHub's published OpenAPI description
# (npm package @octokit/openapi): the fixtures' exact requests and every tool of
# tools/github.toml (tests/openapi/check_github.mjs says what is checked).
#
#   tests/openapi/run.sh
#
# The description, ajv (JSON Schema) and smol-toml are installed under target/openapi (override
# with KEYWARD_OPENAPI_DIR) on the first run and reused. Needs node and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${KEYWARD_OPENAPI_DIR:-$root/target/openapi}"
packages=("@octokit/openapi@23.0.2" "ajv@8.20.0" "smol-toml@1.9.1")

if [ ! -f "$dir/node_modules/@octokit/openapi/generated/api.github.com.deref.json" ] ||
  [ ! -d "$dir/node_modules/ajv" ] || [ ! -d "$dir/node_modules/smol-toml" ]; then
  npm install --silent --no-audit --no-fund --prefix "$dir" "${packages[@]}" >&2
fi
exec node "$here/check_github.mjs" "$root" "$dir/node_modules"
