//! One vault, many processes (invariant 10 of DESIGN.md): real `keyward serve` processes over
//! stdio and the real CLI, all on one home folder, against the fake upstream of `tests/support`.
//! The first server owns the database; the others relay over `keyward.sock` and take over when
//! it dies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::support::home::{backdate_obtained_at, expired_token_json, github_grant, home_for};
use crate::support::home::{Kw, Run};
use crate::support::mcp::{
    args, call, error_text, eventually, ok_value, serve_stdio, serve_stdio_env, Client, StdioServer,
};
use crate::support::GITHUB_LOGIN;
use crate::support::{FakeUpstream, Provider};
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};
use keyward::vault::{AuditEntry, ConnKey};

/// A home wired to `fake` with a GitHub connection the fake accepts for the next hour.
fn home_with_github(fake: &FakeUpstream) -> Kw {
    let kw = home_for(fake, &[]);
    let (access, refresh) = github_grant(fake, "mp");
    kw.import("github", "default", &access, &refresh);
    kw
}

fn is_owner_socket_live(kw: &Kw) -> bool {
    std::os::unix::net::UnixStream::connect(kw.home().join("keyward.sock")).is_ok()
}

/// Wait (bounded) until the home's owner answers on its socket. A stdio server answers
/// `initialize` while its vault opens, so the first server of a home owns the vault only once
/// its socket answers; a second one started before that might own it instead.
async fn owner_listening(kw: &Kw) {
    assert!(
        eventually(60, || is_owner_socket_live(kw)).await,
        "the first server owns the vault (its socket answers)"
    );
}

async fn get_me(client: &Client) -> CallToolResult {
    call(client, "github_get_me", json!({})).await
}

fn status_json(kw: &Kw) -> Vec<Value> {
    let run = kw.ok(&["status", "--json"], "");
    run.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    serde_json::from_str(&run.stdout()).unwrap()
}

/// Whether `server` has printed `needle` on stderr so far.
fn said(server: &StdioServer, needle: &str) -> bool {
    crate::support::canary::contains_bytes(&server.stderr.lock().unwrap(), needle.as_bytes())
}

/// `github_get_me` on `client`, failing (not hanging) when it does not answer in two minutes.
async fn get_me_bounded(client: &Client, what: &str) -> CallToolResult {
    tokio::time::timeout(Duration::from_secs(120), get_me(client))
        .await
        .unwrap_or_else(|_| panic!("{what} never answered"))
}

/// `keyward call tool` off the async workers, failing (not hanging) when it does not end in
/// four minutes (longer than the CLI's own wait for the vault owner).
async fn cli_call_bounded(kw: &Kw, tool: &str) -> Run {
    let mut cmd = kw.command(&["call", tool]);
    cmd.stdin(std::process::Stdio::null());
    let run = tokio::task::spawn_blocking(move || Run(cmd.output().expect("run keyward call")));
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .unwrap_or_else(|_| panic!("`keyward call {tool}` never ended"))
        .unwrap()
}

/// A home whose GitHub token has expired on both sides: only a refreshed one works.
fn home_with_expired_github(fake: &FakeUpstream, tag: &str) -> Kw {
    let kw = home_for(fake, &[]);
    let (access, refresh) = github_grant(fake, tag);
    kw.ok(
        &["import", "github"],
        &expired_token_json(&access, &refresh, "repo,read:user"),
    );
    fake.expire_access_token(&access);
    kw
}

