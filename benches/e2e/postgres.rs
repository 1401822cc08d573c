//! Section 7: the PostgreSQL store (issue 13) on loopback, against a private cluster of its own
//! (`tests/support/postgres.rs`; skipped with a note when PostgreSQL is not installed): a token
//! read (`get`: one query, the record opened and its expiry checked), a `touch` and an audit
//! append (what a tool call adds), by one task, bounded like section 1 (up to 20 000 operations
//! or 2 s each, after a warm-up).

use std::time::{Duration, Instant};

use keyward::config::Home;
use keyward::secret::SecretString;
use keyward::vault::postgres::{PgStore, StoreUrl};
use keyward::vault::{AuditEntry, ConnKey, ConnectionStatus, OpenMode, TokenRecord};

use crate::report::{lat, progress, us, Lat, Table};
use crate::support::postgres::PgCluster;
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

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

pub(crate) async fn section(table: &mut Table) {
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
    table.note(
        "not yet measured: tool-call overhead with the PostgreSQL store vs sled, HTTP calls/s \
         with 1 and 3 replicas, storm wall time across 3 replicas — they need the store wired \
         into the vault (after the async storage interface lands)",
    );
    drop(store);
}
