//! The PostgreSQL store itself (`keyward::vault::postgres`) against a real PostgreSQL: each test
//! takes a fresh database of the shared cluster (`tests/support/postgres.rs`), and a "process"
//! is one `PgStore` with its own home folder (the master key copied between them, as replicas
//! get it). Without PostgreSQL these tests say so and pass, except under `CI=true`.

use std::time::Duration;

use keyward::config::Home;
use keyward::error::Error;
use keyward::secret::SecretString;
use keyward::vault::clients::LastExchange;
use keyward::vault::postgres::{PgStore, StoreUrl};
use keyward::vault::transfer::{self, Location};
use keyward::vault::{AuditEntry, ConnKey, ConnectionStatus, OpenMode, TokenRecord};

use crate::support::mcp::eventually;
use crate::support::postgres;
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

/// One "process": a home folder and the store opened from it.
struct Replica {
    _dir: tempfile::TempDir,
    home: Home,
    store: PgStore,
    changes: tokio::sync::broadcast::Receiver<ConnKey>,
    users: tokio::sync::watch::Receiver<u64>,
}

fn new_home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home {
        dir: dir.path().join("home"),
    };
    (dir, home)
}

async fn open_at(
    url: &str,
    dir: tempfile::TempDir,
    home: Home,
    mode: OpenMode,
) -> Result<Replica, Error> {
    let url = StoreUrl::parse(url, "the test's URL")?;
    let changes = tokio::sync::broadcast::channel(1024).0;
    let users = tokio::sync::watch::channel(0).0;
    let (rx, urx) = (changes.subscribe(), users.subscribe());
    let store = PgStore::open(&home, &url, mode, changes, users).await?;
    Ok(Replica {
        _dir: dir,
        home,
        store,
        changes: rx,
        users: urx,
    })
}

/// The first replica of a store: creates the keyring and its home's master key.
async fn first(url: &str) -> Replica {
    let (dir, home) = new_home();
    open_at(url, dir, home, OpenMode::Create).await.unwrap()
}

/// Another replica: its own home, with the first one's master key.
async fn another(url: &str, of: &Replica) -> Replica {
    let (dir, home) = new_home();
    home.create().unwrap();
    std::fs::copy(of.home.key_file(), home.key_file()).unwrap();
    open_at(url, dir, home, OpenMode::Existing).await.unwrap()
}

fn record(tag: &str) -> TokenRecord {
    TokenRecord {
        access_token: SecretString::new(format!("{CANARY_ACCESS}.{tag}")),
        refresh_token: Some(SecretString::new(format!("{CANARY_REFRESH}.{tag}"))),
        token_type: "bearer".into(),
        expires_at: Some(chrono::Utc::now().timestamp() + 3600),
        scopes: vec!["repo".into()],
        obtained_at: chrono::Utc::now().timestamp(),
        status: ConnectionStatus::Active,
    }
}

