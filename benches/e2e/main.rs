//! What keyward costs an agent, end to end: `cargo bench --bench e2e`.
//!
//! One run prints one table (see BENCHMARKS.md for a run and what each figure is compared
//! against):
//!
//! 1. in-process costs (this process, an own timing loop): seal, open, a token read (vault get +
//!    open + expiry check), and argument validation + request rendering + projection of a
//!    realistic `github_list_pull_requests` answer;
//! 2. the same `github_list_pull_requests` call end to end against the loopback fake upstream
//!    (`tests/support`), with 1, 8 and 64 concurrent callers: (a) straight to the upstream with
//!    the token (the floor), (b) through `keyward serve` over stdio, (c) over Streamable HTTP,
//!    (d) over the legacy HTTP+SSE transport, (e) through a second stdio server that relays its
//!    vault operations to the owner over the unix socket; (b)–(e) as overhead over (a);
//! 3. refresh: a 1000-call storm on an expired token (wall time, refreshes that reached the token
//!    endpoint), and the latency of calls that refresh ahead of expiry against calls that do not;
//! 4. start-up (spawn → `initialize` answered) and the idle memory of a server after 1000 calls;
//! 5. context economy: the size of `tools/list`, and raw upstream bytes against what the model
//!    gets back for the list/read tools;
//! 6. the goals of issue 7, each met or not (nothing here fails anything);
//! 7. the PostgreSQL store on loopback: token read, touch, audit append (issue 13);
//! 8. the token-exchange endpoint: one exchange warm and with a refresh, exchanges/s, a storm of
//!    200 on an expired token. `cargo bench --bench e2e -- exchange` runs this section alone.
//!
//! Everything runs on loopback with the release binary (`CARGO_BIN_EXE_keyward`), bounded in
//! count (warm-up + 2000 calls per row) and in time (20 s per row at most). Every token the bench
//! imports carries the `kwcanary_` marker; the last line says whether any appeared in the output
//! or in a server's log. Criterion detail for the in-process figures: `cargo bench --bench
//! hot_path`.

//!
//! One file per section ([`in_process`], [`end_to_end`], [`refresh`], [`startup`], [`context`],
//! [`goals`], [`postgres`], [`exchange`]), each measuring and then writing its part of the table;
//! what they share is in
//! [`report`] (output, statistics, the machine), [`procs`] (home folders and keyward processes),
//! [`clients`] (the legacy SSE and raw Streamable HTTP clients) and [`calls`] (one call of the
//! standard request, five ways, and the rows of calls). `run` below keeps the order of the
//! measurements (5's probes first: they record the request row (a) replays).

#[path = "../../tests/support/mod.rs"]
mod support;

mod calls;
mod clients;
mod context;
mod end_to_end;
mod exchange;
mod goals;
mod in_process;
mod postgres;
mod procs;
mod refresh;
mod report;
mod startup;

use std::time::{Duration, Instant};

use procs::{connect_github, token_response, BenchHome, Logs};
use report::{machine, progress, say, Table, TRANSCRIPT};
use support::{FakeUpstream, CANARY_ACCESS, CANARY_REFRESH};

/// Measured calls per row, after the warm-up.
const CALLS: usize = 2000;
const WARMUP: usize = 200;
/// No row runs longer than this (it then reports the calls it made).
const ROW_CAP: Duration = Duration::from_secs(20);
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// The request of every end-to-end row (its arguments, like every call's here, are its
/// fixture's: `tests/fixtures/<tool>.json`).
const TOOL: &str = "github_list_pull_requests";
/// Every token the bench hands keyward contains this; none may ever be printed.
const CANARY: &str = "kwcanary_";
const GITHUB_SCOPES: &str = "repo read:user";
const SLACK_SCOPES: &str = "channels:read,channels:history,chat:write,search:read,users:read";
const GOOGLE_SCOPES: &str = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly";

// ---- the run ----------------------------------------------------------------------------------------

