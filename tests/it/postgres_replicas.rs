//! Several `keyward serve --http` replicas on one PostgreSQL store, as behind a load balancer:
//! each replica is a home of its own (another machine: its config, its copy of the master key,
//! `KEYWARD_STORE_URL`), all real binaries, against the fake upstream. The shared cluster of
//! `tests/support/postgres.rs` (one database per test), except the restart test, which stops its
//! own. Without PostgreSQL these say so and pass (not under `CI=true`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::server_http::mcp_client;
use crate::server_stateless::{answer, call_tool, post, HttpProcess};
use crate::support::home::{expired_token_json, github_grant, home_for, status, Kw};
use crate::support::mcp::{call, ok_value};
use crate::support::postgres::{self, on_store, replica_of};
use crate::support::{FakeUpstream, CANARY_REFRESH, GITHUB_LOGIN};

const USER: &str = "alice";

/// The first machine's home on the store at `url`, with `alice`'s GitHub connection imported
/// from `token_json` and her API key; returns the home and the key.
fn first_machine(fake: &FakeUpstream, url: &str, token_json: &str) -> (Kw, String) {
    let kw = on_store(home_for(fake, &[]), url);
    kw.ok(&["init"], "");
    kw.ok(&["import", "github", "--user", USER], token_json);
    let key = kw
        .ok(&["users", "add", USER], "")
        .stdout()
        .trim()
        .to_string();
    (kw, key)
}

/// `n` replicas: `first` and `n - 1` machines like it, each serving HTTP.
async fn serve(first: Kw, n: usize) -> (Vec<Kw>, Vec<HttpProcess>) {
    let mut homes = vec![first];
    for _ in 1..n {
        homes.push(replica_of(&homes[0]));
    }
    let mut servers = Vec::new();
    for home in &homes {
        servers.push(HttpProcess::start(home).await);
    }
    (homes, servers)
}

