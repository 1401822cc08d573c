//! Section 2: the standard call end to end, seven ways ((a) straight to the upstream, (b) stdio,
//! (c) Streamable HTTP, (d) legacy HTTP+SSE, (e) stdio through a relay, and Streamable HTTP with
//! a minimal client: (f) a 2025-11-25 session, (g) 2026-07-28 stateless requests), at 1, 8 and
//! 64 callers, plus the minimal-client and tiny-answer comparisons that say where (b)'s overhead
//! goes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::json;

use crate::calls::{row, Caller, Replay, Run, ToolCall};
use crate::clients::{RawHttp, SseClient};
use crate::procs::{serve_http, serve_stdio, BenchHome, Logs, Mem, RawStdio};
use crate::report::{delta_ms, delta_us, ms, progress, Table};
use crate::{CALLS, CONCURRENCY, ROW_CAP, TOOL, WARMUP};

/// What section 2 measured; the later sections compare against it.
pub(crate) struct EndToEnd {
    /// Per path letter ('a'..='g') and number of callers.
    pub(crate) rows: HashMap<(char, usize), Run>,
    stdio_minimal: Run,
    http_minimal: Run,
    me_direct: Run,
    me_stdio: Run,
    /// Issue 11's small call: github_get_issue, direct and through stdio.
    pub(crate) issue_direct: Run,
    pub(crate) issue_stdio: Run,
    /// Row (b)'s server after its calls.
    pub(crate) busy_mem: Mem,
    /// Messages on the legacy SSE stream that contained the token marker.
    pub(crate) sse_leaks: usize,
    /// Whether the first of the two servers of row (e) owned the vault.
    owner_socket: bool,
}

pub(crate) async fn section(
    table: &mut Table,
    home: &BenchHome,
    logs: &Logs,
    api_key: &str,
    replays: &HashMap<&'static str, (Replay, Vec<u8>)>,
) -> EndToEnd {
    let measured = measure(home, logs, api_key, replays).await;
    report(table, &measured);
    measured
}

