//! The HTTP server's limits, against the real binary on 127.0.0.1:0: the header read timeout and
//! the cap on unauthenticated connections (raw TCP, so the tests control exactly what is sent),
//! the cap on sessions per user, the API key cache and its invalidation across processes, and
//! a panic while a request holds a shared lock.
//!
//! Every wait is bounded and fails instead of hanging; the one "nothing happens" check (a
//! connection beyond the cap is not answered yet) cannot be answered on a correct server
//! whatever the load, because nothing frees a place until the test does.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward::config::Home;
use keyward::vault::{users, OpenMode, Vault};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::home::{home_with, Kw};
use crate::support::mcp::*;
use crate::support::FakeUpstream;

/// Generous bound for anything that must happen.
const BOUND: Duration = Duration::from_secs(30);

/// `keyward serve --http 127.0.0.1:0` with its log collected; killed on drop.
struct Server {
    child: Child,
    base: String,
    addr: String,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Start the binary with `[server]` settings appended to the home's config.toml.
    fn start(kw: &Kw, server_toml: &str, env: &[(&str, &str)]) -> Server {
        let config = kw.home().join("config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap_or_default();
        text.push_str("\n[server]\n");
        text.push_str(server_toml);
        std::fs::write(&config, text).unwrap();
        let mut command = kw.command(&["serve", "--http", "127.0.0.1:0"]);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward serve --http");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                if let Some(rest) = text.split("serving MCP on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
                sink.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let addr = rx.recv_timeout(BOUND).unwrap_or_else(|_| {
            panic!(
                "the server did not start: {}",
                String::from_utf8_lossy(&log.lock().unwrap())
            )
        });
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Kw home with alice connected to a fake GitHub, and alice's API key.
async fn home_with_alice() -> (FakeUpstream, Kw, String) {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("alice", "default")]);
    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    (up, kw, key)
}

// ---- raw HTTP/1.1 ------------------------------------------------------------------------------

/// Read one response (head and a `content-length` body) from `stream`, within the bound.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    tokio::time::timeout(BOUND, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read a response");
            assert!(n > 0, "the connection closed before a response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read a body");
            assert!(n > 0, "the connection closed in the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        (head, body)
    })
    .await
    .expect("a response within the bound")
}

/// Wait (bounded) until the server closes `stream`; what it sent before closing is returned.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(BOUND, async {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection")
}

fn healthz_request() -> &'static [u8] {
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
}