fn kill9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_the_cli_share_one_vault() {
    let fake = FakeUpstream::start().await;
    let kw = home_with_github(&fake);
    let first = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;
    let second = serve_stdio(&kw, &[]).await;

    for server in [&first, &second] {
        let me = ok_value(&get_me(&server.client).await);
        assert_eq!(me["login"], GITHUB_LOGIN, "{me}");
    }

    // The CLI works while both run (it relays through the owner): import, status, disconnect.
    let slack = json!({"access_token": "xoxp-multiprocess-test", "token_type": "bearer",
                       "scope": "chat:write,channels:read"});
    kw.ok(&["import", "slack"], &slack.to_string());
    for (name, server) in [("first", &first), ("second", &second)] {
        let heard = server.handler.list_changed.clone();
        assert!(
            eventually(5, || heard.load(Ordering::SeqCst) >= 1).await,
            "the {name} server's client heard no tools/list_changed after the CLI import"
        );
        let tools = server.client.list_all_tools().await.unwrap();
        assert!(
            tools.iter().any(|t| t.name == "slack_post_message"),
            "the {name} server does not list Slack tools after the import"
        );
    }
    let rows = status_json(&kw);
    let providers: Vec<&str> = rows
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["github", "slack"], "{rows:?}");

    let heard_before = second.handler.list_changed.load(Ordering::SeqCst);
    kw.ok(&["disconnect", "slack", "--force"], "");
    let heard = second.handler.list_changed.clone();
    assert!(
        eventually(5, || heard.load(Ordering::SeqCst) > heard_before).await,
        "no tools/list_changed after the CLI disconnect"
    );
    let tools = second.client.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name.starts_with("slack_")));
    assert_eq!(status_json(&kw).len(), 1);

    // Both servers still answer, and every call is in the one audit log.
    for server in [&first, &second] {
        ok_value(&get_me(&server.client).await);
    }
    let audit = crate::support::canary::audit_json(&kw);
    let calls = audit
        .iter()
        .filter(|e| e["tool"] == "github_get_me" && e["outcome"] == "ok")
        .count();
    assert_eq!(calls, 4, "{audit:?}");
    first.finish().await;
    second.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_split_across_two_servers_refreshes_once() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    let kw = home_for(&fake, &[]);
    let (access, refresh) = github_grant(&fake, "storm");
    kw.ok(
        &["import", "github"],
        &expired_token_json(&access, &refresh, "repo,read:user"),
    );
    // Only a refreshed token works, and the refresh stays in flight while the calls pile up.
    fake.expire_access_token(&access);
    fake.token_endpoint_delay("github", Duration::from_millis(300));

    let owner = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;
    let relay = serve_stdio(&kw, &[]).await;
    let mut calls = JoinSet::new();
    for i in 0..1000 {
        let peer = if i % 2 == 0 {
            owner.client.peer().clone()
        } else {
            relay.client.peer().clone()
        };
        calls.spawn(async move {
            peer.call_tool(
                CallToolRequestParams::new("github_get_me").with_arguments(args(json!({}))),
            )
            .await
        });
    }
    let mut ok = 0;
    while let Some(result) = calls.join_next().await {
        let result = result.unwrap().expect("tools/call answers");
        assert_eq!(ok_value(&result)["login"], GITHUB_LOGIN);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "exactly one refresh across both processes"
    );
    assert!(
        !fake.family_revoked("github"),
        "the single-use refresh token was never presented twice"
    );
    let row = &status_json(&kw)[0];
    assert_eq!(row["status"], "active", "{row}");
    assert_eq!(row["version"], 2, "one refresh, one write: {row}");
    owner.finish().await;
    relay.finish().await;
}

