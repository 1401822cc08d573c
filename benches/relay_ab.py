"""Relay overhead of two keyward builds, side by side.

    python3 benches/relay_ab.py OLD_BINARY NEW_BINARY [CALLS_PER_ROUND [ROUNDS]]

For each binary and round: a fresh home whose GitHub API is a tiny server on 127.0.0.1, an owner
`keyward serve` (stdio) and a second one that relays to it, then `github_get_me` through each,
alternating owner and relay call by call. The binaries alternate round by round, so a machine
whose load moves (other builds) weighs on both alike. Prints p50 of each and relay - owner.
Needs nothing but Python 3 and the two binaries; reaches nothing outside the machine.
"""
import json, os, shutil, subprocess, sys, tempfile, threading, time, statistics, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    """GET /user as GitHub answers it (the fields `github_get_me` keeps)."""
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"login": "octocat", "id": 1, "name": "The Octocat", "html_url": "https://github.com/octocat"}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H); port = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()
bins = {"old": sys.argv[1], "new": sys.argv[2]}
N = int(sys.argv[3]) if len(sys.argv) > 3 else 500
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 10

def home_for(b):
    d = tempfile.mkdtemp(); home = os.path.join(d, "home"); os.makedirs(home, mode=0o700)
    open(os.path.join(home, "config.toml"), "w").write(f'[providers.github]\napi_base = "http://127.0.0.1:{port}"\n')
    tok = json.dumps({"access_token": "gho_bench_token_xxxxxxxxxxxx", "token_type": "bearer", "scope": "repo,read:user"})
    subprocess.run([b, "--home", home, "import", "github"], input=tok.encode(), check=True, capture_output=True)
    return home

class Srv:
    def __init__(self, b, home):
        self.p = subprocess.Popen([b, "--home", home, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.id = 0
        self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ab", "version": "1"}})
        self.p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); self.p.stdin.flush()
    def rpc(self, method, params):
        self.id += 1
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}).encode() + b"\n"); self.p.stdin.flush()
        while True:
            line = json.loads(self.p.stdout.readline())
            if line.get("id") == self.id: return line
    def call(self):
        r = self.rpc("tools/call", {"name": "github_get_me", "arguments": {}})
        assert not r["result"].get("isError"), r
    def stop(self):
        self.p.stdin.close(); self.p.wait()

res = {(k, r): [] for k in bins for r in "be"}
for rnd in range(ROUNDS):
    for name, b in bins.items():
        home = home_for(b)
        owner = Srv(b, home)
        owner.call()
        sock = os.path.join(home, "keyward.sock")
        while True:
            try:
                s = socket.socket(socket.AF_UNIX); s.connect(sock); s.close(); break
            except OSError: time.sleep(0.01)
        relay = Srv(b, home)
        for _ in range(50): owner.call(); relay.call()
        # interleave owner and relay calls so both see the same load
        for i in range(N):
            for r, s in (("b", owner), ("e", relay)):
                t = time.perf_counter(); s.call(); res[(name, r)].append(time.perf_counter() - t)
        relay.stop(); owner.stop()
        shutil.rmtree(os.path.dirname(home))
for name in bins:
    b = statistics.median(res[(name, "b")]) * 1e6; e = statistics.median(res[(name, "e")]) * 1e6
    print(f"{name:4} {bins[name]}: owner p50 {b:7.1f} µs  relay p50 {e:7.1f} µs  relay overhead {e - b:+7.1f} µs  (n {len(res[(name,'b')])} each)")
