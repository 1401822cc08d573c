// The conformance suite connects without credentials, and keyward answers every /mcp request
// without an API key with 401. This forwards each request to keyward unchanged (Host and Origin
// included, so the DNS-rebinding checks still see what the suite sent) and adds
// `Authorization: Bearer $KEYWARD_KEY`.
//
//   node auth-proxy.mjs LISTEN_PORT TARGET_PORT      (loopback only; the key from the environment)
import http from "node:http";

const [listenPort, targetPort] = process.argv.slice(2).map(Number);
const key = process.env.KEYWARD_KEY;
if (!listenPort || !targetPort || !key) {
  console.error("usage: KEYWARD_KEY=kw_… node auth-proxy.mjs LISTEN_PORT TARGET_PORT");
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true });
http
  .createServer((req, res) => {
    const headers = { ...req.headers, authorization: `Bearer ${key}` };
    const upstream = http.request(
      { host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", (e) => {
      res.writeHead(502);
      res.end(String(e));
    });
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
  })
  .listen(listenPort, "127.0.0.1", () => console.error(`auth proxy on 127.0.0.1:${listenPort}`));