/// Callers hammering the relay server while the owner is killed.
const CALLERS: usize = 4;
const CALLS_AFTER_KILL: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_under_load_keeps_the_other_server_answering() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    let kw = home_with_github(&fake);
    let owner = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;
    let survivor = serve_stdio(&kw, &[]).await;
    let version_before = status_json(&kw)[0]["version"].clone();

    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = JoinSet::new();
    for _ in 0..CALLERS {
        let peer = survivor.client.peer().clone();
        let (killed, answered) = (killed.clone(), answered.clone());
        load.spawn(async move {
            let (mut ok, mut errors, mut after_kill) = (0usize, Vec::new(), 0usize);
            while after_kill < CALLS_AFTER_KILL {
                let was_killed = killed.load(Ordering::SeqCst);
                let result = peer
                    .call_tool(
                        CallToolRequestParams::new("github_get_me").with_arguments(args(json!({}))),
                    )
                    .await
                    .expect("a protocol answer, even across the takeover");
                if result.is_error == Some(true) {
                    errors.push(error_text(&result));
                } else {
                    assert_eq!(ok_value(&result)["login"], GITHUB_LOGIN);
                    ok += 1;
                }
                answered.fetch_add(1, Ordering::SeqCst);
                if was_killed {
                    after_kill += 1;
                }
            }
            (ok, errors)
        });
    }
    // Let the load run through the owner (every caller answered a few times), then kill it.
    assert!(
        eventually(60, || answered.load(Ordering::SeqCst) >= 4 * CALLERS).await,
        "the relay answered calls through the owner before the kill"
    );
    kill9(owner.pid);
    killed.store(true, Ordering::SeqCst);

    let mut total_ok = 0;
    let mut all_errors = Vec::new();
    while let Some(done) = load.join_next().await {
        let (ok, errors) = done.unwrap();
        total_ok += ok;
        all_errors.extend(errors);
    }
    // At most one (retryable) failure per call that was in flight when the owner died.
    assert!(
        all_errors.len() <= CALLERS,
        "{} failures: {all_errors:?}",
        all_errors.len()
    );
    for e in &all_errors {
        assert!(e.contains("retry"), "not a retryable error: {e}");
    }
    assert!(total_ok >= CALLERS * CALLS_AFTER_KILL - all_errors.len());

    // The survivor took over: it owns the vault now, and the CLI goes through it.
    assert!(is_owner_socket_live(&kw));
    let rows = status_json(&kw);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "active");
    assert_eq!(rows[0]["version"], version_before, "the record is intact");
    let _ = owner.finish().await;

    // Kill the new owner too: its socket file stays behind, stale. Neither the CLI nor the next
    // server is blocked by it.
    let survivor_pid = survivor.pid;
    kill9(survivor_pid);
    let _ = survivor.finish().await;
    assert!(
        kw.home().join("keyward.sock").exists(),
        "a killed owner leaves its socket file"
    );
    assert!(!is_owner_socket_live(&kw));
    assert_eq!(status_json(&kw).len(), 1);
    let next = serve_stdio(&kw, &[]).await;
    ok_value(&get_me(&next.client).await);
    assert!(is_owner_socket_live(&kw), "the next server owns the vault");
    next.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_once_across_two_servers() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    // 60 s tokens under the default 300 s margin.
    fake.access_token_ttl("github", Duration::from_secs(60));
    let kw = home_with_expired_github(&fake, "short");
    let owner = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;
    let relay = serve_stdio(&kw, &[]).await;
    let mut calls = JoinSet::new();
    for i in 0..100 {
        let server = if i % 2 == 0 { &owner } else { &relay };
        let peer = server.client.peer().clone();
        calls.spawn(async move {
            peer.call_tool(
                CallToolRequestParams::new("github_get_me").with_arguments(args(json!({}))),
            )
            .await
        });
    }
    while let Some(result) = calls.join_next().await {
        let result = result.unwrap().expect("tools/call answers");
        assert_eq!(ok_value(&result)["login"], GITHUB_LOGIN);
    }
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "the token one refresh produced serves every call of both processes"
    );
    owner.finish().await;
    relay.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_becomes_the_owner_while_holding_the_refresh_lock_goes_on() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the pause hook exists in debug builds only");
        return;
    }
    let fake = FakeUpstream::start().await;
    let kw = home_with_expired_github(&fake, "takeover");
    let owner = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;
    let resume = kw.home().join("test-resume-refresh");
    let relay = serve_stdio_env(
        &kw,
        &[],
        &[
            ("KEYWARD_TEST_PAUSE_AT", "refresh-remote"),
            ("KEYWARD_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    )
    .await;

    // The relay's call takes the relay's refresh lock, then stops before asking the owner.
    let peer = relay.client.peer().clone();
    let first = tokio::spawn(async move {
        peer.call_tool(CallToolRequestParams::new("github_get_me").with_arguments(args(json!({}))))
            .await
    });
    assert!(
        eventually(120, || said(&relay, "paused at refresh-remote")).await,
        "the relay never reached the pause point"
    );
    // Meanwhile the owner dies and the relay takes the vault over, lock still in hand.
    kill9(owner.pid);
    let _ = owner.finish().await;
    assert!(
        eventually(120, || is_owner_socket_live(&kw)).await,
        "the relay did not take the vault over"
    );
    std::fs::write(&resume, b"go").unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(120), first)
        .await
        .expect("the call answers: the relay must not wait on the refresh lock it holds")
        .unwrap()
        .expect("tools/call answers");
    assert_eq!(ok_value(&answer)["login"], GITHUB_LOGIN);
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "the relay refreshed itself"
    );

    // Later refreshes of that connection are not stuck behind it: one in the relay (a 401 on
    // the current token forces it) and one asked for by another process (the CLI).
    for round in 0..2 {
        let current = fake
            .issued_tokens("github")
            .last()
            .unwrap()
            .access_token
            .clone();
        fake.expire_access_token(&current);
        if round == 0 {
            let me = get_me_bounded(&relay.client, "a later call of the relay").await;
            assert_eq!(ok_value(&me)["login"], GITHUB_LOGIN);
        } else {
            let run = cli_call_bounded(&kw, "github_get_me").await;
            assert_eq!(run.code(), Some(0), "{}{}", run.stdout(), run.stderr());
        }
        assert_eq!(fake.refresh_count("github"), round + 2);
    }
    relay.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_stuck_refresh_ends_with_the_calls_budget() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the pause hook exists in debug builds only");
        return;
    }
    let fake = FakeUpstream::start().await;
    let kw = home_with_expired_github(&fake, "stuck");
    let config = kw.home().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[executor]\ncall_budget_ms = 10000\n");
    std::fs::write(&config, text).unwrap();
    // The owner's first refresh stops for good once the token endpoint has answered, holding
    // the connection's refresh lock.
    let owner = serve_stdio_env(&kw, &[], &[("KEYWARD_TEST_PAUSE_AT", "refresh-response")]).await;
    let peer = owner.client.peer().clone();
    let stuck = tokio::spawn(async move {
        peer.call_tool(CallToolRequestParams::new("github_get_me").with_arguments(args(json!({}))))
            .await
    });
    assert!(
        eventually(120, || said(&owner, "paused at refresh-response")).await,
        "the refresh never reached the pause point"
    );
    // A second call of the same process waits for that refresh only within its budget.
    let second = get_me_bounded(&owner.client, "a call waiting for the stuck refresh").await;
    assert_eq!(second.is_error, Some(true), "{second:?}");
    let text = error_text(&second);
    assert!(text.contains("retry"), "a retryable error: {text}");
    // So does a refresh another process asks the owner for.
    let run = cli_call_bounded(&kw, "github_get_me").await;
    assert_eq!(run.code(), Some(1), "{}{}", run.stdout(), run.stderr());
    let err: Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(err["retryable"], true, "{err}");
    stuck.abort();
    kill9(owner.pid);
    let _ = owner.finish().await;
}

