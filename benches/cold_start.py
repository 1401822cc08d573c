#!/usr/bin/env python3
"""Cold start of `keyward serve` (spawn -> `initialize` answered), two or more binaries side by side.

    python3 benches/cold_start.py --home DIR main=/tmp/keyward-main new=target/release/keyward
    python3 benches/cold_start.py --list --home DIR …   # spawn -> the first tools/list answered

The bench's own row (`cargo bench --bench e2e`, section 4) measures one binary, and on a machine
that other work shares it moves with the load; this script alternates the binaries spawn by
spawn, so that each round sees the same load, and prints each binary's median per round. The
client is a few lines: spawn, write `initialize`, read the answer line, close stdin, wait for
the exit (with `--list`, also `notifications/initialized` and `tools/list`, timed to that
answer: what a client waits for before it can offer the tools). DIR must be a keyward home that opens without prompts (`keyward --home DIR init`);
nothing outside the machine is reached. Standard library only.
"""

import argparse
import json
import os
import statistics
import subprocess
import threading
import time

INITIALIZE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "cold-start", "version": "1"},
            },
        }
    )
    + "\n"
).encode()


TOOLS_LIST = (
    json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    + "\n"
    + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    + "\n"
).encode()


def one_start(binary: str, home: str, list_tools: bool) -> float:
    """Milliseconds from spawn to the `initialize` answer (or the `tools/list` one)."""
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    started = time.perf_counter()
    child = subprocess.Popen(
        [binary, "--home", home, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    # The log goes to a pipe as it does under an MCP client; drained so it never blocks.
    drain = threading.Thread(target=child.stderr.read)
    drain.start()
    child.stdin.write(INITIALIZE)
    child.stdin.flush()
    answer = child.stdout.readline()
    if b'"result"' not in answer:
        raise SystemExit(f"{binary}: no initialize result: {answer[:200]!r}")
    if list_tools:
        child.stdin.write(TOOLS_LIST)
        child.stdin.flush()
        answer = child.stdout.readline()
        if b'"tools"' not in answer:
            raise SystemExit(f"{binary}: no tools/list result: {answer[:200]!r}")
    elapsed = (time.perf_counter() - started) * 1000
    child.stdin.close()
    child.wait()
    drain.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="an initialized keyward home folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spawns", type=int, default=20, help="spawns per binary and round")
    parser.add_argument("--list", action="store_true", help="time the first tools/list instead")
    parser.add_argument("binaries", nargs="+", metavar="LABEL=PATH")
    args = parser.parse_args()
    binaries = [spec.split("=", 1) for spec in args.binaries]
    for round_ in range(1, args.rounds + 1):
        times = {label: [] for label, _ in binaries}
        for _ in range(args.spawns):
            for label, path in binaries:
                times[label].append(one_start(path, args.home, args.list))
        medians = " | ".join(
            f"{label} {statistics.median(t):.2f} ms" for label, t in times.items()
        )
        print(f"round {round_}: {medians}", flush=True)


if __name__ == "__main__":
    main()
