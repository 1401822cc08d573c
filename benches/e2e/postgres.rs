//! Section 7: the PostgreSQL store (issue 13) on loopback, against a private cluster of its own
//! (`tests/support/postgres.rs`; skipped with a note when PostgreSQL is not installed). Alone:
//! `cargo bench --bench e2e -- postgres`.
//!
//! - the store's operations: a token read (`get`: one query, the record opened and its expiry
//!   checked), a `touch` and an audit append (what a tool call adds), by one task, bounded like
//!   section 1 (up to 20 000 operations or 2 s each, after a warm-up);
//! - the standard call through `keyward serve --http` (2026-07-28 stateless requests, the
//!   minimal client of row (g)) on a sled home and on a home whose `[store] url` names the
//!   cluster: one caller (the overhead), then calls/s with one replica and with three (homes of
//!   their own with the same master key, callers spread evenly);
//! - a storm: 300 calls at once, spread over the three replicas, on an expired token — exactly
//!   one refresh must reach the token endpoint; its wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::config::Home;
use keyward::secret::SecretString;
use keyward::vault::postgres::{PgStore, StoreUrl};
use keyward::vault::{AuditEntry, ConnKey, ConnectionStatus, OpenMode, TokenRecord};

use crate::calls::{row, run_calls, Caller, Run, ToolCall};
use crate::clients::RawHttp;
use crate::procs::{serve_http, token_response, BenchHome, HttpChild, Logs};
use crate::report::{lat, ms, progress, us, Lat, Table};
use crate::support::postgres::PgCluster;
use crate::support::{FakeUpstream, CANARY_ACCESS, CANARY_REFRESH};
use crate::{CALLS, GITHUB_SCOPES, TOOL};

/// Time `op` call by call: up to 20 000 iterations or 2 s, after 500 of warm-up.
async fn time_async<F: std::future::Future<Output = ()>>(mut op: impl FnMut() -> F) -> Lat {
    for _ in 0..500 {
        op().await;
    }
    let mut samples = Vec::with_capacity(20_000);
    let started = Instant::now();
    while samples.len() < 20_000
        && (samples.len() < 1000 || started.elapsed() < Duration::from_secs(2))
    {
        let t = Instant::now();
        op().await;
        samples.push(t.elapsed());
    }
    lat(samples)
}

pub(crate) async fn section(table: &mut Table, fake: &FakeUpstream, logs: &Logs) {
    progress("PostgreSQL store: token read, touch, audit append on loopback");
    table.section(
        "7. PostgreSQL store (loopback, one task, per operation)",
        &["operation", "n", "p50", "p99", "max"],
    );
    let Some(cluster) = tokio::task::spawn_blocking(PgCluster::start).await.unwrap() else {
        table.note("skipped: PostgreSQL is not installed (pg_config --bindir)");
        return;
    };
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let home = Home {
        dir: dir.path().join("home"),
    };
    let store = PgStore::open(
        &home,
        &StoreUrl::parse(&url, "the bench's URL").unwrap(),
        OpenMode::Create,
        tokio::sync::broadcast::channel(16).0,
        tokio::sync::watch::channel(0).0,
    )
    .await
    .expect("the bench's store opens");
    let key = ConnKey::new("default", "github", "default").unwrap();
    let now = chrono::Utc::now().timestamp();
    let record = TokenRecord {
        access_token: SecretString::new(format!("{CANARY_ACCESS}.gho_{}", "x".repeat(36))),
        refresh_token: Some(SecretString::new(format!(
            "{CANARY_REFRESH}.ghr_{}",
            "y".repeat(72)
        ))),
        token_type: "bearer".into(),
        expires_at: Some(now + 8 * 3600),
        scopes: vec!["repo".into(), "read:user".into()],
        obtained_at: now,
        status: ConnectionStatus::Active,
    };
    store.put(&key, None, &record).await.unwrap();
    let read = time_async(|| async {
        let conn = store.get(&key).await.unwrap().unwrap();
        assert!(!conn
            .record
            .needs_refresh(chrono::Utc::now().timestamp(), 300));
    })
    .await;
    let touch = time_async(|| async { store.touch(&key).await.unwrap() }).await;
    let entry = AuditEntry::new("default", "tool-call", "ok").connection("github", "default");
    let audit = time_async(|| async { store.audit(&entry).await.unwrap() }).await;
    for (name, l) in [
        ("token read (get + open + expiry check)", read),
        ("touch (last use)", touch),
        ("audit append", audit),
    ] {
        table.row(vec![
            name.to_string(),
            l.n.to_string(),
            us(l.p50),
            us(l.p99),
            us(l.max),
        ]);
    }
    table.note(
        "a private PostgreSQL 15 cluster started by the bench (fsync=off, as the tests run it: \
         reads are unaffected, commits do not wait for the disk)",
    );
    drop(store);
    replicas(table, fake, logs, &cluster).await;
}

/// A home on the store at `url` (`[store] url` in its config), with GitHub connected unless it
/// is a replica of `first` (whose master key it is given).
fn pg_home(fake: &FakeUpstream, url: &str, first: Option<&BenchHome>) -> BenchHome {
    let home = BenchHome::new(fake, &[]);
    let config = home.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[store]\nurl = {url:?}\n"));
    std::fs::write(&config, text).unwrap();
    if let Some(first) = first {
        std::fs::copy(
            first.path().join("master.key"),
            home.path().join("master.key"),
        )
        .unwrap();
    }
    home
}