/// `keyward import github --account ACCOUNT`, started but still waiting for its token on stdin.
fn spawn_import(kw: &Kw, account: &str) -> std::process::Child {
    kw.command(&["import", "github", "--account", account])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keyward import")
}

/// Invariant 12: two processes creating one home at once (two imports, or a server and an
/// import) both succeed, and every acknowledged import opens afterwards.
#[test]
fn processes_starting_on_a_fresh_home_at_once_all_succeed() {
    const HOMES: usize = 8;
    let homes: Vec<Kw> = (0..HOMES).map(|_| Kw::new()).collect();
    let mut imports = Vec::new();
    let mut servers = Vec::new();
    for (i, kw) in homes.iter().enumerate() {
        imports.push((i, "a", spawn_import(kw, "a")));
        if i % 2 == 0 {
            imports.push((i, "b", spawn_import(kw, "b")));
        } else {
            let server = kw
                .command(&["serve"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn keyward serve");
            servers.push((i, crate::support::home::Owner { child: server }));
        }
    }
    // An import reads its token before it opens the vault: handing out the tokens back to back
    // sends every pair at its fresh home together (the servers start opening at once).
    for (_, account, child) in &mut imports {
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(
            &mut stdin,
            crate::support::home::token_json(&format!("{CANARY_ACCESS}-{account}"), CANARY_REFRESH)
                .as_bytes(),
        )
        .unwrap();
    }
    for (i, account, child) in imports {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "home {i}: import of account {account} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (i, server) in &mut servers {
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "home {i}: the server started with the import exited"
        );
    }
    let accounts = |kw: &Kw| -> Vec<String> {
        status_json(kw)
            .iter()
            .map(|row| row["account"].as_str().unwrap().to_string())
            .collect()
    };
    // Through the running servers, then with each home opened directly.
    for (i, kw) in homes.iter().enumerate() {
        let want: &[&str] = if i % 2 == 0 { &["a", "b"] } else { &["a"] };
        assert_eq!(accounts(kw), want, "home {i}");
    }
    drop(servers);
    for (i, kw) in homes.iter().enumerate() {
        let want: &[&str] = if i % 2 == 0 { &["a", "b"] } else { &["a"] };
        assert_eq!(accounts(kw), want, "home {i}, opened directly");
    }
}

/// A relaying process shares one connection to the owner among its calls: while the owner sits
/// in a refresh this process asked for (stopped once the token endpoint has answered), the
/// process's other vault operations are answered, in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_in_the_owner_holds_up_no_other_call_of_a_relay() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the pause hook exists in debug builds only");
        return;
    }
    let fake = FakeUpstream::start().await;
    let kw = home_with_expired_github(&fake, "slow");
    let owner = serve_stdio_env(&kw, &[], &[("KEYWARD_TEST_PAUSE_AT", "refresh-response")]).await;
    owner_listening(&kw).await;
    let relay = kw.vault().await;
    assert!(!relay.is_owner());
    let key = ConnKey::new("default", "github", "default").unwrap();
    let seen = relay.get(&key).await.unwrap().unwrap().version;
    let refreshing = {
        let (relay, key) = (relay.clone(), key.clone());
        tokio::spawn(async move {
            relay
                .refresh_by_owner(&key, seen, false, Duration::from_secs(600))
                .await
        })
    };
    assert!(
        eventually(120, || said(&owner, "paused at refresh-response")).await,
        "the owner never reached the pause point"
    );
    for round in 0..3 {
        let rows = tokio::time::timeout(Duration::from_secs(30), relay.list(None))
            .await
            .expect("a read while the owner refreshes")
            .unwrap();
        assert_eq!(rows.len(), 1);
        // A notice (not answered), then a read that must see it.
        let event = format!("probe-{round}");
        relay.audit(&AuditEntry::new("default", &event, "ok")).await;
        let log = tokio::time::timeout(Duration::from_secs(30), relay.audit_entries(0, None))
            .await
            .expect("the audit log while the owner refreshes")
            .unwrap();
        assert_eq!(log.last().map(|(_, e)| e.event.as_str()), Some(&*event));
    }
    assert!(
        !refreshing.is_finished(),
        "the refresh is still in the owner"
    );
    refreshing.abort();
    kill9(owner.pid);
    let _ = owner.finish().await;
}