async fn measure(
    home: &BenchHome,
    logs: &Logs,
    api_key: &str,
    replays: &HashMap<&'static str, (Replay, Vec<u8>)>,
) -> EndToEnd {
    let replay = replays[TOOL].0.clone();
    let me_replay = replays["github_get_me"].0.clone();
    let issue_replay = replays["github_get_issue"].0.clone();
    let mut e2e: HashMap<(char, usize), Run> = HashMap::new();
    let http = reqwest::Client::new();
    let direct = Caller::Direct(http.clone(), Arc::new(replay));
    for c in CONCURRENCY {
        progress(format!("(a) direct HTTP, {c} callers"));
        e2e.insert(('a', c), row(&direct, c).await);
    }

    let stdio = serve_stdio(home, &[], logs).await;
    let caller = stdio.caller();
    for c in CONCURRENCY {
        progress(format!("(b) stdio, {c} callers"));
        e2e.insert(('b', c), row(&caller, c).await);
    }
    // Where (b)'s overhead goes: a call with a tiny answer (github_get_me, ~1.6 KB upstream)
    // shows the fixed cost of a call; the rest grows with the size of the upstream answer.
    progress("github_get_me, direct and through stdio, 1 caller");
    let me_direct = row(&Caller::Direct(http.clone(), Arc::new(me_replay)), 1).await;
    let me_stdio = row(
        &Caller::Mcp(stdio.client.peer().clone(), ToolCall::of("github_get_me")),
        1,
    )
    .await;
    // Issue 11's small call: github_get_issue (8 KB upstream), measured against GitHub's own MCP
    // server with the same call.
    progress("github_get_issue, direct and through stdio, 1 caller");
    let issue_direct = row(&Caller::Direct(http.clone(), Arc::new(issue_replay)), 1).await;
    let issue_stdio = row(
        &Caller::Mcp(
            stdio.client.peer().clone(),
            ToolCall::of("github_get_issue"),
        ),
        1,
    )
    .await;
    let busy_mem = Mem::of(stdio.pid);
    stdio.stop().await;
    // (b) and (c) again with a client that is only a few lines (no client library), one caller:
    // what is left of the overhead is the server's.
    progress("stdio with a minimal client, 1 caller");
    let mut raw = RawStdio::spawn(home, &[], logs);
    raw.initialize().await;
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let raw = Arc::new(tokio::sync::Mutex::new((raw, 100)));
    let stdio_minimal = row(&Caller::RawStdio(raw.clone(), ToolCall::of(TOOL)), 1).await;
    if let Ok(raw) = Arc::try_unwrap(raw) {
        raw.into_inner().0.stop().await;
    }

    let server = serve_http(home, logs).await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.base))
        .auth_header(api_key)
        .max_concurrent_requests(256);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let client = ().serve(transport).await.expect("initialize over Streamable HTTP");
    let caller = Caller::Mcp(client.peer().clone(), ToolCall::of(TOOL));
    for c in CONCURRENCY {
        progress(format!("(c) Streamable HTTP, {c} callers"));
        e2e.insert(('c', c), row(&caller, c).await);
    }
    let _ = client.cancel().await;
    progress("Streamable HTTP with a minimal client, 1 caller");
    let raw_http = Caller::RawHttp(
        Arc::new(RawHttp::open(&server.base, api_key).await),
        ToolCall::of(TOOL),
    );
    let http_minimal = row(&raw_http, 1).await;
    for c in CONCURRENCY {
        progress(format!(
            "(f) Streamable HTTP, 2025-11-25 session, minimal client, {c} callers"
        ));
        e2e.insert(('f', c), row(&raw_http, c).await);
    }
    drop(raw_http);
    let stateless = Caller::RawHttp(
        Arc::new(RawHttp::stateless(&server.base, api_key)),
        ToolCall::of(TOOL),
    );
    for c in CONCURRENCY {
        progress(format!(
            "(g) Streamable HTTP, 2026-07-28 stateless, minimal client, {c} callers"
        ));
        e2e.insert(('g', c), row(&stateless, c).await);
    }
    drop(stateless);
    let sse = Arc::new(SseClient::open(&server.base, api_key).await);
    let caller = Caller::Sse(sse.clone(), ToolCall::of(TOOL));
    for c in CONCURRENCY {
        progress(format!("(d) legacy SSE, {c} callers"));
        e2e.insert(('d', c), row(&caller, c).await);
    }
    let sse_leaks = sse.leaks.load(Ordering::Relaxed);
    drop(caller);
    drop(sse);
    server.stop().await;

    let owner = serve_stdio(home, &[], logs).await;
    let relay = serve_stdio(home, &[], logs).await;
    let owner_socket = home.path().join("keyward.sock").exists();
    let caller = relay.caller();
    for c in CONCURRENCY {
        progress(format!(
            "(e) stdio through a non-owner (relay), {c} callers"
        ));
        e2e.insert(('e', c), row(&caller, c).await);
    }
    relay.stop().await;
    owner.stop().await;

    EndToEnd {
        rows: e2e,
        stdio_minimal,
        http_minimal,
        me_direct,
        me_stdio,
        issue_direct,
        issue_stdio,
        busy_mem,
        sse_leaks,
        owner_socket,
    }
}