/// The standard call as 2026-07-28 stateless requests to `server`.
fn stateless(server: &HttpChild, api_key: &str) -> Caller {
    Caller::RawHttp(
        Arc::new(RawHttp::stateless(&server.base, api_key)),
        ToolCall::of(TOOL),
    )
}

/// `callers` callers spread evenly over `servers`, `CALLS` calls in all (after a warm-up):
/// (calls, errors, calls/s).
async fn spread(servers: &[HttpChild], api_key: &str, callers: usize) -> (usize, usize, f64) {
    let each: Vec<Caller> = servers.iter().map(|s| stateless(s, api_key)).collect();
    for caller in &each {
        run_calls(caller, callers / servers.len(), 200, true).await;
    }
    let started = Instant::now();
    let runs: Vec<Run> = futures::future::join_all(each.iter().map(|caller| {
        run_calls(
            caller,
            callers / servers.len(),
            CALLS / servers.len(),
            false,
        )
    }))
    .await;
    let wall = started.elapsed();
    let n: usize = runs.iter().map(|r| r.lat.n).sum();
    let errors = runs.iter().map(|r| r.errors).sum();
    (n, errors, n as f64 / wall.as_secs_f64())
}

async fn replicas(table: &mut Table, fake: &FakeUpstream, logs: &Logs, cluster: &PgCluster) {
    let url = cluster.database();
    let (access, refresh) = (
        format!("{CANARY_ACCESS}.gho_pgbench"),
        format!("{CANARY_REFRESH}.ghr_pgbench"),
    );
    fake.grant_with_refresh("github", &access, &refresh, &["repo", "read:user"], None);
    let token = token_response(&access, &refresh, GITHUB_SCOPES);
    let sled = BenchHome::new(fake, &[]);
    let first = pg_home(fake, &url, None);
    let mut keys = Vec::new();
    for home in [&sled, &first] {
        home.import("github", &token);
        keys.push(
            home.cli(&["users", "add", "default"], "")
                .trim()
                .to_string(),
        );
    }
    let (sled_key, key) = (keys[0].clone(), keys[1].clone());

    table.section(
        "7b. The standard call through keyward serve --http, 2026-07-28 stateless, minimal client",
        &["store", "replicas", "callers", "n", "p50", "p99", "calls/s"],
    );
    progress("sled vs PostgreSQL: one replica, one caller");
    let sled_server = serve_http(&sled, logs).await;
    let sled_run = row(&stateless(&sled_server, &sled_key), 1).await;
    sled_server.stop().await;
    let mut servers = vec![serve_http(&first, logs).await];
    let pg_run = row(&stateless(&servers[0], &key), 1).await;
    for (store, run) in [("sled", &sled_run), ("postgres", &pg_run)] {
        table.row(vec![
            store.into(),
            "1".into(),
            "1".into(),
            run.lat.n.to_string(),
            ms(run.lat.p50),
            ms(run.lat.p99),
            format!("{:.0}", run.throughput()),
        ]);
    }
    let mut errors = sled_run.errors + pg_run.errors;
    let replicas_homes = [
        pg_home(fake, &url, Some(&first)),
        pg_home(fake, &url, Some(&first)),
    ];
    for (count, callers) in [(1, 24), (3, 24)] {
        while servers.len() < count {
            servers.push(serve_http(&replicas_homes[servers.len() - 1], logs).await);
        }
        progress(format!("PostgreSQL: {count} replica(s), {callers} callers"));
        let (n, failed, rate) = spread(&servers, &key, callers).await;
        errors += failed;
        table.row(vec![
            "postgres".into(),
            count.to_string(),
            callers.to_string(),
            n.to_string(),
            "".into(),
            "".into(),
            format!("{rate:.0}"),
        ]);
    }

    // The storm: an expired token, 300 calls at once over the three replicas.
    progress("PostgreSQL: a 300-call storm on an expired token over 3 replicas");
    let (access, refresh) = (
        format!("{CANARY_ACCESS}.gho_pgstorm"),
        format!("{CANARY_REFRESH}.ghr_pgstorm"),
    );
    fake.grant_with_refresh("github", &access, &refresh, &["repo", "read:user"], None);
    first.cli(
        &["import", "github"],
        &serde_json::json!({"access_token": access, "refresh_token": refresh,
            "token_type": "bearer", "scope": GITHUB_SCOPES,
            "expires_at": chrono::Utc::now().timestamp() - 60})
        .to_string(),
    );
    fake.expire_access_token(&access);
    let before = fake.refresh_count("github");
    let callers: Vec<Caller> = servers.iter().map(|s| stateless(s, &key)).collect();
    let started = Instant::now();
    let storm: Vec<Run> = futures::future::join_all(
        callers
            .iter()
            .map(|caller| run_calls(caller, 100, 100, true)),
    )
    .await;
    let wall = started.elapsed();
    let refreshes = fake.refresh_count("github") - before;
    errors += storm.iter().map(|r| r.errors).sum::<usize>();
    for server in servers {
        server.stop().await;
    }
    table.note(format!(
        "storm: 300 calls at once over 3 replicas on an expired token: wall {}, {refreshes} \
         refresh(es) at the token endpoint (must be 1)",
        ms(wall)
    ));
    table.note(format!(
        "every call succeeded: {} ({errors} errors); the PostgreSQL cluster runs with fsync=off",
        if errors == 0 { "yes" } else { "NO" }
    ));
}