/// A refresh that fails for a reason that spares the grant (here the token endpoint refuses
/// keyward's OAuth client) falls back to the still-valid token in a relay as in the owner: the
/// owner's answer says that the grant is alive, not merely that the call is not retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_uses_a_valid_token_like_the_owner_when_the_refresh_spares_the_grant() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    let config = kw.home().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let secret = Provider::Google.client_secret();
    std::fs::write(&config, text.replacen(secret, "not-the-client-secret", 1)).unwrap();
    let scope = "https://www.googleapis.com/auth/calendar.readonly";
    let (access, refresh) = (
        format!("{CANARY_ACCESS}.ya29.spared"),
        format!("{CANARY_REFRESH}.1//g-spared"),
    );
    fake.grant_with_refresh(
        "google",
        &access,
        &refresh,
        &[scope],
        Some(Duration::from_secs(3600)),
    );
    let token = json!({"access_token": access, "refresh_token": refresh, "expires_in": 120,
                       "scope": scope});
    kw.ok(&["import", "google"], &token.to_string());
    // Issued 58 minutes ago: inside the refresh margin, valid for two more minutes.
    backdate_obtained_at(&kw, "google", 3480).await;
    let owner = serve_stdio(&kw, &[]).await;
    owner_listening(&kw).await;

    ok_value(&call(&owner.client, "calendar_list_calendars", json!({})).await);
    let tried = fake.refresh_count("google");
    assert!(tried >= 1, "the owner tried to refresh ahead of expiry");
    let run = cli_call_bounded(&kw, "calendar_list_calendars").await;
    assert_eq!(run.code(), Some(0), "{}{}", run.stdout(), run.stderr());
    run.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    assert!(
        fake.refresh_count("google") > tried,
        "the owner tried again, for the relay"
    );
    owner.finish().await;
}
