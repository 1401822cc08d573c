//! The OAuth lifecycle end to end against the fake authorization servers of `tests/support`:
//! connect (browser and device flows), refresh under concurrency and failure, reconnect,
//! revoke. The `keyward` binary is the thing under test, except where many concurrent calls
//! are needed: there one in-process `Executor` is driven, as an MCP server would drive it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::oauth_fake_ext::*;
use crate::support::canary::*;
use crate::support::home::*;
use crate::support::home::{Kw, Run};
use crate::support::mcp::eventually;
use crate::support::{FakeUpstream, Provider};
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};
use keyward::catalog::Catalog;
use keyward::config::{Config, Home};
use keyward::exec::{CallContext, Executor};
use keyward::vault::ConnKey;

const RECONNECT: &str = "connection needs reconnecting: run `keyward connect";

fn no_browser_connect(kw: &Kw, provider: &str, extra: &[&str]) -> Running {
    let mut args = vec!["connect", provider, "--no-browser", "--timeout", "60"];
    args.extend_from_slice(extra);
    Running::spawn(kw, &args, &[])
}

/// Import a token the fake knows, expired on keyward's side (the fake still accepts the
/// access token unless told otherwise), with a refresh token.
fn import_expired(
    fake: &FakeUpstream,
    kw: &Kw,
    provider: &str,
    access: &str,
    refresh: &str,
    scopes: &[&str],
) {
    fake.grant_with_refresh(
        provider,
        access,
        refresh,
        scopes,
        Some(Duration::from_secs(3600)),
    );
    let sep = if provider == "google" { " " } else { "," };
    kw.ok(
        &["import", provider],
        &expired_token_json(access, refresh, &scopes.join(sep)),
    );
}

/// `keyward call`, checked for leaks: every token the tests import contains a canary.
fn call(kw: &Kw, tool: &str, args: &str) -> Run {
    let run = kw.run(&["call", tool, "--args", args], "");
    let mut secrets: Vec<String> = Provider::ALL
        .iter()
        .map(|p| p.client_secret().to_string())
        .collect();
    secrets.extend([CANARY_ACCESS.to_string(), CANARY_REFRESH.to_string()]);
    assert_clean(&run, &secrets);
    run
}

async fn stored_refresh_token(kw: &Kw, provider: &str) -> Option<String> {
    let vault = kw.vault().await;
    let key = ConnKey::new("default", provider, "default").unwrap();
    let conn = vault.get(&key).await.unwrap()?;
    conn.record.refresh_token.map(|t| t.expose().to_string())
}

async fn stored_access_token(kw: &Kw, provider: &str) -> String {
    let vault = kw.vault().await;
    let key = ConnKey::new("default", provider, "default").unwrap();
    vault
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .record
        .access_token
        .expose()
        .to_string()
}