/// An authenticated request that keeps its connection: a message for a session that does not
/// exist (404 after authentication).
fn authenticated_request(key: &str) -> Vec<u8> {
    format!(
        "POST /messages?sessionId=none HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \
         {key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

// ---- MCP over plain requests -------------------------------------------------------------------

fn mcp_post(base: &str, key: &str, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .timeout(BOUND)
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

/// initialize + notifications/initialized; the new session's id.
async fn open_session(base: &str, key: &str) -> String {
    let session = initialize(base, key).await;
    assert_eq!(initialized(base, key, &session).await.unwrap(), 202);
    session
}

/// initialize alone; the new session's id.
async fn initialize(base: &str, key: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let response = mcp_post(base, key, None, &init).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    response.text().await.unwrap();
    session
}

/// The status of `notifications/initialized` on `session`.
async fn initialized(base: &str, key: &str, session: &str) -> reqwest::Result<u16> {
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = mcp_post(base, key, Some(session), &initialized)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// The status of a `ping` on `session` (the body is read to its end).
async fn ping(base: &str, key: &str, session: &str) -> u16 {
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let response = mcp_post(base, key, Some(session), &body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if status == 200 {
        assert!(text.contains("\"result\""), "{text}");
    }
    status
}

/// A legacy SSE session: the response (its event stream) and the endpoint to post to.
async fn open_legacy(base: &str, key: &str) -> (reqwest::Response, String) {
    let mut response = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let endpoint = tokio::time::timeout(BOUND, async {
        loop {
            let chunk = response.chunk().await.unwrap().expect("the endpoint event");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = seen.lines().find(|l| l.starts_with("data: /messages")) {
                if seen.contains("\n\n") {
                    return line["data: ".len()..].to_string();
                }
            }
        }
    })
    .await
    .expect("the endpoint event within the bound");
    (response, endpoint)
}

async fn legacy_ping(base: &str, key: &str, endpoint: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}{endpoint}"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .timeout(BOUND)
        .body(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wait (bounded) for an event stream to end.
async fn stream_ends(mut response: reqwest::Response) {
    tokio::time::timeout(BOUND, async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await
    .expect("the event stream ends");
}

// ---- the tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
    let (_up, kw, key) = home_with_alice().await;
    let server = Server::start(&kw, "header_read_timeout_ms = 300\n", &[]);
    // An event stream is a response in progress, not an idle connection: it outlives the timeout.
    let (mut events, endpoint) = open_legacy(&server.base, &key).await;

    // One connection says nothing, one stops in the middle of its headers.
    let mut silent = TcpStream::connect(&server.addr).await.unwrap();
    let mut half = TcpStream::connect(&server.addr).await.unwrap();
    half.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app")
        .await
        .unwrap();
    for stream in [&mut silent, &mut half] {
        let sent = closed_by_server(stream).await;
        let text = String::from_utf8_lossy(&sent);
        assert!(!text.contains(" 200 "), "{text}");
    }
    // Both were cut after the timeout; the stream opened before them still carries answers.
    assert_eq!(legacy_ping(&server.base, &key, &endpoint).await, 202);
    tokio::time::timeout(BOUND, async {
        let mut seen = String::new();
        while !seen.contains("\"id\":9") {
            let chunk = events
                .chunk()
                .await
                .unwrap()
                .expect("the stream is still open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the ping's answer on the event stream");
    // The server itself is fine.
    let mut probe = TcpStream::connect(&server.addr).await.unwrap();
    probe.write_all(healthz_request()).await.unwrap();
    let (head, body) = read_response(&mut probe).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn unauthenticated_connections_wait_for_a_place_and_authenticated_ones_carry_on() {
    let (_up, kw, key) = home_with_alice().await;
    // A long header timeout: in this test only the test itself frees a place.
    let server = Server::start(
        &kw,
        "header_read_timeout_ms = 120000\nmax_unauthenticated_connections = 3\n",
        &[],
    );

    // An authenticated client with a keep-alive connection.
    let mut client = TcpStream::connect(&server.addr).await.unwrap();
    client
        .write_all(&authenticated_request(&key))
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");

    // Three half-sent requests take every place (they are first in the accept queue).
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A fourth connection, with a whole request, is not served while they hold the places.
    let mut waiting = TcpStream::connect(&server.addr).await.unwrap();
    waiting.write_all(healthz_request()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a connection beyond max_unauthenticated_connections was served at once"
    );

    // The authenticated client is not held up.
    client
        .write_all(&authenticated_request(&key))
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");

    // One slow client finishes: it is answered and closed, and its place goes to the waiting one.
    slow[0].write_all(b"\r\n").await.unwrap();
    let (head, body) = read_response(&mut slow[0]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "ok\n");
    closed_by_server(&mut slow[0]).await;
    let (head, body) = read_response(&mut waiting).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn healthz_answers_again_once_the_slow_connections_time_out() {
    let (_up, kw, _key) = home_with_alice().await;
    let server = Server::start(
        &kw,
        "header_read_timeout_ms = 500\nmax_unauthenticated_connections = 4\n",
        &[],
    );
    // Far more half-sent requests than places.
    let mut slow = Vec::new();
    for _ in 0..12 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let mut probe = TcpStream::connect(&server.addr).await.unwrap();
    probe.write_all(healthz_request()).await.unwrap();
    let (head, body) = read_response(&mut probe).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    for stream in &mut slow {
        closed_by_server(stream).await;
    }
}

#[tokio::test]
async fn one_key_keeps_at_most_max_sessions_and_loses_the_least_recently_used() {
    let (_up, kw, key) = home_with_alice().await;
    let server = Server::start(&kw, "max_sessions_per_user = 3\n", &[]);
    let base = server.base.clone();

    // A legacy SSE session counts like the others.
    let (legacy, endpoint) = open_legacy(&base, &key).await;
    let s1 = open_session(&base, &key).await;
    let s2 = open_session(&base, &key).await;
    // Using the legacy session makes s1 the least recently used.
    assert_eq!(legacy_ping(&base, &key, &endpoint).await, 202);
    let s3 = open_session(&base, &key).await;
    assert_eq!(ping(&base, &key, &s1).await, 404, "s1 was evicted");
    assert_eq!(ping(&base, &key, &s2).await, 200);
    assert_eq!(legacy_ping(&base, &key, &endpoint).await, 202);
    assert_eq!(ping(&base, &key, &s3).await, 200);

    // Ten more: each one evicts the least recently used; three stay.
    let mut newer = Vec::new();
    for _ in 0..10 {
        newer.push(open_session(&base, &key).await);
    }
    stream_ends(legacy).await;
    assert_eq!(legacy_ping(&base, &key, &endpoint).await, 404);
    for gone in [&s2, &s3].into_iter().chain(&newer[..7]) {
        assert_eq!(ping(&base, &key, gone).await, 404);
    }
    for alive in &newer[7..] {
        assert_eq!(ping(&base, &key, alive).await, 200);
    }

    // The CLI reaches the server's vault through its socket; once it has exited the key is dead.
    kw.ok(&["users", "remove", "alice"], "");
    let refused = mcp_post(
        &base,
        &key,
        Some(&newer[9]),
        &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(eventually(30, || server.log().contains("least recently used")).await);
}

// Multi-threaded: the owner serves the CLI command below on the runtime's workers while the
// test's own thread waits for the command.
#[tokio::test(flavor = "multi_thread")]
async fn users_changes_reach_every_process_that_watches_them() {
    let kw = Kw::new();
    let home = Home { dir: kw.home() };
    let owner = Vault::open(&home, OpenMode::Create).await.unwrap();
    let alice = users::add(&owner, "alice").await.unwrap();
    let alice = users::key_hash(alice.expose());
    let relayed = Vault::open(&home, OpenMode::Existing).await.unwrap();
    assert!(owner.is_owner() && !relayed.is_owner());
    let mut here = owner.watch_users();
    let mut there = relayed.watch_users();
    let keys = users::KeyCache::new(relayed.clone());
    // The owner's first notice to a new subscriber: from here on every change reaches it.
    tokio::time::timeout(BOUND, there.changed())
        .await
        .expect("the relay subscribes within the bound")
        .unwrap();
    assert_eq!(keys.lookup(&alice).await.unwrap().as_deref(), Some("alice"));

    // Another process (the CLI, relayed to the owner) removes alice. The owner knows when the
    // command returns; the relayed process hears of it and its cache forgets the key.
    kw.ok(&["users", "remove", "alice"], "");
    assert!(here.has_changed().unwrap(), "the owner saw the removal");
    tokio::time::timeout(BOUND, there.changed())
        .await
        .expect("the relay hears of the removal")
        .unwrap();
    assert_eq!(keys.lookup(&alice).await.unwrap(), None);

    // A user added through the relayed process is seen by the owner at once.
    here.borrow_and_update();
    let bob = users::add(&relayed, "bob").await.unwrap();
    assert!(here.has_changed().unwrap(), "the owner saw the addition");
    assert_eq!(
        keys.lookup(&users::key_hash(bob.expose()))
            .await
            .unwrap()
            .as_deref(),
        Some("bob")
    );
}

#[tokio::test]
async fn a_panic_while_holding_the_session_table_breaks_no_later_request() {
    let (_up, kw, key) = home_with_alice().await;
    let server = Server::start(&kw, "", &[("KEYWARD_TEST_PANIC_AT", "session-owners")]);
    let base = server.base.clone();

    let first = initialize(&base, &key).await;
    // The first request naming a session panics while it holds the session table's lock.
    let broken = initialized(&base, &key, &first).await;
    assert!(broken.is_err(), "the hook did not fire: {broken:?}");
    assert!(
        eventually(30, || server
            .log()
            .contains("keyward-test-hook: panic at session-owners"))
        .await
    );

    // Every later request works: the old session, a new one, the legacy transport.
    assert_eq!(initialized(&base, &key, &first).await.unwrap(), 202);
    assert_eq!(ping(&base, &key, &first).await, 200);
    let second = open_session(&base, &key).await;
    assert_eq!(ping(&base, &key, &second).await, 200);
    let (_legacy, endpoint) = open_legacy(&base, &key).await;
    assert_eq!(legacy_ping(&base, &key, &endpoint).await, 202);
}

#[test]
fn a_limit_of_zero_is_refused_with_the_fix() {
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    std::fs::write(
        kw.home().join("config.toml"),
        "[server]\nmax_sessions_per_user = 0\n",
    )
    .unwrap();
    let refused = kw.run(&["serve", "--http", "127.0.0.1:0"], "");
    assert_ne!(refused.code(), Some(0));
    assert!(
        refused.stderr().contains("max_sessions_per_user = 0")
            && refused.stderr().contains("at least 1"),
        "{}",
        refused.stderr()
    );
}