fn report(table: &mut Table, m: &EndToEnd) {
    let EndToEnd {
        rows: e2e,
        stdio_minimal,
        http_minimal,
        me_direct,
        me_stdio,
        issue_direct,
        issue_stdio,
        owner_socket,
        ..
    } = m;
    let owner_socket = *owner_socket;
    table.section(
        &format!(
            "2. End to end: {TOOL} {{owner, repo, state: open, per_page: 10}}, loopback fake upstream; \
             {WARMUP} warm-up + {CALLS} calls per row"
        ),
        &[
            "path",
            "callers",
            "n",
            "p50",
            "p99",
            "max",
            "calls/s",
            "overhead vs (a): p50",
            "p99",
        ],
    );
    let names = [
        ('a', "(a) direct HTTP with the token (floor)"),
        ('b', "(b) keyward serve, stdio"),
        ('c', "(c) keyward serve --http, Streamable HTTP"),
        ('d', "(d) keyward serve --http, legacy HTTP+SSE"),
        ('e', "(e) stdio through a non-owner (vault relay)"),
        (
            'f',
            "(f) Streamable HTTP, 2025-11-25 session, minimal client",
        ),
        (
            'g',
            "(g) Streamable HTTP, 2026-07-28 stateless, minimal client",
        ),
    ];
    for (k, name) in names {
        for c in CONCURRENCY {
            let r = &e2e[&(k, c)];
            let a = &e2e[&('a', c)];
            if r.lat.n == 0 {
                let mut cells = vec![String::from("—"); 9];
                cells[0] = if c == 1 {
                    name.to_string()
                } else {
                    String::new()
                };
                cells[1] = c.to_string();
                table.row(cells);
                continue;
            }
            let (o50, o99) = if k == 'a' {
                ("—".to_string(), "—".to_string())
            } else {
                (
                    format!("{} ms", delta_ms(r.lat.p50, a.lat.p50)),
                    format!("{} ms", delta_ms(r.lat.p99, a.lat.p99)),
                )
            };
            table.row(vec![
                if c == 1 {
                    name.to_string()
                } else {
                    String::new()
                },
                c.to_string(),
                r.lat.n.to_string(),
                ms(r.lat.p50),
                ms(r.lat.p99),
                ms(r.lat.max),
                format!("{:.0}", r.throughput()),
                o50,
                o99,
            ]);
        }
    }
    for c in CONCURRENCY {
        let (b, e) = (&e2e[&('b', c)], &e2e[&('e', c)]);
        table.row(vec![
            if c == 1 {
                "relay overhead = (e) − (b)".to_string()
            } else {
                String::new()
            },
            c.to_string(),
            String::new(),
            delta_us(e.lat.p50, b.lat.p50),
            delta_us(e.lat.p99, b.lat.p99),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let a1 = &e2e[&('a', 1)];
    for (name, r, floor) in [
        (
            "(b-) stdio, minimal client (no client library)",
            stdio_minimal,
            Some(a1),
        ),
        (
            "(c-) Streamable HTTP, minimal client",
            http_minimal,
            Some(a1),
        ),
        (
            "(a') github_get_me, direct (1.6 KB answer)",
            me_direct,
            None,
        ),
        (
            "(b') github_get_me through stdio",
            me_stdio,
            Some(me_direct),
        ),
        (
            "(a\") github_get_issue, direct (8 KB answer)",
            issue_direct,
            None,
        ),
        (
            "(b\") github_get_issue through stdio",
            issue_stdio,
            Some(issue_direct),
        ),
    ] {
        let (o50, o99) = match floor {
            Some(a) => (
                format!("{} ms", delta_ms(r.lat.p50, a.lat.p50)),
                format!("{} ms", delta_ms(r.lat.p99, a.lat.p99)),
            ),
            None => ("—".into(), "—".into()),
        };
        table.row(vec![
            name.into(),
            "1".into(),
            r.lat.n.to_string(),
            ms(r.lat.p50),
            ms(r.lat.p99),
            ms(r.lat.max),
            format!("{:.0}", r.throughput()),
            o50,
            o99,
        ]);
    }
    let mut failures = Vec::new();
    for ((k, c), r) in e2e
        .iter()
        .map(|((k, c), r)| ((k.to_string(), *c), r))
        .chain([
            (("b-".to_string(), 1), stdio_minimal),
            (("c-".to_string(), 1), http_minimal),
            (("a'".to_string(), 1), me_direct),
            (("b'".to_string(), 1), me_stdio),
            (("a\"".to_string(), 1), issue_direct),
            (("b\"".to_string(), 1), issue_stdio),
        ])
    {
        if r.errors > 0 {
            failures.push(format!(
                "({k}) {c} callers: {} failed calls, first: {}",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            ));
        }
        if r.lat.n < CALLS {
            failures.push(format!(
                "({k}) {c} callers: stopped at the {}-s cap after {} calls",
                ROW_CAP.as_secs(),
                r.lat.n
            ));
        }
    }
    failures.sort();
    if failures.is_empty() {
        table.note("every call of every row succeeded");
    }
    for f in failures {
        table.note(f);
    }
    table.note(
        "(b-)/(c-): (b) and (c) with a client of a few lines instead of rmcp's: the difference \
         is the client library's share of the overhead",
    );
    table.note(
        "(a')/(b'): the same comparison for a call whose answer is tiny: the fixed cost of a call; \
         the rest of (b)'s overhead grows with the upstream answer (parsed, projected, redacted)",
    );
    table.note(
        "(f)/(g): the same minimal client, once in a 2025-11-25 session (Mcp-Session-Id) and once \
         with 2026-07-28 stateless requests (no session: version, capabilities and client info \
         in each request's _meta, Mcp-Method/Mcp-Name headers checked against the body)",
    );
    table.note(format!(
        "(e): the first server owns the vault{}; the second relays each vault operation to it",
        if owner_socket {
            " (keyward.sock present)"
        } else {
            ""
        }
    ));
    table.note(
        "the client, the fake upstream and keyward share the machine's cores; at 64 callers the \
         figures are queueing, not per-call cost",
    );
}