// ---- connect: the browser flow -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flow_stores_the_grant_of_each_provider() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    for provider in ["github", "slack", "google"] {
        let mut run = no_browser_connect(&kw, provider, &[]);
        let url = run.authorize_url();
        assert_eq!(
            query(&url, "code_challenge_method").as_deref(),
            Some("S256"),
            "{provider}: PKCE S256"
        );
        assert!(
            query(&url, "code_challenge").is_some_and(|c| c.len() == 43),
            "{provider}: a SHA-256 challenge"
        );
        let state = query(&url, "state").expect("a state");
        assert!(state.len() >= 16, "{provider}: the state is random");
        let redirect = query(&url, "redirect_uri").unwrap();
        assert!(
            redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"),
            "{redirect}"
        );
        match provider {
            "slack" => {
                assert!(
                    query(&url, "scope").is_none(),
                    "Slack user scopes do not go in `scope`"
                );
                assert!(
                    query(&url, "user_scope").unwrap().contains("chat:write"),
                    "{url}"
                );
            }
            "google" => {
                assert_eq!(
                    query(&url, "access_type").as_deref(),
                    Some("offline"),
                    "a refresh token is asked for"
                );
                assert!(query(&url, "scope")
                    .unwrap()
                    .contains("https://www.googleapis.com/auth/calendar"));
            }
            _ => assert!(
                query(&url, "scope")
                    .unwrap()
                    .split(' ')
                    .any(|s| s == "repo"),
                "{url}"
            ),
        }

        let (page_status, page) = play_browser(&url, |u| u).await;
        assert_eq!(page_status, 200, "{page}");
        assert!(page.contains("close this tab"), "{page}");
        let out = run.finish(Duration::from_secs(30));
        assert_eq!(
            out.code(),
            Some(0),
            "{provider}: {}\n{}",
            out.stdout(),
            out.stderr()
        );
        assert!(out.stdout().contains("scopes asked:"), "{}", out.stdout());
        assert!(
            out.stderr().contains("keyward: asking"),
            "the scopes asked are printed before the browser: {}",
            out.stderr()
        );

        let issued = fake.issued_tokens(provider);
        let token = issued.last().expect("the fake issued a token");
        assert_eq!(token.grant_type, "authorization_code");
        let granted_line = out
            .stdout()
            .lines()
            .find(|l| l.starts_with("scopes granted:"))
            .unwrap()
            .to_string();
        for scope in &token.scopes {
            assert!(
                granted_line.contains(scope.as_str()),
                "{provider}: granted scopes printed: {granted_line}"
            );
        }
        assert_eq!(
            stored_access_token(&kw, provider).await,
            token.access_token,
            "{provider}: the issued token is stored"
        );
        assert!(
            stored_refresh_token(&kw, provider).await.is_some(),
            "{provider}: with its refresh token"
        );
        assert_clean(&out, &fake_secrets(&fake));
    }

    // The stored grants work for tool calls.
    for (tool, args) in [
        ("github_get_me", "{}"),
        ("slack_list_channels", "{}"),
        ("calendar_list_calendars", "{}"),
    ] {
        let run = call(&kw, tool, args);
        assert_eq!(run.code(), Some(0), "{tool}: {}", run.stdout());
        assert_clean(&run, &fake_secrets(&fake));
    }
    let rows = status(&kw);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "active"));
    let audit = assert_audit_clean(&kw, &fake_secrets(&fake));
    assert_eq!(audit.matches("\"event\":\"connect\"").count(), 3, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_asks_only_for_read_scopes_and_granted_scopes_are_reported() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    // The user unticks a scope on the consent screen.
    fake.grant_scopes_override("slack", Some(&["channels:read"]));
    let mut run = no_browser_connect(&kw, "slack", &["--read-only"]);
    let url = run.authorize_url();
    let asked = query(&url, "user_scope").unwrap();
    assert!(
        !asked.contains("chat:write"),
        "read-only never asks for a write scope: {asked}"
    );
    assert!(asked.contains("channels:history"), "{asked}");
    play_browser(&url, |u| u).await;
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{}", out.stderr());
    assert!(
        out.stdout().contains("scopes granted: channels:read\n"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stderr().contains("did not grant"),
        "a narrower grant is pointed out: {}",
        out.stderr()
    );
    assert_eq!(
        status_of(&kw, "slack").unwrap()["scopes"],
        serde_json::json!(["channels:read"])
    );
}

/// The provider's redirect for `authorize` (what the browser would follow), without following it.
async fn provider_redirect(authorize: &url::Url) -> url::Url {
    let resp = browser().get(authorize.clone()).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        302,
        "the authorize endpoint redirects"
    );
    url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap()
}