fn key(user: &str, provider: &str) -> ConnKey {
    ConnKey::new(user, provider, "default").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_users_and_audit_round_trip_with_compare_and_swap() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    let a = first(&url).await;
    assert!(
        a.store.created.iter().any(|c| c.contains("master key")),
        "{:?}",
        a.store.created
    );
    let k = key("alice", "github");
    assert!(a.store.get(&k).await.unwrap().is_none());

    // Create, then compare-and-swap on the version.
    assert_eq!(a.store.put(&k, None, &record("v1")).await.unwrap(), 1);
    assert_eq!(a.store.put(&k, Some(1), &record("v2")).await.unwrap(), 2);
    assert!(matches!(
        a.store.put(&k, Some(1), &record("stale")).await,
        Err(Error::Conflict(_))
    ));
    let conn = a.store.get(&k).await.unwrap().unwrap();
    assert_eq!(conn.version, 2);
    assert_eq!(
        conn.record.access_token.expose(),
        format!("{CANARY_ACCESS}.v2")
    );

    // A removed connection keeps its version counter: versions never repeat.
    assert!(a.store.remove(&k).await.unwrap());
    assert!(!a.store.remove(&k).await.unwrap());
    assert!(a.store.get(&k).await.unwrap().is_none());
    assert!(matches!(
        a.store.put(&k, Some(2), &record("x")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(a.store.put(&k, None, &record("v3")).await.unwrap(), 3);

    // Listing in key order, by user, with the last use.
    a.store
        .put(&key("bob", "slack"), None, &record("b"))
        .await
        .unwrap();
    a.store
        .put(&key("alice", "slack"), None, &record("s"))
        .await
        .unwrap();
    a.store.touch(&k).await.unwrap();
    let all: Vec<String> = a
        .store
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.unwrap().0.key.to_string())
        .collect();
    assert_eq!(
        all,
        [
            "alice/github/default",
            "alice/slack/default",
            "bob/slack/default"
        ]
    );
    let alice = a.store.list(Some("alice")).await.unwrap();
    assert_eq!(alice.len(), 2);
    assert!(alice[0].as_ref().unwrap().1.is_some(), "github was used");
    assert_eq!(a.store.keys().await.unwrap().len(), 3);

    // Users: by key, by prefix.
    a.store.users_insert(b"u/alice", b"{}").await.unwrap();
    a.store.users_insert(b"h/123", b"alice").await.unwrap();
    assert_eq!(
        a.store.users_get(b"h/123").await.unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    assert_eq!(a.store.users_scan(b"u/").await.unwrap().len(), 1);
    a.store.users_remove(b"h/123").await.unwrap();
    assert!(a.store.users_get(b"h/123").await.unwrap().is_none());

    // The audit log pages as sled's does: the newest `limit`, oldest first.
    for i in 0..5 {
        a.store
            .audit(&AuditEntry::new("alice", "tool-call", format!("ok {i}")))
            .await
            .unwrap();
    }
    let page = a.store.audit_page(0, Some(2), None).await.unwrap();
    let outcomes: Vec<&str> = page
        .entries
        .iter()
        .map(|(_, e)| e.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok 3", "ok 4"]);
    assert!(!page.more);
    assert_eq!(
        a.store
            .audit_page(0, None, None)
            .await
            .unwrap()
            .entries
            .len(),
        5
    );

    // The same store opens again from the same home, and the records open.
    let again = open_at(
        &url,
        tempfile::tempdir().unwrap(),
        a.home.clone(),
        OpenMode::Existing,
    )
    .await
    .unwrap();
    assert_eq!(again.store.get(&k).await.unwrap().unwrap().version, 3);
    assert!(again.store.created.is_empty());

    // A connection's latest token exchange: per user, a hint that goes with the connection.
    let note = LastExchange {
        time: 1_700_000_000,
        client: "ci-bot".into(),
        outcome: "ok".into(),
    };
    let bob = key("bob", "slack");
    a.store.note_exchange(&bob, &note).await.unwrap();
    assert_eq!(
        again.store.exchanges(Some("bob")).await.unwrap(),
        [(bob.clone(), note.clone())]
    );
    assert!(again
        .store
        .exchanges(Some("alice"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(again.store.exchanges(None).await.unwrap().len(), 1);
    a.store.remove(&bob).await.unwrap();
    assert!(again.store.exchanges(None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_master_key_is_refused_and_an_empty_store_is_not_found() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    // Nothing there yet: a read-only open finds nothing and creates nothing.
    let (dir, home) = new_home();
    let err = open_at(&url, dir, home, OpenMode::Existing)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert!(err.to_string().contains("keyward init"), "{err}");
    assert_eq!(
        pg.psql(
            &postgres::db_name(&url),
            "SELECT to_regclass('keyward_schema') IS NULL"
        )
        .trim(),
        "t"
    );

    let a = first(&url).await;
    a.store
        .put(&key("alice", "github"), None, &record("a"))
        .await
        .unwrap();
    // Another machine with no master key, and one with a different key.
    let (dir, home) = new_home();
    let err = open_at(&url, dir, home, OpenMode::Create)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
    assert!(err.to_string().contains("KEYWARD_MASTER_KEY"), "{err}");
    let (dir, home) = new_home();
    home.create().unwrap();
    keyward::vault::keys::write_key_file(
        &home.key_file(),
        &keyward::secret::SecretKey::generate(),
        false,
    )
    .unwrap();
    let err = open_at(&url, dir, home, OpenMode::Existing)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
    assert!(err.to_string().contains("does not open"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_an_empty_store_at_once_all_succeed_with_one_keyring() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    // Eight replicas of one home (one master key file, created by whichever comes first).
    let (dir, home) = new_home();
    home.create().unwrap();
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, home) = (url.clone(), home.clone());
        opens.spawn(async move {
            open_at(&url, tempfile::tempdir().unwrap(), home, OpenMode::Create).await
        });
    }
    let mut stores = Vec::new();
    while let Some(opened) = opens.join_next().await {
        stores.push(opened.unwrap().expect("every replica opens"));
    }
    drop(dir);
    assert_eq!(
        pg.psql(
            &postgres::db_name(&url),
            "SELECT count(*) FROM keyward_keyring"
        )
        .trim(),
        "1"
    );
    assert_eq!(
        pg.psql(
            &postgres::db_name(&url),
            "SELECT version FROM keyward_schema"
        )
        .trim(),
        keyward::vault::postgres::SCHEMA_VERSION.to_string()
    );
    let ids: std::collections::BTreeSet<String> =
        stores.iter().map(|r| r.store.master_key_id()).collect();
    assert_eq!(ids.len(), 1, "one master key: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_users_and_key_rotations_reach_every_process() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    let mut a = first(&url).await;
    let mut b = another(&url, &a).await;
    assert!(eventually(60, || b.store.listening()).await, "b listens");
    // The resync when b started listening may have announced things: start from now.
    while b.changes.try_recv().is_ok() {}
    let seen_users = *b.users.borrow_and_update();

    let k = key("alice", "github");
    a.store.put(&k, None, &record("a")).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(30), b.changes.recv())
        .await
        .expect("b hears of a's write")
        .unwrap();
    assert_eq!(heard, k);
    // a heard its own change at once, and only once.
    assert_eq!(a.changes.try_recv().unwrap(), k);

    a.store.users_insert(b"u/carol", b"{}").await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), b.users.changed())
        .await
        .expect("b hears of the new user")
        .unwrap();
    assert_ne!(*b.users.borrow(), seen_users);

    // a rotates the data key; b reads what a re-sealed, and b's own writes use the new key.
    let report = a.store.rotate_key(&mut |_, _| {}).await.unwrap();
    assert_eq!((report.resealed, report.total), (1, 1), "{report:?}");
    assert_eq!(b.store.get(&k).await.unwrap().unwrap().version, 2);
    let k2 = key("bob", "slack");
    b.store.put(&k2, None, &record("b")).await.unwrap();
    assert_eq!(a.store.current_key_id(), report.key_id);
    assert_eq!(b.store.current_key_id(), report.key_id);
    let raw = a.store.raw_record(&k2).await.unwrap().unwrap();
    assert_eq!(
        keyward::vault::crypto::blob_key_id(&raw[8..]),
        Ok(report.key_id)
    );
    assert!(a.store.get(&k2).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_lock_admits_one_process_and_is_released_when_its_holder_goes() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    let a = first(&url).await;
    let b = another(&url, &a).await;
    let k = key("alice", "github");

    let held = a
        .store
        .refresh_turn(&k, Duration::from_secs(5))
        .await
        .unwrap();
    // Another process waits no longer than its budget, with a retryable error.
    let err = b
        .store
        .refresh_turn(&k, Duration::from_millis(300))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    // Another connection's lock is independent.
    drop(
        b.store
            .refresh_turn(&key("bob", "github"), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    // Released with the guard: b's wait ends.
    let waiting = {
        let k = k.clone();
        async move {
            b.store
                .refresh_turn(&k, Duration::from_secs(60))
                .await
                .map(|_| ())
        }
    };
    let waiter = tokio::spawn(waiting);
    drop(held);
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("b gets the lock once a lets go")
        .unwrap()
        .unwrap();

    // A holder that goes away without letting go (its process dies) releases it with its
    // connections.
    let c = another(&url, &a).await;
    let held = c
        .store
        .refresh_turn(&k, Duration::from_secs(60))
        .await
        .unwrap();
    std::mem::forget(held);
    pg.psql(
        &postgres::db_name(&url),
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    drop(
        a.store
            .refresh_turn(&k, Duration::from_secs(60))
            .await
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_retryable_error_naming_it_without_its_password() {
    let port = crate::support::mcp::free_port();
    let url = format!("postgres://keyward:kwcanary_pg_password@127.0.0.1:{port}/kw");
    let (dir, home) = new_home();
    let err = open_at(&url, dir, home, OpenMode::Create)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://keyward@127.0.0.1:{port}/kw")),
        "{text}"
    );
    assert!(!text.contains("kwcanary_pg_password"), "{text}");
    assert!(text.contains("retry"), "{text}");
    // A URL keyward cannot use is a config error that does not quote it.
    let err = StoreUrl::parse(
        "postgres://u:kwcanary_pg_password@h/db?bogus=1",
        "KEYWARD_STORE_URL",
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(!err.to_string().contains("kwcanary_pg_password"), "{err}");
    assert!(err.to_string().contains("KEYWARD_STORE_URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_records_move_between_sled_and_postgres_verbatim_and_open_there() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    // A sled vault with a connection, a removed one, a user and audit lines.
    let (dir, sled_home) = new_home();
    {
        let vault = keyward::vault::Vault::open(&sled_home, OpenMode::Create)
            .await
            .unwrap();
        vault
            .put(&key("alice", "github"), None, &record("a"))
            .await
            .unwrap();
        vault
            .put(&key("bob", "slack"), None, &record("b"))
            .await
            .unwrap();
        vault.remove(&key("bob", "slack")).await.unwrap();
        keyward::vault::users::add(&vault, "alice").await.unwrap();
    }
    let sled = Location::Sled(sled_home.clone());
    let target = Location::Postgres(Box::new(StoreUrl::parse(&url, "test").unwrap()));
    let report = transfer::copy(&sled, &target, false).await.unwrap();
    assert_eq!((report.connections, report.users), (1, 1), "{report:?}");
    // Refused a second time without --force; replaced with it.
    let err = transfer::copy(&sled, &target, false).await.err().unwrap();
    assert!(err.to_string().contains("--force"), "{err}");
    transfer::copy(&sled, &target, true).await.unwrap();

    // The records open in PostgreSQL with the sled home's master key, at the same version.
    let pg_store = open_at(
        &url,
        tempfile::tempdir().unwrap(),
        sled_home.clone(),
        OpenMode::Existing,
    )
    .await
    .unwrap();
    let conn = pg_store
        .store
        .get(&key("alice", "github"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        conn.record.access_token.expose(),
        format!("{CANARY_ACCESS}.a")
    );
    // Bob's version counter came along: a reconnect continues after it.
    assert_eq!(
        pg_store
            .store
            .put(&key("bob", "slack"), None, &record("b2"))
            .await
            .unwrap(),
        2
    );
    drop(pg_store);

    // And back into a new sled home: the same vault, byte for byte.
    let (dir2, back_home) = new_home();
    let back = Location::Sled(back_home.clone());
    let original = transfer::read(&sled).await.unwrap();
    transfer::copy(&target, &back, false).await.unwrap();
    let mut copied = transfer::read(&back).await.unwrap();
    // Bob was reconnected in PostgreSQL meanwhile.
    let bob = copied
        .connections
        .iter_mut()
        .find(|c| c.key.user == "bob")
        .unwrap();
    assert_eq!(bob.latest, 2);
    assert!(bob.sealed.is_some());
    let mut expected = original.clone();
    let eb = expected
        .connections
        .iter_mut()
        .find(|c| c.key.user == "bob")
        .unwrap();
    (eb.latest, eb.sealed, eb.last_used) = (bob.latest, bob.sealed.clone(), bob.last_used);
    assert_eq!(copied, expected);
    drop((dir, dir2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_of_the_store_holds_no_secret() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    let a = first(&url).await;
    a.store
        .put(&key("alice", "github"), None, &record("dump"))
        .await
        .unwrap();
    a.store.users_insert(b"u/alice", b"{}").await.unwrap();
    a.store
        .audit(&AuditEntry::new("alice", "tool-call", "ok"))
        .await
        .unwrap();
    let dump = pg.pg_dump(&url);
    assert!(crate::support::canary::contains_bytes(
        &dump,
        b"keyward_connections"
    ));
    crate::support::canary::assert_no_canary("pg_dump", &dump);
    let master = std::fs::read_to_string(a.home.key_file()).unwrap();
    assert!(!crate::support::canary::contains_bytes(
        &dump,
        master.trim().as_bytes()
    ));
}

/// A log longer than a batch of rows and larger than a page: every entry comes back once, in
/// order, over pages that each stay under the byte cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_audit_log_pages_under_the_byte_cap() {
    let Some(pg) = postgres::shared() else { return };
    let url = pg.database();
    let a = first(&url).await;
    // 2500 entries of about 1 KiB: 2.5 MiB, more than one page (2 MiB), in one statement.
    let entry = serde_json::to_string(&AuditEntry::new("alice", "tool-call", "x".repeat(1000)))
        .unwrap()
        .replace('\'', "''");
    pg.psql(
        &postgres::db_name(&url),
        &format!(
            "INSERT INTO keyward_audit (entry) SELECT '{entry}' FROM generate_series(1, 2500)"
        ),
    );
    let (mut after, mut until, mut pages, mut seqs) = (0, None, 0, Vec::new());
    loop {
        let page = a.store.audit_page(after, None, until).await.unwrap();
        let bytes: usize = page
            .entries
            .iter()
            .map(|(_, e)| serde_json::to_string(e).unwrap().len())
            .sum();
        assert!(bytes <= keyward::vault::store::AUDIT_PAGE_BYTES, "{bytes}");
        pages += 1;
        seqs.extend(page.entries.iter().map(|(seq, _)| *seq));
        if !page.more {
            break;
        }
        (after, until) = (page.next_after, Some(page.until));
    }
    assert_eq!(pages, 2);
    assert_eq!(seqs, (1..=2500).collect::<Vec<u64>>());
}