fn main() {
    let started = Instant::now();
    for line in [
        "keyward end-to-end benchmark".to_string(),
        "command: cargo bench --bench e2e   (criterion detail: cargo bench --bench hot_path)"
            .to_string(),
    ]
    .into_iter()
    .chain(machine())
    {
        say(line);
    }
    keyward::server::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(started));
}

async fn run(started: Instant) {
    let logs = Logs::default();
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    let mut table = Table::default();
    // `cargo bench --bench e2e -- exchange`: section 8 alone (cargo also passes `--bench`);
    // `-- postgres`: section 7 alone.
    if std::env::args().skip(1).any(|a| a == "exchange") {
        exchange::section(&mut table, &fake, &logs).await;
        finish(started, &table, &logs, None, 0);
        return;
    }
    if std::env::args().skip(1).any(|a| a == "postgres") {
        postgres::section(&mut table, &fake, &logs).await;
        finish(started, &table, &logs, None, 0);
        return;
    }

    // The main home: GitHub, Slack and Google connected; an HTTP user.
    progress("setting up a home folder against the fake upstream");
    let home = BenchHome::new(&fake, &[]);
    connect_github(&fake, &home, "bench");
    for (provider, scopes, tag) in [
        ("slack", SLACK_SCOPES, "xoxp-bench"),
        ("google", GOOGLE_SCOPES, "ya29.bench"),
    ] {
        let access = format!("{CANARY_ACCESS}.{tag}");
        let list: Vec<&str> = scopes.split([' ', ',']).collect();
        fake.grant(provider, &access, &list, None);
        home.import(
            provider,
            &token_response(&access, &format!("{CANARY_REFRESH}.{tag}"), scopes),
        );
    }
    // The HTTP user is `default`, the user the connections above belong to (and the stdio
    // servers' default), so every row uses the same connection.
    let api_key = home
        .cli(&["users", "add", "default"], "")
        .trim()
        .to_string();
    assert!(api_key.starts_with("kw_"), "users add prints a key");

    // 5 is measured first: it records the standard request that row (a) replays.
    let context = context::measure(&fake, &home, &logs).await;
    let inproc = in_process::section(&mut table, &context.replays[TOOL].1).await;
    let e2e = end_to_end::section(&mut table, &home, &logs, &api_key, &context.replays).await;
    let refresh = refresh::section(&mut table, &fake, &logs, &e2e.rows[&('b', 1)]).await;
    let startup = startup::section(&mut table, &home, &logs, &e2e.busy_mem).await;
    context::report(&mut table, &context);
    goals::section(&mut table, &inproc, &e2e, &refresh, &startup, &context);
    postgres::section(&mut table, &fake, &logs).await;
    exchange::section(&mut table, &fake, &logs).await;
    finish(started, &table, &logs, Some(&api_key), e2e.sse_leaks);
    drop(fake);
}

/// Print the table, then the leak check: this output, every server's stderr, the legacy SSE
/// stream (`sse_leaks`), for the canary marker and the HTTP user's `api_key`.
fn finish(started: Instant, table: &Table, logs: &Logs, api_key: Option<&str>, sse_leaks: usize) {
    say("");
    for line in table.render() {
        say(line);
    }
    let transcript = TRANSCRIPT.lock().unwrap().clone();
    let has_key = |text: &str| api_key.is_some_and(|key| text.contains(key));
    let leaked_output = transcript.contains(CANARY) || has_key(&transcript);
    let leaked_logs = logs.contains(CANARY) || api_key.is_some_and(|key| logs.contains(key));
    if leaked_output || leaked_logs || sse_leaks > 0 {
        say(format!(
            "LEAK: a token or API key appeared ({}{}{})",
            if leaked_output { "in this output " } else { "" },
            if leaked_logs { "in a server log " } else { "" },
            if sse_leaks > 0 {
                "on the SSE stream"
            } else {
                ""
            }
        ));
    } else {
        say(
            "leak check: none of the imported tokens (each carries the canary marker) and no API \
             key appeared in this output, in any server's stderr or on the legacy SSE stream",
        );
    }
    say(format!(
        "total run time {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}