/// `redirect` with its `state` replaced (`None`: removed).
fn with_state(redirect: &url::Url, state: Option<&str>) -> url::Url {
    let pairs: Vec<(String, String)> = redirect
        .query_pairs()
        .filter(|(k, _)| k != "state")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .chain(state.map(|s| ("state".to_string(), s.to_string())))
        .collect();
    let mut forged = redirect.clone();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_is_ignored_and_the_real_one_completes() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    let mut run = no_browser_connect(&kw, "github", &[]);
    let url = run.authorize_url();
    let real = provider_redirect(&url).await;
    // Forged callbacks (a wrong state, an error with a wrong state, no state at all) reach the
    // listener before the real one: each gets a page saying it was ignored.
    let mut denied = with_state(&real, Some("forged-state-0123456789"));
    denied.set_query(Some("error=access_denied&state=forged-state-0123456789"));
    for forged in [
        with_state(&real, Some("forged-state-0123456789")),
        with_state(&real, None),
        denied,
    ] {
        let page = browser().get(forged.clone()).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 400, "{forged}");
        let text = page.text().await.unwrap();
        assert!(text.contains("ignored"), "{text}");
        assert!(text.contains("still waiting"), "{text}");
    }
    assert_eq!(
        fake.token_requests("github"),
        0,
        "no forged code was exchanged"
    );
    // The real callback afterwards completes the sign-in.
    let page = browser().get(real).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{}", out.stderr());
    assert!(
        out.stderr().contains("ignored a redirect"),
        "the terminal says what happened: {}",
        out.stderr()
    );
    assert_eq!(fake.token_requests("github"), 1);
    assert!(status_of(&kw, "github").is_some(), "the grant was stored");
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_redirect_of_an_earlier_sign_in_is_ignored() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    // A first sign-in completes; its redirect (code + state) is kept.
    let mut first = no_browser_connect(&kw, "github", &[]);
    let url = first.authorize_url();
    let old_redirect = provider_redirect(&url).await;
    browser().get(old_redirect.clone()).send().await.unwrap();
    assert_eq!(first.finish(Duration::from_secs(30)).code(), Some(0));
    let version_before = status_of(&kw, "github").unwrap()["version"].clone();

    // A second sign-in gets the old redirect replayed at its own listener: ignored.
    let mut second = no_browser_connect(&kw, "github", &[]);
    let url = second.authorize_url();
    let mut replay = url::Url::parse(&query(&url, "redirect_uri").unwrap()).unwrap();
    replay.set_query(old_redirect.query());
    let page = browser().get(replay).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 400);
    assert_eq!(
        status_of(&kw, "github").unwrap()["version"],
        version_before,
        "the stored grant is untouched"
    );
    assert_eq!(
        fake.token_requests("github"),
        1,
        "the replayed code was not exchanged again"
    );
    // The second sign-in's own redirect still completes it.
    let (status, page) = play_browser(&url, |cb| cb).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(second.finish(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(fake.token_requests("github"), 2);
    assert_ne!(status_of(&kw, "github").unwrap()["version"], version_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_consent_and_timeouts_end_clearly() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    fake.deny_authorization("google", true);
    let mut run = no_browser_connect(&kw, "google", &[]);
    let url = run.authorize_url();
    let (page_status, page) = play_browser(&url, |u| u).await;
    assert_eq!(page_status, 400);
    assert!(page.contains("close this tab"));
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr().contains("declined"), "{}", out.stderr());

    let started = Instant::now();
    let out = kw.run(&["connect", "github", "--no-browser", "--timeout", "1"], "");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr()
            .contains("no answer from the browser within 1s"),
        "{}",
        out.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(status(&kw).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_credentials_say_how_to_register_an_app() {
    let kw = Kw::new();
    let out = kw.run(&["connect", "github", "--no-browser"], "");
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("https://github.com/settings/applications/new"),
        "{err}"
    );
    assert!(
        err.contains("http://127.0.0.1/callback"),
        "the redirect URI to register: {err}"
    );
    assert!(err.contains("KEYWARD_GITHUB_CLIENT_ID"), "{err}");
    let out = kw.run(&["connect", "google", "--device"], "");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr().contains("no OAuth client id"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("TVs and Limited Input devices"),
        "{}",
        out.stderr()
    );
    let out = kw.run(&["connect", "slack", "--device"], "");
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr().contains("no device authorization flow"),
        "{}",
        out.stderr()
    );
}

// ---- connect: the device flow --------------------------------------------------------------

/// A refused device authorization names the fix from the OAuth error code (GitHub answers
/// `incorrect_client_credentials` with HTTP 200), not from the wording of its description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flow_refused_for_the_client_says_to_check_the_client_id() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[("github", "client_id = \"Iv1.not-registered\"")]);
    let config = std::fs::read_to_string(kw.home().join("config.toml")).unwrap();
    // The line added last wins over the fake's own client_id in the same section.
    let config = config.replacen(
        &format!("client_id = \"{}\"\n", Provider::Github.client_id()),
        "",
        1,
    );
    std::fs::write(kw.home().join("config.toml"), config).unwrap();
    let run = kw.run(
        &[
            "connect",
            "github",
            "--device",
            "--no-browser",
            "--timeout",
            "30",
        ],
        "",
    );
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains("incorrect_client_credentials")
            && run
                .stderr()
                .contains("check client_id under [providers.github]"),
        "{}",
        run.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_honours_slow_down() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    fake.device_interval("github", 1);
    fake.force_slow_down("github", 1);
    let started = Instant::now();
    let mut run = Running::spawn(
        &kw,
        &[
            "connect",
            "github",
            "--device",
            "--no-browser",
            "--timeout",
            "60",
        ],
        &[],
    );
    let code = run.wait_for(Duration::from_secs(30), |line| {
        line.split("enter the code ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    });
    // The user approves once poll 1 (t = 1 s) got the forced slow_down, so the next poll
    // waits 1 + 5 s (t = 7 s) and gets the token. A client that polled again sooner would hit
    // the still-pending code too early and earn more slow_downs, hence more requests.
    assert!(
        eventually(30, || fake.token_requests("github") >= 1).await,
        "keyward polled the token endpoint"
    );
    assert!(
        fake.approve_device(&code),
        "the printed code is the fake's user code"
    );
    let out = run.finish(Duration::from_secs(60));
    assert_eq!(out.code(), Some(0), "{}\n{}", out.stdout(), out.stderr());
    assert_eq!(
        fake.token_requests("github"),
        2,
        "one poll per interval, the slowed one included"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "the interval grew by 5 s: {:?}",
        started.elapsed()
    );
    let token = fake.issued_tokens("github").pop().unwrap();
    assert_eq!(
        token.grant_type,
        "urn:ietf:params:oauth:grant-type:device_code"
    );
    assert_eq!(stored_access_token(&kw, "github").await, token.access_token);
    assert_clean(&out, &fake_secrets(&fake));
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_device_flow_waits_while_pending_and_stops_on_denial() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    let mut run = Running::spawn(
        &kw,
        &[
            "connect",
            "google",
            "--device",
            "--no-browser",
            "--read-only",
        ],
        &[],
    );
    let code = run.wait_for(Duration::from_secs(30), |line| {
        line.split("enter the code ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    });
    // Two polls see authorization_pending (HTTP 428 at Google) before the user approves.
    assert!(
        eventually(30, || fake.token_requests("google") >= 2).await,
        "keyward polled the token endpoint twice"
    );
    assert!(fake.approve_device(&code));
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{}", out.stderr());
    assert!(
        fake.token_requests("google") >= 3,
        "pending polls continued"
    );
    let row = status_of(&kw, "google").unwrap();
    assert_eq!(
        row["scopes"],
        serde_json::json!(["https://www.googleapis.com/auth/calendar.readonly"])
    );

    let mut run = Running::spawn(
        &kw,
        &[
            "connect",
            "google",
            "--account",
            "work",
            "--device",
            "--no-browser",
        ],
        &[],
    );
    let code = run.wait_for(Duration::from_secs(30), |line| {
        line.split("enter the code ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    });
    assert!(fake.deny_device(&code));
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr().contains("access_denied"), "{}", out.stderr());
    assert_eq!(
        status(&kw).len(),
        1,
        "nothing stored for the denied account"
    );

    // The code runs out before anyone approves it: expired_token ends the wait.
    let mut run = Running::spawn(
        &kw,
        &[
            "connect",
            "google",
            "--account",
            "late",
            "--device",
            "--no-browser",
        ],
        &[],
    );
    let code = run.wait_for(Duration::from_secs(30), |line| {
        line.split("enter the code ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    });
    assert!(fake.expire_device(&code));
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr().contains("expired_token"), "{}", out.stderr());
    assert!(out.stderr().contains("--device` again"), "{}", out.stderr());
    assert_eq!(status(&kw).len(), 1);
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

// ---- refresh ---------------------------------------------------------------------------------

/// An executor in this process over the home's vault, as `keyward serve` builds it.
/// `github_get_me` of user `default`, `n` times at once on `exec`; every call must succeed.
async fn concurrent_get_me(exec: &Arc<Executor>, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            exec.call(
                &CallContext::new("default"),
                "github_get_me",
                serde_json::Map::new(),
            )
            .await
        }));
    }
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            panic!("a call failed: {e}");
        }
    }
}

async fn executor(kw: &Kw) -> Arc<Executor> {
    let home = Home { dir: kw.home() };
    let config = Config::load(&home).unwrap();
    let catalog = Catalog::load(&config.tools_dirs, &config.providers).unwrap();
    let vault = kw.vault().await;
    Arc::new(Executor::new(Arc::new(catalog), Arc::new(vault), &config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_on_an_expired_token_refresh_once() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_storm_old_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_storm_old_refresh",
        &["repo", "read:user"],
    );
    // The old access token is dead at the provider too: only a refreshed one works.
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.gho_storm_old_access");
    // A slow token endpoint keeps the refresh in flight while every call piles up behind it.
    fake.token_endpoint_delay("github", Duration::from_millis(300));
    let exec = executor(&kw).await;
    let started = Instant::now();
    concurrent_get_me(&exec, 1000).await;
    let wall = started.elapsed();
    println!("storm: 1000 concurrent github_get_me on an expired token: {wall:?} wall time (token endpoint delay 300 ms)");
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "exactly one refresh request"
    );
    assert!(
        !fake.family_revoked("github"),
        "the refresh token was never reused"
    );
    let stored = exec
        .vault()
        .get(&ConnKey::new("default", "github", "default").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.record.access_token.expose(),
        fake.issued_tokens("github")[0].access_token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_living_shorter_than_the_margin_are_refreshed_once_and_then_used() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    // 60 s tokens under the default 300 s margin: every new token is "near expiry" by the
    // margin alone.
    fake.access_token_ttl("github", Duration::from_secs(60));
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_short_old_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_short_old_refresh",
        &["repo", "read:user"],
    );
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.gho_short_old_access");
    let exec = executor(&kw).await;
    concurrent_get_me(&exec, 100).await;
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "every waiter took the token the one refresh produced"
    );
    // And the calls after it use that token too.
    for _ in 0..5 {
        concurrent_get_me(&exec, 1).await;
    }
    assert_eq!(fake.refresh_count("github"), 1, "a fresh token is used");
    assert!(!fake.family_revoked("github"));
}

#[test]
fn import_refuses_expiry_values_it_cannot_represent() {
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    let far_future = chrono::Utc::now().timestamp() + 200 * 365 * 86_400;
    for (json, field) in [
        (
            r#"{"access_token":"x","expires_in":1e300}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_in":18446744073709551615}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_in":9223372036854775807}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_in":"9223372036854775807"}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_in":-5}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_in":-1e300}"#.to_string(),
            "expires_in",
        ),
        (
            r#"{"access_token":"x","expires_at":9223372036854775807}"#.to_string(),
            "expires_at",
        ),
        (
            r#"{"access_token":"x","expires_at":-9223372036854775808}"#.to_string(),
            "expires_at",
        ),
        (
            r#"{"access_token":"x","expires_at":1e300}"#.to_string(),
            "expires_at",
        ),
        (
            r#"{"access_token":"x","expires_at":"9999-12-31T23:59:59Z"}"#.to_string(),
            "expires_at",
        ),
        (
            format!(r#"{{"access_token":"x","expires_at":{far_future}}}"#),
            "expires_at",
        ),
    ] {
        let run = kw.run(&["import", "github"], &json);
        // Exit 2, like every other malformed token response: the input is what is wrong.
        assert_eq!(
            run.code(),
            Some(2),
            "{json}: {}{}",
            run.stdout(),
            run.stderr()
        );
        let err = run.stderr();
        assert!(
            err.contains(field) && err.contains("range"),
            "{json}: {err}"
        );
        assert!(status_of(&kw, "github").is_none(), "{json} stored nothing");
    }
    // Values in range still import: an expired token, a fractional lifetime, a year.
    for json in [
        r#"{"access_token":"x","expires_in":0}"#,
        r#"{"access_token":"x","expires_in":3599.5}"#,
        r#"{"access_token":"x","expires_in":31536000}"#,
        r#"{"access_token":"x","expires_at":1000}"#,
    ] {
        let run = kw.run(&["import", "github"], json);
        assert_eq!(run.code(), Some(0), "{json}: {}", run.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_expires_in_from_the_token_endpoint_is_clamped() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    let access = "kwcanary_access_9f8e7d6c5b4a.gho_huge_access";
    import_expired(
        &fake,
        &kw,
        "github",
        access,
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_huge_1",
        &["repo", "read:user"],
    );
    fake.expire_access_token(access);
    for (round, claimed) in [
        serde_json::json!(1e300),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MAX),
        serde_json::json!(-1e300),
    ]
    .into_iter()
    .enumerate()
    {
        fake.advertise_expires_in("github", Some(claimed.clone()));
        let out = call(&kw, "github_get_me", "{}");
        assert_eq!(out.code(), Some(0), "{claimed}: {}", out.stdout());
        assert_eq!(fake.successful_refreshes("github"), round as u64 + 1);
        let row = status_of(&kw, "github").unwrap();
        assert_eq!(row["status"], "active", "{row}");
        let left = row["expires_in_secs"].as_i64().expect("an expiry");
        assert!(
            (-86_400..=200 * 365 * 86_400).contains(&left),
            "{claimed}: clamped, not wrapped: {row}"
        );
        // The next round refreshes again: the provider rejects the current token.
        let current = fake
            .issued_tokens("github")
            .last()
            .unwrap()
            .access_token
            .clone();
        fake.expire_access_token(&current);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_refresh_without_refresh_token_keeps_the_stored_one() {
    let fake = FakeUpstream::start().await;
    fake.omit_refresh_token("google", true);
    let kw = home_for(&fake, &[]);
    let scope = "https://www.googleapis.com/auth/calendar.readonly";
    import_expired(
        &fake,
        &kw,
        "google",
        "kwcanary_access_9f8e7d6c5b4a.ya29.old",
        "kwcanary_refresh_1a2b3c4d5e6f.1//google-refresh",
        &[scope],
    );
    for round in 1..=2 {
        let run = call(&kw, "calendar_list_calendars", "{}");
        assert_eq!(run.code(), Some(0), "round {round}: {}", run.stdout());
        assert_eq!(
            stored_refresh_token(&kw, "google").await.as_deref(),
            Some("kwcanary_refresh_1a2b3c4d5e6f.1//google-refresh"),
            "round {round}"
        );
        assert_eq!(
            fake.successful_refreshes("google"),
            1,
            "the new token is used until it nears expiry"
        );
    }
    assert_ne!(
        stored_access_token(&kw, "google").await,
        "kwcanary_access_9f8e7d6c5b4a.ya29.old"
    );
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_restart() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_rot_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_rot_1",
        &["repo", "read:user"],
    );
    let run = call(&kw, "github_get_me", "{}");
    assert_eq!(run.code(), Some(0), "{}", run.stdout());
    let r2 = stored_refresh_token(&kw, "github").await.unwrap();
    assert_ne!(
        r2, "kwcanary_refresh_1a2b3c4d5e6f.ghr_rot_1",
        "the rotated refresh token was stored"
    );
    assert_eq!(
        Some(r2.clone()),
        fake.issued_tokens("github")[0].refresh_token
    );
    assert!(!fake.refresh_token_is_valid("github", "kwcanary_refresh_1a2b3c4d5e6f.ghr_rot_1"));
    // A new process reads the rotated token from disk and refreshes with it (the provider
    // refuses the current access token, so the new process must refresh).
    fake.expire_access_token(&fake.issued_tokens("github")[0].access_token);
    let run = call(&kw, "github_get_me", "{}");
    assert_eq!(run.code(), Some(0), "{}", run.stdout());
    assert_eq!(fake.successful_refreshes("github"), 2);
    assert!(
        !fake.family_revoked("github"),
        "the spent refresh token was never presented again"
    );
    assert_eq!(status_of(&kw, "github").unwrap()["status"], "active");
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_around_the_token_response_never_leaves_a_silently_dead_token() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the pause hook exists in debug builds only");
        return;
    }
    // Killed after the token endpoint answered, before the write: the new tokens are lost.
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_k9_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_k9_1",
        &["repo", "read:user"],
    );
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.gho_k9_access");
    let mut run = Running::spawn(
        &kw,
        &["call", "github_get_me"],
        &[("KEYWARD_TEST_PAUSE_AT", "refresh-response")],
    );
    run.wait_for(Duration::from_secs(30), |l| {
        l.contains("paused at refresh-response").then_some(())
    });
    run.kill9();
    assert_eq!(
        fake.successful_refreshes("github"),
        1,
        "the provider rotated the refresh token"
    );
    // After the restart the next use is refused loudly, never a silent 401 on a dead token.
    let out = call(&kw, "github_get_me", "{}");
    assert_eq!(out.code(), Some(1));
    assert!(out.stdout().contains(RECONNECT), "{}", out.stdout());
    assert_eq!(
        status_of(&kw, "github").unwrap()["status"],
        "needs_reconnect"
    );

    // Killed after the write: the new token is on disk and used without another refresh.
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_k9b_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_k9b_1",
        &["repo", "read:user"],
    );
    let mut run = Running::spawn(
        &kw,
        &["call", "github_get_me"],
        &[("KEYWARD_TEST_PAUSE_AT", "refresh-saved")],
    );
    run.wait_for(Duration::from_secs(30), |l| {
        l.contains("paused at refresh-saved").then_some(())
    });
    run.kill9();
    let issued = fake.issued_tokens("github");
    assert_eq!(
        stored_access_token(&kw, "github").await,
        issued[0].access_token
    );
    let out = call(&kw, "github_get_me", "{}");
    assert_eq!(out.code(), Some(0), "{}", out.stdout());
    assert_eq!(
        fake.refresh_count("github"),
        1,
        "no second refresh was needed"
    );
    assert_eq!(status_of(&kw, "github").unwrap()["status"], "active");
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_marks_the_connection_needs_reconnect_with_the_fixing_command() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    for (provider, tool, scopes, code) in [
        (
            "github",
            "github_get_me",
            vec!["repo", "read:user"],
            "bad_refresh_token",
        ),
        (
            "slack",
            "slack_list_channels",
            vec!["channels:read"],
            "invalid_refresh_token",
        ),
        (
            "google",
            "calendar_list_calendars",
            vec!["https://www.googleapis.com/auth/calendar.readonly"],
            "invalid_grant",
        ),
    ] {
        fake.force_invalid_grant(provider, true);
        import_expired(
            &fake,
            &kw,
            provider,
            &format!("kwcanary_access_9f8e7d6c5b4a.{provider}-dead"),
            &format!("kwcanary_refresh_1a2b3c4d5e6f.{provider}-dead"),
            &scopes,
        );
        let out = call(&kw, tool, "{}");
        assert_eq!(out.code(), Some(1), "{provider}");
        let err: Value = serde_json::from_str(&out.stdout()).unwrap();
        let text = format!("{} — {}", err["error"], err["hint"]);
        assert!(
            text.contains(&format!(
                "connection needs reconnecting: run `keyward connect {provider}`"
            )),
            "{provider}: {text}"
        );
        assert!(
            text.contains(code),
            "{provider}: the provider's reason is named: {text}"
        );
        assert_eq!(err["retryable"], false);
        let row = status_of(&kw, provider).unwrap();
        assert_eq!(row["status"], "needs_reconnect", "{provider}");
        assert!(row["reason"].as_str().unwrap().contains(code));
        assert!(
            stored_refresh_token(&kw, provider).await.is_some(),
            "{provider}: the record is kept"
        );
        // Further calls fail at once, without asking the provider again.
        let before = fake.refresh_count(provider);
        assert_eq!(call(&kw, tool, "{}").code(), Some(1));
        assert_eq!(fake.refresh_count(provider), before);
    }
    let audit = assert_audit_clean(&kw, &fake_secrets(&fake));
    assert!(
        audit.contains("needs reconnecting"),
        "the refusal is audited"
    );

    // Reconnecting clears it.
    fake.force_invalid_grant("github", false);
    let mut run = no_browser_connect(&kw, "github", &[]);
    let url = run.authorize_url();
    play_browser(&url, |u| u).await;
    assert_eq!(run.finish(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(status_of(&kw, "github").unwrap()["status"], "active");
    assert_eq!(call(&kw, "github_get_me", "{}").code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_outages_are_retried_and_never_break_the_connection() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_5xx_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_5xx_1",
        &["repo", "read:user"],
    );
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.gho_5xx_access");
    // Two 503s, then an answer: one call, three token requests, success.
    fake.fail_token_endpoint("github", 2, 503);
    let out = call(&kw, "github_get_me", "{}");
    assert_eq!(out.code(), Some(0), "{}", out.stdout());
    assert_eq!(fake.refresh_count("github"), 3);
    assert_eq!(fake.successful_refreshes("github"), 1);
    assert_eq!(status_of(&kw, "github").unwrap()["status"], "active");

    // A longer outage fails the call as retryable and leaves the connection active.
    let kw = home_for(&fake, &[]);
    import_expired(
        &fake,
        &kw,
        "slack",
        "kwcanary_access_9f8e7d6c5b4a.xoxp-5xx",
        "kwcanary_refresh_1a2b3c4d5e6f.xoxe-5xx",
        &["channels:read"],
    );
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.xoxp-5xx");
    fake.fail_token_endpoint("slack", 50, 502);
    let out = call(&kw, "slack_list_channels", "{}");
    assert_eq!(out.code(), Some(1));
    let err: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(err["retryable"], true, "{err}");
    assert_eq!(status_of(&kw, "slack").unwrap()["status"], "active");
    fake.fail_token_endpoint("slack", 0, 502);
    assert_eq!(
        call(&kw, "slack_list_channels", "{}").code(),
        Some(0),
        "it recovers once the provider does"
    );

    // Ahead of expiry, an outage falls back to the still-valid token: a one-hour token obtained
    // 58 minutes ago, inside the 300 s margin and valid for 120 s more.
    let kw = home_for(&fake, &[]);
    let scope = "https://www.googleapis.com/auth/calendar.readonly";
    fake.grant_with_refresh(
        "google",
        "kwcanary_access_9f8e7d6c5b4a.ya29.valid",
        "kwcanary_refresh_1a2b3c4d5e6f.1//g-valid",
        &[scope],
        Some(Duration::from_secs(3600)),
    );
    let json = serde_json::json!({"access_token": "kwcanary_access_9f8e7d6c5b4a.ya29.valid", "refresh_token": "kwcanary_refresh_1a2b3c4d5e6f.1//g-valid", "expires_in": 120, "scope": scope});
    kw.ok(&["import", "google"], &json.to_string());
    backdate_obtained_at(&kw, "google", 3480).await;
    fake.fail_token_endpoint("google", 50, 503);
    let out = call(&kw, "calendar_list_calendars", "{}");
    assert_eq!(out.code(), Some(0), "{}", out.stdout());
    assert!(
        fake.refresh_count("google") >= 1,
        "a proactive refresh was tried"
    );
    assert_eq!(
        stored_access_token(&kw, "google").await,
        "kwcanary_access_9f8e7d6c5b4a.ya29.valid"
    );
    assert_eq!(status_of(&kw, "google").unwrap()["status"], "active");
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_a_token_believed_valid_refreshes_once_and_retries_once() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    // No `expires_in`: keyward believes the token valid; the provider has expired it.
    fake.grant_with_refresh(
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_401_access",
        "kwcanary_refresh_1a2b3c4d5e6f.ghr_401_1",
        &["repo"],
        Some(Duration::from_secs(3600)),
    );
    let json = serde_json::json!({"access_token": "kwcanary_access_9f8e7d6c5b4a.gho_401_access", "refresh_token": "kwcanary_refresh_1a2b3c4d5e6f.ghr_401_1", "scope": "repo"});
    kw.ok(&["import", "github"], &json.to_string());
    fake.expire_access_token("kwcanary_access_9f8e7d6c5b4a.gho_401_access");
    fake.clear_requests();
    let out = call(&kw, "github_get_me", "{}");
    assert_eq!(out.code(), Some(0), "{}", out.stdout());
    assert_eq!(fake.refresh_count("github"), 1);
    let api: Vec<_> = fake.requests_to("/github/user");
    assert_eq!(api.len(), 2, "the call and one retry");
    assert_eq!(
        api[0].bearer_token(),
        Some("kwcanary_access_9f8e7d6c5b4a.gho_401_access")
    );
    assert_eq!(
        api[1].bearer_token(),
        Some(fake.issued_tokens("github")[0].access_token.as_str())
    );

    // When the refreshed token is refused too (the provider now issues tokens that are dead
    // on arrival), the call fails after exactly one refresh and one retry: no loop.
    fake.access_token_ttl("github", Duration::ZERO);
    let current = fake.issued_tokens("github")[0].access_token.clone();
    fake.expire_access_token(&current);
    fake.clear_requests();
    let out = call(&kw, "github_get_me", "{}");
    assert_eq!(out.code(), Some(1), "{}", out.stdout());
    let err: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(err["status"], 401, "{err}");
    assert_eq!(fake.refresh_count("github"), 2, "one more refresh, not two");
    assert_eq!(
        fake.requests_to("/github/user").len(),
        2,
        "the call and one retry"
    );
    assert_audit_clean(&kw, &fake_secrets(&fake));
}

// ---- disconnect ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_revokes_at_the_provider_before_deleting() {
    let fake = FakeUpstream::start().await;
    let kw = home_for(&fake, &[]);
    let google_scope = "https://www.googleapis.com/auth/calendar.readonly";
    for (provider, access, refresh, scopes) in [
        (
            "github",
            "kwcanary_access_9f8e7d6c5b4a.gho_rv_access",
            "kwcanary_refresh_1a2b3c4d5e6f.ghr_rv_1",
            vec!["repo"],
        ),
        (
            "slack",
            "kwcanary_access_9f8e7d6c5b4a.xoxp-rv-access",
            "kwcanary_refresh_1a2b3c4d5e6f.xoxe-rv-1",
            vec!["channels:read"],
        ),
        (
            "google",
            "kwcanary_access_9f8e7d6c5b4a.ya29.rv-access",
            "kwcanary_refresh_1a2b3c4d5e6f.1//rv-refresh",
            vec![google_scope],
        ),
    ] {
        fake.grant_with_refresh(
            provider,
            access,
            refresh,
            &scopes,
            Some(Duration::from_secs(3600)),
        );
        let json = serde_json::json!({"access_token": access, "refresh_token": refresh, "expires_in": 3600, "scope": scopes.join(" ")});
        kw.ok(&["import", provider], &json.to_string());
        let out = kw.run(&["disconnect", provider], "");
        assert_eq!(out.code(), Some(0), "{provider}: {}", out.stderr());
        assert!(out.stdout().contains("revoked at"), "{}", out.stdout());
        let revoked = fake.revocations(provider);
        // Google: the refresh token, which revokes the whole grant; the others: the access token.
        let expected = if provider == "google" {
            refresh
        } else {
            access
        };
        assert_eq!(revoked, vec![expected.to_string()], "{provider}");
        assert!(
            !fake.token_is_valid(provider, access),
            "{provider}: the grant is dead at the provider"
        );
        assert!(
            status_of(&kw, provider).is_none(),
            "{provider}: deleted locally"
        );
        assert_clean(&out, &fake_secrets(&fake));
    }
    let audit = assert_audit_clean(&kw, &fake_secrets(&fake));
    assert_eq!(audit.matches("\"event\":\"revoke\"").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revocation_deletes_nothing_unless_forced() {
    let fake = FakeUpstream::start().await;
    // GitHub revokes only with the client credentials; this home has the id but no secret.
    let kw = home_for(&fake, &[]);
    let config = std::fs::read_to_string(kw.home().join("config.toml")).unwrap();
    let config = config.replace(
        &format!("client_secret = \"{}\"\n", Provider::Github.client_secret()),
        "",
    );
    std::fs::write(kw.home().join("config.toml"), config).unwrap();
    fake.grant(
        "github",
        "kwcanary_access_9f8e7d6c5b4a.gho_keep_access",
        &["repo"],
        None,
    );
    kw.ok(
        &["import", "github"],
        r#"{"access_token":"kwcanary_access_9f8e7d6c5b4a.gho_keep_access","scope":"repo"}"#,
    );
    let out = kw.run(&["disconnect", "github"], "");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr().contains("client id and secret"),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("--force"), "{}", out.stderr());
    assert!(status_of(&kw, "github").is_some(), "nothing was deleted");
    assert!(fake.revocations("github").is_empty());

    let out = kw.run(&["disconnect", "github", "--force"], "");
    assert_eq!(out.code(), Some(0), "{}", out.stderr());
    assert!(out.stderr().contains("still lives"), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("https://github.com/settings/applications"),
        "{}",
        out.stderr()
    );
    assert!(status_of(&kw, "github").is_none());
    assert!(
        fake.token_is_valid("github", "kwcanary_access_9f8e7d6c5b4a.gho_keep_access"),
        "the grant was not revoked, as the warning says"
    );

    // Slack refuses a token it does not know: again nothing is deleted without --force.
    kw.ok(
        &["import", "slack"],
        r#"{"access_token":"kwcanary_access_9f8e7d6c5b4a.xoxp-unknown-to-slack","scope":"channels:read"}"#,
    );
    let out = kw.run(&["disconnect", "slack"], "");
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr().contains("invalid_auth"), "{}", out.stderr());
    assert!(status_of(&kw, "slack").is_some());
    assert_eq!(
        kw.run(&["disconnect", "slack", "--force"], "").code(),
        Some(0)
    );
    assert!(status_of(&kw, "slack").is_none());
    let audit = kw.ok(&["audit"], "").stdout();
    assert!(audit.contains("forced"), "{audit}");
}