/// An HTTP client that lets go of an idle connection before the server's header read timeout
/// (10 s) closes it: a storm that outlasts it on a busy machine would otherwise reuse a
/// connection the server is closing.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A tool call as a 2026-07-28 stateless request to `base`: the JSON-RPC answer.
async fn stateless(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: u64,
    tool: &str,
    args: Value,
) -> Value {
    let body = call_tool(id, tool, args);
    let response = post(base, key, &body);
    let request = response.build().unwrap();
    let (status, answer) = answer(http.execute(request).await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The HTTP status a request with `key` gets from `base` now.
async fn status_with(base: &str, key: &str) -> u16 {
    post(base, key, &call_tool(1, "github_get_me", json!({})))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The crypto provider, a database of the shared cluster and a fake upstream; `None` without
/// PostgreSQL.
async fn setup() -> Option<(&'static postgres::PgCluster, String, FakeUpstream)> {
    keyward::server::install_crypto_provider();
    let pg = postgres::shared()?;
    Some((pg, pg.database(), FakeUpstream::start().await))
}

/// A token response for `alice`'s GitHub connection, granted at the fake as login
/// `alice-default` for the next 8 hours.
fn alice_token(fake: &FakeUpstream) -> String {
    let access = crate::support::home::token(USER, "default");
    fake.grant_github_as(&access, "alice-default");
    json!({"access_token": access, "refresh_token": format!("{CANARY_REFRESH}_pgr"),
           "token_type": "bearer", "expires_in": 28800, "scope": "repo read:user"})
    .to_string()
}

/// An import whose access token has expired on both sides: only a refreshed one works.
fn expired_grant(fake: &FakeUpstream, tag: &str) -> String {
    let (access, refresh) = github_grant(fake, tag);
    fake.expire_access_token(&access);
    expired_token_json(&access, &refresh, "repo,read:user")
}

/// Wait (bounded, generously: both cores may be busy) until `cond` holds.
async fn until<F: std::future::Future<Output = bool>>(
    secs: u64,
    mut cond: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_one_user_and_a_removal_reaches_them_all_at_once() {
    let Some((_, url, fake)) = setup().await else {
        return;
    };
    let (first, key) = first_machine(&fake, &url, &alice_token(&fake));
    let (homes, servers) = serve(first, 3).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let http = client();

    // One client's stateless requests round-robin over the three, as a plain load balancer
    // sends them (no sticky sessions).
    for n in 1..=30u64 {
        let base = &bases[n as usize % 3];
        let issue = stateless(
            &http,
            base,
            &key,
            n,
            "github_get_issue",
            json!({"owner": "octo", "repo": "seen-by", "number": n}),
        )
        .await;
        assert_eq!(
            issue["result"]["structuredContent"]["title"],
            format!("octo/seen-by#{n} seen by alice-default"),
            "{issue}"
        );
    }
    // 2025-era sessions, each pinned to its replica.
    let mut sessions = Vec::new();
    for base in &bases {
        let client = mcp_client(base, &key).await;
        let me = ok_value(&call(&client, "github_get_me", json!({})).await);
        assert_eq!(me["login"], "alice-default", "{me}");
        sessions.push(client);
    }

    // A disconnect on one machine (the CLI): every replica's session hears tools/list_changed,
    // and no replica has the connection any more.
    homes[1].ok(&["disconnect", "github", "--user", USER, "--force"], "");
    for (i, session) in sessions.iter().enumerate() {
        let heard = session.service().list_changed.clone();
        assert!(
            until(30, || {
                let heard = heard.clone();
                async move { heard.load(std::sync::atomic::Ordering::SeqCst) >= 1 }
            })
            .await,
            "replica {i}'s session heard no tools/list_changed after the disconnect"
        );
    }
    for (i, base) in bases.iter().enumerate() {
        let gone = stateless(&http, base, &key, 100, "github_get_me", json!({})).await;
        assert_eq!(gone["result"]["isError"], true, "replica {i}: {gone}");
    }

    // `users remove` on another machine: every replica refuses the key as soon as the
    // notification lands, well before any cache would have expired by itself.
    let removed_at = Instant::now();
    homes[2].ok(&["users", "remove", USER], "");
    for (i, base) in bases.iter().enumerate() {
        assert!(
            until(30, || async { status_with(base, &key).await == 401 }).await,
            "replica {i} still accepts a removed key"
        );
    }
    eprintln!(
        "removal refused on all 3 replicas {} ms after the command started",
        removed_at.elapsed().as_millis()
    );

    let audit = crate::support::canary::audit_json(&homes[0]);
    let calls = audit
        .iter()
        .filter(|e| e["event"] == "tool-call" && e["outcome"] == "ok")
        .count();
    assert_eq!(
        calls, 33,
        "every call, whichever replica answered it, in the one log"
    );
    for session in sessions {
        let _ = session.cancel().await;
    }
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_call_storm_over_three_replicas_refreshes_once() {
    let Some((_, url, fake)) = setup().await else {
        return;
    };
    fake.set_recording(false);
    let (first, key) = first_machine(&fake, &url, &expired_grant(&fake, "storm"));
    // 300 connections at once on a machine whose two cores other builds share: a request's
    // head may wait longer than the default 10 s to be read (then the connection is closed).
    let config = first.home().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[server]\nheader_read_timeout_ms = 120000\n");
    std::fs::write(&config, text).unwrap();
    // The refresh stays in flight while the calls pile up on every replica.
    fake.token_endpoint_delay("github", Duration::from_millis(300));
    let (homes, servers) = serve(first, 3).await;
    let http = client();

    let started = Instant::now();
    let mut calls = JoinSet::new();
    for n in 0..300u64 {
        let (http, base, key) = (
            http.clone(),
            servers[n as usize % 3].base.clone(),
            key.clone(),
        );
        calls.spawn(
            async move { stateless(&http, &base, &key, n, "github_get_me", json!({})).await },
        );
    }
    while let Some(me) = calls.join_next().await {
        let me = me.unwrap();
        assert_eq!(
            me["result"]["structuredContent"]["login"], GITHUB_LOGIN,
            "{me}"
        );
    }
    eprintln!(
        "300 calls over 3 replicas, one refresh: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "exactly one refresh across the replicas"
    );
    assert!(
        !fake.family_revoked("github"),
        "no refresh token was presented twice"
    );
    let row = &status(&homes[2])[0];
    assert_eq!(
        (row["status"].as_str(), row["version"].as_u64()),
        (Some("active"), Some(2)),
        "{row}"
    );
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_replica_refreshing_lets_another_finish_the_refresh() {
    let Some((_, url, fake)) = setup().await else {
        return;
    };
    let (first, key) = first_machine(&fake, &url, &expired_grant(&fake, "killed"));
    let (homes, mut servers) = serve(first, 3).await;
    let http = client();

    // Replica 0 takes the refresh lock and calls a token endpoint that does not answer.
    fake.token_endpoint_delay("github", Duration::from_secs(600));
    let doomed = {
        let (http, base, key) = (http.clone(), servers[0].base.clone(), key.clone());
        tokio::spawn(async move {
            let _ = http
                .execute(
                    post(&base, &key, &call_tool(1, "github_get_me", json!({})))
                        .build()
                        .unwrap(),
                )
                .await;
        })
    };
    assert!(
        until(60, || async { fake.refresh_count("github") == 1 }).await,
        "replica 0 never asked the token endpoint"
    );
    servers.remove(0).kill9();
    doomed.abort();
    // Its request died with it: the provider never processes it.
    fake.abandon_delayed_token_requests("github");
    fake.token_endpoint_delay("github", Duration::ZERO);

    // The lock went with replica 0's connection: the others refresh and answer.
    for (i, server) in servers.iter().enumerate() {
        let me = stateless(&http, &server.base, &key, 2, "github_get_me", json!({})).await;
        assert_eq!(
            me["result"]["structuredContent"]["login"],
            GITHUB_LOGIN,
            "replica {}: {me}",
            i + 1
        );
    }
    assert_eq!(
        fake.refresh_count("github"),
        2,
        "the dead replica's refresh, and one more"
    );
    assert_eq!(fake.successful_refreshes("github"), 1);
    assert!(
        !fake.family_revoked("github"),
        "the refresh token was never presented twice"
    );
    let row = &status(&homes[1])[0];
    assert_eq!(
        (row["status"].as_str(), row["version"].as_u64()),
        (Some("active"), Some(2)),
        "{row}"
    );
    for server in servers {
        server.stop().await;
    }
}

/// What one call of the load saw: `Ok`, or the error text a client got.
async fn outcome(http: &reqwest::Client, base: &str, key: &str) -> Result<(), String> {
    let request = post(base, key, &call_tool(1, "github_get_me", json!({})))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let response = http.execute(request).await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!(
            "{}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ));
    }
    let (_, me) = answer(response).await;
    if me["result"]["isError"] == false {
        Ok(())
    } else {
        Err(me.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_is_a_clear_error_then_recovers_without_a_restart() {
    keyward::server::install_crypto_provider();
    let Some(pg) = postgres::PgCluster::start() else {
        return;
    };
    // A password in the URL (ignored by the cluster) that no error may show.
    let url = postgres::with_password(&pg.database());
    let fake = FakeUpstream::start().await;
    let (access, refresh) = github_grant(&fake, "restart");
    let (first, key) = first_machine(
        &fake,
        &url,
        &crate::support::home::token_json(&access, &refresh),
    );
    let (homes, servers) = serve(first, 2).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();

    // Load: calls alternating over both replicas, and `users add` from a third machine, until
    // told to stop; every outcome recorded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Result<(), String>>>> = Default::default();
    let calls = {
        let (stop, seen, bases, key) = (stop.clone(), seen.clone(), bases.clone(), key.clone());
        tokio::spawn(async move {
            let http = client();
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let result = outcome(&http, &bases[n % 2], &key).await;
                seen.lock().unwrap().push(result);
            }
        })
    };
    let writer_home = replica_of(&homes[0]);
    let writes = {
        let stop = stop.clone();
        let kw = replica_of(&homes[0]);
        std::thread::spawn(move || {
            let mut added = Vec::new();
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let name = format!("writer{n}");
                let run = kw.run(&["users", "add", &name], "");
                added.push((name, run.code() == Some(0), run.stderr()));
            }
            added
        })
    };
    let oks = |seen: &std::sync::Mutex<Vec<Result<(), String>>>| {
        seen.lock().unwrap().iter().filter(|r| r.is_ok()).count()
    };
    assert!(
        until(60, || async { oks(&seen) >= 5 }).await,
        "the load never got going"
    );

    pg.stop("fast");
    let failed = |seen: &std::sync::Mutex<Vec<Result<(), String>>>| {
        seen.lock().unwrap().iter().filter(|r| r.is_err()).count()
    };
    assert!(
        until(120, || async { failed(&seen) >= 4 }).await,
        "no call failed while PostgreSQL was down"
    );
    // Once the replicas' API-key caches let go (2 s), the key cannot be checked: 503, not 401.
    let refused = |seen: &std::sync::Mutex<Vec<Result<(), String>>>| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.starts_with("503")))
    };
    assert!(
        until(120, || async { refused(&seen) }).await,
        "no request was refused with 503 while the key could not be checked"
    );
    pg.start_again();
    let before = oks(&seen);
    assert!(
        until(120, || async { oks(&seen) >= before + 10 }).await,
        "the replicas did not recover by themselves"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    calls.await.unwrap();
    let added = writes.join().unwrap();

    // Every failure said what happened and that retrying helps, naming the store (never a
    // password); the replicas were never restarted.
    let shown = format!(
        "PostgreSQL store at postgres://postgres@127.0.0.1:{}",
        pg.port
    );
    for error in seen.lock().unwrap().iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            !error.starts_with("401"),
            "a valid key refused as invalid: {error}"
        );
        assert!(error.contains(&shown) && error.contains("retry"), "{error}");
        assert!(!error.contains(postgres::PG_PASSWORD), "{error}");
        crate::support::canary::assert_no_canary("an error during the outage", error.as_bytes());
    }
    for (name, ok, stderr) in &added {
        assert!(!stderr.contains(postgres::PG_PASSWORD), "{name}: {stderr}");
        if !ok {
            assert!(stderr.contains(&shown), "{name}: {stderr}");
        }
    }
    // Nothing acknowledged was lost: every user whose `users add` succeeded is there.
    let listed = writer_home.ok(&["users", "list"], "").stdout();
    let acknowledged: Vec<&String> = added
        .iter()
        .filter(|(_, ok, _)| *ok)
        .map(|(n, _, _)| n)
        .collect();
    assert!(!acknowledged.is_empty(), "no write went through: {added:?}");
    for name in acknowledged {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} was lost:\n{listed}"
        );
    }
    for server in servers {
        let log = server.stop().await;
        let password = postgres::PG_PASSWORD.as_bytes();
        assert!(!crate::support::canary::contains_bytes(&log, password));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_on_an_empty_database_at_once_both_serve() {
    let Some((pg, url, fake)) = setup().await else {
        return;
    };
    // Both machines are given the same master key; neither has a vault yet.
    let key = (
        "KEYWARD_MASTER_KEY".to_string(),
        "S2V5d2FyZCByZXBsaWNhIHRlc3Qga2V5IDMyIGJ5dGU=".to_string(),
    );
    let mut a = on_store(home_for(&fake, &[]), &url);
    a.env.push(key.clone());
    let b = replica_of(&a);
    let (first, second) = tokio::join!(HttpProcess::start(&a), HttpProcess::start(&b));
    let version = keyward::vault::postgres::SCHEMA_VERSION.to_string();
    assert_eq!(
        pg.psql(
            &postgres::db_name(&url),
            "SELECT version FROM keyward_schema"
        )
        .trim(),
        version
    );
    assert_eq!(
        pg.psql(
            &postgres::db_name(&url),
            "SELECT count(*) FROM keyward_keyring"
        )
        .trim(),
        "1"
    );
    // Each opens what the other wrote: a user added on one is known to the other.
    let api_key = b
        .ok(&["users", "add", USER], "")
        .stdout()
        .trim()
        .to_string();
    for server in [&first, &second] {
        assert!(
            until(30, || async {
                status_with(&server.base, &api_key).await == 200
            })
            .await,
            "{} does not know the user",
            server.base
        );
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_exchange_on_one_replica_shows_in_status_on_another_machine() {
    let Some((_, url, fake)) = setup().await else {
        return;
    };
    let (first, key) = first_machine(&fake, &url, &alice_token(&fake));
    crate::exchange::enable(&first, "");
    let client = crate::exchange::add_client(
        &first,
        &[
            "backend",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
        ],
    );
    let (homes, servers) = serve(first, 2).await;
    // The client was registered on machine 0; replica 1 knows it from the store.
    let answer = crate::exchange::post(
        &servers[1].base,
        Some(&client),
        &[
            ("grant_type", crate::exchange::GRANT),
            ("subject_token", &key),
            ("subject_token_type", crate::exchange::ACCESS),
            ("audience", "github"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(
        answer.body["access_token"],
        crate::support::home::token(USER, "default")
    );
    let row = &status(&homes[0])[0];
    assert_eq!(row["last_exchange"]["client"], "backend", "{row}");
    assert_eq!(row["last_exchange"]["outcome"], "ok", "{row}");
    for server in servers {
        server.stop().await;
    }
}

/// The browser flows cross replicas: a connect link made by one replica opens on another (the
/// load balancer may send it anywhere). Each replica's home has no `web.key`; they share the
/// web key by deriving it from the master key they are given.
#[tokio::test(flavor = "multi_thread")]
async fn a_connect_link_made_by_one_replica_completes_on_another() {
    let Some((_pg, url, fake)) = setup().await else {
        return;
    };
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", crate::support::mcp::free_port()),
        format!("127.0.0.1:{}", crate::support::mcp::free_port()),
    );
    // The public URL names replica A: every link points there.
    let a = on_store(home_for(&fake, &[]), &url);
    let mut config = std::fs::read_to_string(a.home().join("config.toml")).unwrap();
    config.push_str(&format!("\n[server]\npublic_url = \"http://{a_addr}\"\n"));
    std::fs::write(a.home().join("config.toml"), config).unwrap();
    a.ok(&["init"], "");
    let key = a
        .ok(&["users", "add", USER], "")
        .stdout()
        .trim()
        .to_string();
    let b = replica_of(&a);
    let on_a = HttpProcess::start_at(&a, &a_addr).await;
    let on_b = HttpProcess::start_at(&b, &b_addr).await;

    // Replica B answers the call and makes the link; it opens on replica A.
    let http = client();
    let refused = stateless(&http, &on_b.base, &key, 1, "github_get_me", json!({})).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let hint = refused["result"]["structuredContent"]["hint"]
        .as_str()
        .unwrap_or_default();
    let link = hint
        .split_whitespace()
        .find(|w| w.starts_with(&format!("http://{a_addr}/connect/github?ticket=")))
        .unwrap_or_else(|| panic!("a link to replica A in {hint}"))
        .to_string();
    let page = crate::support::browser::Browser::new().get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // The connection is in the shared store: replica B now answers the call.
    let me = stateless(&http, &on_b.base, &key, 2, "github_get_me", json!({})).await;
    assert_eq!(me["result"]["isError"], false, "{me}");
    for kw in [&a, &b] {
        assert!(
            !kw.home().join("web.key").exists(),
            "the web key is derived, not written"
        );
    }
    on_a.stop().await;
    on_b.stop().await;
}
