//! Canaries on every error path (invariants 1 and 11). A hostile fake provider quotes back
//! everything keyward sent it — the bearer token, the refresh token, the client secret — in
//! every field of its error answers; each error mapping (4xx, 5xx, 401 after a refresh, Slack
//! `ok: false`, token-endpoint refusals) is driven through the real binary over the CLI, stdio
//! and HTTP, with logs at trace level, and the results, stderr, audit log and `status` are
//! grepped for every secret the fake knows. Each case also checks that the echo did reach
//! keyward (the error says `[redacted]`), so a fake that stopped echoing fails the test instead
//! of passing it vacuously.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::canary::fake_secrets;
use crate::support::home::{expired_token_json, status};
use crate::support::home::{Kw, Run};
use crate::support::mcp::{error_text, serve_stdio};
use crate::support::{Echo, FakeUpstream};

/// Every secret the fake has seen or issued, plus the canaries and client secrets.
fn secrets(fake: &FakeUpstream, extra: &[&str]) -> Vec<String> {
    let mut all = fake_secrets(fake);
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

/// `text` with every secret replaced, so a failing assertion can show what leaked where
/// without printing the secret itself.
fn marked(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "<<LEAKED SECRET>>");
    }
    out
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} leaked a secret:\n{}",
            marked(text, secrets)
        );
    }
}

/// A home with a GitHub, Slack and Google connection against `fake` (access and refresh
/// tokens the fake knows, valid for hours), whose commands log at trace level.
async fn traced_setup() -> (FakeUpstream, Kw) {
    traced_home(false).await
}

async fn traced_home(expired: bool) -> (FakeUpstream, Kw) {
    let fake = FakeUpstream::start().await;
    let mut kw = crate::support::home::home_for(&fake, &[]);
    kw.env.push(("RUST_LOG".into(), "trace".into()));
    let scopes = [
        ("github", "repo read:user"),
        ("slack", "channels:read users:read"),
        (
            "google",
            "https://www.googleapis.com/auth/calendar.readonly https://www.googleapis.com/auth/calendar.events",
        ),
    ];
    for (provider, scope) in scopes {
        let access = format!("{}_{provider}", crate::support::CANARY_ACCESS);
        let refresh = format!("{}_{provider}", crate::support::CANARY_REFRESH);
        let list: Vec<&str> = scope.split(' ').collect();
        fake.grant_with_refresh(
            provider,
            &access,
            &refresh,
            &list,
            Some(Duration::from_secs(3600)),
        );
        let response = if expired {
            expired_token_json(&access, &refresh, scope)
        } else {
            json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                   "expires_in": 3600, "scope": scope})
            .to_string()
        };
        kw.ok(&["import", provider], &response);
    }
    (fake, kw)
}

/// Run `keyward call` and check the failure: exit 1, an error JSON that shows the echo was
/// redacted, and no secret on stdout or stderr.
fn failing_call(fake: &FakeUpstream, kw: &Kw, tool: &str, args: Value, case: &str) -> Value {
    failing_call_with(fake, kw, tool, args, case, true)
}

/// [`failing_call`]; `quoted`: the error quotes the provider (an outage's does not: it says
/// the provider kept failing).
fn failing_call_with(
    fake: &FakeUpstream,
    kw: &Kw,
    tool: &str,
    args: Value,
    case: &str,
    quoted: bool,
) -> Value {
    let run = kw.run(&["call", tool, "--args", &args.to_string()], "");
    let all = secrets(fake, &[]);
    assert_no_secret(&format!("{case}: stdout"), &run.stdout(), &all);
    assert_no_secret(&format!("{case}: stderr"), &run.stderr(), &all);
    assert_eq!(
        run.code(),
        Some(1),
        "{case}: {}",
        marked(&run.stdout(), &all)
    );
    let error: Value = serde_json::from_str(&run.stdout()).expect("the error is JSON");
    assert!(
        !quoted || run.stdout().contains("[redacted]"),
        "{case}: the provider's echo should show up redacted: {}",
        run.stdout()
    );
    error
}

fn assert_audit_and_status_clean(fake: &FakeUpstream, kw: &Kw) {
    let all = secrets(fake, &[]);
    let audit = kw.ok(&["audit", "--json"], "");
    assert_no_secret("audit --json", &audit.stdout(), &all);
    assert_no_secret("audit stderr", &audit.stderr(), &all);
    assert!(audit.stdout().contains("[redacted]"), "{}", audit.stdout());
    let text = kw.ok(&["audit"], "");
    assert_no_secret("audit", &text.stdout(), &all);
    for args in [&["status", "--json"][..], &["status"][..]] {
        let run: Run = kw.ok(args, "");
        assert_no_secret("status", &run.stdout(), &all);
        assert_no_secret("status stderr", &run.stderr(), &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_quoting_the_token_are_redacted_on_every_mapping() {
    let (fake, kw) = traced_setup().await;

    // GitHub: 422, 404, 403 (the scope headers quote the token too), 5xx after retries.
    fake.echo_api("/github/user", 1, Echo::Status(422));
    let e = failing_call(&fake, &kw, "github_get_me", json!({}), "github 422");
    assert_eq!(e["status"], 422);
    fake.echo_api("/github/user", 1, Echo::Status(404));
    failing_call(&fake, &kw, "github_get_me", json!({}), "github 404");
    fake.echo_api("/github/user", 1, Echo::Status(403));
    let e = failing_call(&fake, &kw, "github_get_me", json!({}), "github 403");
    assert!(e["hint"].as_str().unwrap().contains("[redacted]"), "{e}");
    fake.echo_api("/github/repos/o/r/issues/1", 100, Echo::Status(502));
    let e = failing_call_with(
        &fake,
        &kw,
        "github_get_issue",
        json!({"owner": "o", "repo": "r", "number": 1}),
        "github 502",
        false,
    );
    assert_eq!(e["retryable"], true, "{e}");

    // 401, refresh, 401 again: the second answer quotes the token the refresh just issued.
    let refreshes = fake.successful_refreshes("github");
    fake.echo_api("/github/user", 2, Echo::Status(401));
    failing_call(
        &fake,
        &kw,
        "github_get_me",
        json!({}),
        "github 401 after refresh",
    );
    assert_eq!(fake.successful_refreshes("github"), refreshes + 1);
    assert!(!fake.issued_tokens("github").is_empty());

    // Slack `ok: false`: a known code with `needed`/`provided` quoting the request, and the
    // request quoted as the error code itself; and an HTTP 500.
    fake.echo_api(
        "/slack/api/conversations.list",
        1,
        Echo::SlackCode("missing_scope"),
    );
    let e = failing_call(
        &fake,
        &kw,
        "slack_list_channels",
        json!({}),
        "slack missing_scope",
    );
    assert!(e["hint"].as_str().unwrap().contains("[redacted]"), "{e}");
    fake.echo_api("/slack/api/conversations.list", 1, Echo::SlackQuotedAsCode);
    failing_call(
        &fake,
        &kw,
        "slack_list_channels",
        json!({}),
        "slack error code",
    );
    fake.echo_api("/slack/api/users.info", 100, Echo::Status(500));
    failing_call_with(
        &fake,
        &kw,
        "slack_get_user",
        json!({"user": "U0TESTER01"}),
        "slack 500",
        false,
    );

    // Google: 400, 403 (the insufficient_scope challenge quotes the token), and 401 →
    // refresh → 401.
    fake.echo_api("/google/calendar/v3/calendars", 1, Echo::Status(400));
    failing_call(&fake, &kw, "calendar_list_events", json!({}), "google 400");
    fake.echo_api("/google/calendar/v3/calendars", 1, Echo::Status(403));
    let e = failing_call(&fake, &kw, "calendar_list_events", json!({}), "google 403");
    assert!(e["hint"].as_str().unwrap().contains("[redacted]"), "{e}");
    fake.echo_api("/google/calendar/v3/calendars", 2, Echo::Status(401));
    failing_call(
        &fake,
        &kw,
        "calendar_list_events",
        json!({}),
        "google 401 after refresh",
    );

    assert_audit_and_status_clean(&fake, &kw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusals_quoting_the_grant_are_redacted_before_they_are_stored() {
    let (fake, kw) = traced_home(true).await;

    // A permanent refusal: stored as the `needs_reconnect` reason, shown by status and by
    // every later call.
    fake.echo_token_errors("github", 1, 400, "invalid_grant");
    let e = failing_call(&fake, &kw, "github_get_me", json!({}), "invalid_grant");
    assert!(
        e["hint"]
            .as_str()
            .unwrap()
            .contains("keyward connect github"),
        "{e}"
    );
    let github = status(&kw)
        .into_iter()
        .find(|row| row["provider"] == "github")
        .unwrap();
    assert_eq!(github["status"], "needs_reconnect");
    assert!(
        github["reason"].as_str().unwrap().contains("[redacted]"),
        "{github}"
    );
    failing_call(
        &fake,
        &kw,
        "github_get_me",
        json!({}),
        "needs_reconnect again",
    );

    // keyward's client refused (the client secret quoted), an outage quoting the request as its
    // error code (retried, then transient), and an unknown code that is the echo.
    fake.echo_token_errors("slack", 1, 401, "invalid_client");
    failing_call(
        &fake,
        &kw,
        "slack_list_channels",
        json!({}),
        "invalid_client",
    );
    fake.echo_token_errors("google", 3, 503, "");
    let e = failing_call(
        &fake,
        &kw,
        "calendar_list_events",
        json!({}),
        "token endpoint 503",
    );
    assert_eq!(e["retryable"], true, "{e}");
    fake.echo_token_errors("google", 1, 400, "");
    failing_call(
        &fake,
        &kw,
        "calendar_list_events",
        json!({}),
        "unknown token error",
    );

    assert_audit_and_status_clean(&fake, &kw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_over_stdio_carry_no_token_in_content_structured_content_or_logs() {
    let (fake, kw) = traced_setup().await;
    let server = serve_stdio(&kw, &[]).await;
    let cases = [
        (
            "/github/user",
            Echo::Status(422),
            1,
            "github_get_me",
            json!({}),
        ),
        (
            "/github/user",
            Echo::Status(401),
            2,
            "github_get_me",
            json!({}),
        ),
        (
            "/slack/api/conversations.list",
            Echo::SlackCode("missing_scope"),
            1,
            "slack_list_channels",
            json!({}),
        ),
        (
            "/google/calendar/v3/calendars",
            Echo::Status(400),
            1,
            "calendar_list_events",
            json!({}),
        ),
    ];
    for (path, echo, n, tool, args) in cases {
        fake.echo_api(path, n, echo);
        let result = crate::support::mcp::call(&server.client, tool, args).await;
        let all = secrets(&fake, &[]);
        let wire = serde_json::to_string(&result).unwrap();
        assert_no_secret(&format!("{tool} {echo:?} result"), &wire, &all);
        let text = error_text(&result);
        assert!(text.contains("[redacted]"), "{tool} {echo:?}: {text}");
        let structured = result
            .structured_content
            .clone()
            .expect("structuredContent");
        assert!(
            structured.to_string().contains("[redacted]"),
            "{structured}"
        );
    }
    // A token error: a 401 makes keyward refresh, and the token endpoint refuses the grant
    // quoting the refresh token and the client secret.
    fake.echo_api("/google/calendar/v3/calendars", 1, Echo::Status(401));
    fake.echo_token_errors("google", 1, 400, "invalid_grant");
    let result = crate::support::mcp::call(&server.client, "calendar_list_events", json!({})).await;
    let wire = serde_json::to_string(&result).unwrap();
    assert_no_secret("token error result", &wire, &secrets(&fake, &[]));
    let text = error_text(&result);
    assert!(
        text.contains("needs reconnecting") && text.contains("[redacted]"),
        "{text}"
    );
    let log = server.finish().await;
    let log = String::from_utf8_lossy(&log).into_owned();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "logs at trace level were captured"
    );
    assert_no_secret("stderr of keyward serve", &log, &secrets(&fake, &[]));
    assert_audit_and_status_clean(&fake, &kw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_over_http_carry_no_token_in_responses_or_logs() {
    keyward::server::install_crypto_provider();
    let (fake, kw) = traced_setup().await;
    let key = kw
        .ok(&["users", "add", "default"], "")
        .stdout()
        .trim()
        .to_string();
    let addr = format!("127.0.0.1:{}", crate::support::mcp::free_port());
    let mut child = kw
        .command(&["serve", "--http", &addr, "--json-response"])
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = crate::support::mcp::drain(child.stderr.take().unwrap());
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    assert!(
        crate::support::mcp::wait_healthy(&base, 30).await,
        "keyward serve --http did not come up"
    );
    let post = |body: Value, session: Option<String>| {
        let mut request = http
            .post(format!("{base}/mcp"))
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "canary", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(init.status(), 200);
    let session = init
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let _ = init.bytes().await;
    let note = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        session.clone(),
    )
    .await
    .unwrap();
    assert!(note.status().is_success());
    let cases = [
        ("/github/user", Echo::Status(422), 1, "github_get_me"),
        ("/github/user", Echo::Status(401), 2, "github_get_me"),
        (
            "/slack/api/conversations.list",
            Echo::SlackQuotedAsCode,
            1,
            "slack_list_channels",
        ),
    ];
    for (i, (path, echo, n, tool)) in cases.into_iter().enumerate() {
        fake.echo_api(path, n, echo);
        let response = post(
            json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                   "params": {"name": tool, "arguments": {}}}),
            session.clone(),
        )
        .await
        .unwrap();
        let headers = format!("{:?}", response.headers());
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
        let all = secrets(&fake, &[&key]);
        assert_no_secret(&format!("{tool} {echo:?}: HTTP headers"), &headers, &all);
        assert_no_secret(&format!("{tool} {echo:?}: HTTP body"), &body, &all);
        assert!(
            body.contains("\"isError\":true") && body.contains("[redacted]"),
            "{body}"
        );
    }
    // The same failures asked for statelessly (MCP 2026-07-28): no session, the version and
    // the client's capabilities in `_meta`, the routing headers beside it.
    for (i, (path, echo, n, tool)) in cases.into_iter().enumerate() {
        fake.echo_api(path, n, echo);
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
                          "io.modelcontextprotocol/clientInfo": {"name": "canary", "version": "1"}});
        let response = http
            .post(format!("{base}/mcp"))
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .body(
                json!({"jsonrpc": "2.0", "id": 50 + i, "method": "tools/call",
                       "params": {"name": tool, "arguments": {}, "_meta": meta}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let headers = format!("{:?}", response.headers());
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
        let all = secrets(&fake, &[&key]);
        assert_no_secret(
            &format!("2026 {tool} {echo:?}: HTTP headers"),
            &headers,
            &all,
        );
        assert_no_secret(&format!("2026 {tool} {echo:?}: HTTP body"), &body, &all);
        assert!(
            body.contains("\"isError\":true") && body.contains("\"resultType\":\"complete\""),
            "{body}"
        );
    }
    // A token error over HTTP, as over stdio.
    fake.echo_api("/google/calendar/v3/calendars", 1, Echo::Status(401));
    fake.echo_token_errors("google", 1, 400, "invalid_grant");
    let response = post(
        json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
               "params": {"name": "calendar_list_events", "arguments": {}}}),
        session.clone(),
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
    assert_no_secret("token error over HTTP", &body, &secrets(&fake, &[&key]));
    assert!(
        body.contains("needs reconnecting") && body.contains("[redacted]"),
        "{body}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(log.contains("TRACE"), "logs at trace level were captured");
    assert_no_secret(
        "stderr of keyward serve --http",
        &log,
        &secrets(&fake, &[&key]),
    );
    assert_audit_and_status_clean(&fake, &kw);
}

/// The token-exchange endpoint: refresh failures whose token endpoint quotes every secret come
/// back as RFC 6749 errors with the quote redacted; the server's trace log, the audit log and
/// `status` hold no secret, nor the client's secret or the user's API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_refusals_carry_no_token_in_answers_or_logs() {
    keyward::server::install_crypto_provider();
    let (fake, kw) = traced_home(true).await;
    let config = kw.home().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[exchange]\nenabled = true\n");
    std::fs::write(&config, text).unwrap();
    let key = kw
        .ok(&["users", "add", "default"], "")
        .stdout()
        .trim()
        .to_string();
    let registered = kw
        .ok(
            &[
                "clients",
                "add",
                "backend",
                "--providers",
                "github,slack,google",
                "--scopes",
                "repo read:user channels:read users:read \
                 https://www.googleapis.com/auth/calendar.readonly \
                 https://www.googleapis.com/auth/calendar.events",
            ],
            "",
        )
        .stdout();
    let field = |name: &str| {
        registered
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let (id, secret) = (field("client_id"), field("client_secret"));
    let server = crate::server_stateless::HttpProcess::start(&kw).await;
    let exchange = |provider: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/oauth/token", server.base))
            .basic_auth(&id, Some(&secret))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", key.as_str()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("audience", provider),
            ])
            .send()
    };
    let all = secrets(&fake, &[&key, &secret]);
    for (provider, status, code, echo) in [
        ("github", 400, "invalid_grant", (400, "invalid_grant")),
        ("slack", 500, "server_error", (401, "invalid_client")),
        ("google", 503, "temporarily_unavailable", (503, "")),
    ] {
        let times = if echo.0 == 503 { 3 } else { 1 };
        fake.echo_token_errors(provider, times, echo.0, echo.1);
        let answer = exchange(provider).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{provider}");
        let body = answer.text().await.unwrap();
        assert_no_secret(&format!("{provider}: the exchange's answer"), &body, &all);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("[redacted]"),
            "{provider}: the echo should show up redacted: {body}"
        );
    }
    let log = String::from_utf8(server.stop().await).unwrap();
    assert!(
        log.contains("token exchange refused"),
        "the log is at trace level"
    );
    assert_no_secret("stderr of keyward serve --http", &log, &all);
    assert_audit_and_status_clean(&fake, &kw);
}

#[test]
fn a_config_error_names_file_line_and_key_but_never_the_value() {
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    let secret = "kwcanary_secret_config_5a4b3c2d1e";
    std::fs::write(
        kw.home().join("config.toml"),
        format!("[providers.github]\nclient_id = \"x\"\nclient_secret = [\"{secret}\"]\n"),
    )
    .unwrap();
    for args in [
        &["tools"][..],
        &["call", "github_get_me"][..],
        &["serve"][..],
    ] {
        let run = kw.run(args, "");
        assert_eq!(run.code(), Some(1), "{args:?}: {}", run.stderr());
        run.assert_clean(&[secret]);
        let err = run.stderr();
        assert!(
            err.contains("config.toml") && err.contains("line 3") && err.contains("client_secret"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_exchange_refusal_quoting_the_code_and_client_secret_is_redacted() {
    let fake = FakeUpstream::start().await;
    let kw = crate::support::home::home_for(&fake, &[]);
    let mut run = crate::support::home::Running::spawn(
        &kw,
        &["connect", "github", "--no-browser", "--timeout", "60"],
        &[("RUST_LOG", "trace")],
    );
    let url = run.authorize_url();
    fake.echo_token_errors("github", 1, 400, "bad_verification_code");
    let mut code = String::new();
    let (page_status, page) = crate::oauth_fake_ext::play_browser(&url, |cb| {
        code = crate::oauth_fake_ext::query(&cb, "code").expect("a code");
        cb
    })
    .await;
    let out = run.finish(Duration::from_secs(30));
    let all = secrets(&fake, &[&code]);
    assert_no_secret("the callback page", &page, &all);
    assert_no_secret("connect stdout", &out.stdout(), &all);
    assert_no_secret("connect stderr", &out.stderr(), &all);
    assert_eq!(out.code(), Some(1));
    assert!(page_status >= 400, "{page_status}: {page}");
    assert!(
        out.stderr().contains("bad_verification_code") && out.stderr().contains("[redacted]"),
        "{}",
        out.stderr()
    );
}

/// Remote users (invariants 1 and 16): with logs at trace level, nothing keyward shows or logs
/// while it refuses tokens, hands out a `/connect` link, signs a browser in with the identity
/// provider, runs the provider's flow, serves the account page and calls a tool for the
/// identity provider's user carries a token — the provider's, the identity provider's access
/// and ID tokens, or the client secrets.
#[tokio::test(flavor = "multi_thread")]
async fn remote_users_refusals_links_sign_in_and_pages_carry_no_secret() {
    use crate::remote_auth::{get_me, Remote};
    use crate::server_stateless::{answer, call_tool, post};
    use crate::support::browser::Browser;
    use crate::support::issuer;
    let remote = Remote::start_with(
        jsonwebtoken::Algorithm::ES256,
        &[],
        true,
        &[("RUST_LOG", "trace")],
    )
    .await;
    let base = &remote.base;
    let alice = remote.token("alice");
    let mut shown = Vec::new();
    // A token for another audience is refused: neither the body nor the challenge quote it.
    let wrong = remote
        .issuer
        .token("alice", "https://other.example/mcp", "keyward");
    let (status, body, challenge) = get_me(base, &wrong).await;
    assert_eq!(status, 401);
    shown.push(body.to_string());
    shown.push(challenge.unwrap_or_default());
    // A call that needs a connection: the link in the hint.
    let response = post(base, &alice, &call_tool(1, "github_get_me", json!({})))
        .send()
        .await
        .unwrap();
    let needs = answer(response).await.1;
    shown.push(needs.to_string());
    let hint = needs["result"]["structuredContent"]["hint"]
        .as_str()
        .unwrap()
        .to_string();
    let link = hint
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_string();
    // The browser signs in and connects; every page on the way is kept.
    remote.issuer.sign_in_browser_as("alice");
    let browser = Browser::new();
    let page = browser.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    shown.push(page.body);
    shown.push(format!("{:?}", page.visited));
    let account = browser.get(&format!("{base}/")).await;
    assert!(account.body.contains("GitHub"), "{}", account.body);
    shown.push(account.body);
    let (status, me, _) = get_me(base, &alice).await;
    assert_eq!(status, 200);
    assert_eq!(me["result"]["isError"], false, "{me}");
    shown.push(me.to_string());

    let stderr = String::from_utf8_lossy(&remote.server.stop().await).into_owned();
    let mut all = secrets(&remote.up, &[issuer::CLIENT_SECRET, &alice, &wrong]);
    all.extend(remote.issuer.issued.lock().unwrap().iter().cloned());
    assert!(
        remote.up.issued_tokens("github").len() == 1,
        "the provider issued the grant the browser flow stored"
    );
    for (i, text) in shown.iter().enumerate() {
        assert_no_secret(&format!("answer {i} of the remote flow"), text, &all);
    }
    assert_no_secret(
        "stderr of keyward serve --http at trace level",
        &stderr,
        &all,
    );
    let audit = serde_json::to_string(&crate::support::canary::audit_json(&remote.kw)).unwrap();
    assert_no_secret("the audit log", &audit, &all);
    assert_no_secret(
        "status",
        &serde_json::to_string(&crate::support::home::status(&remote.kw)).unwrap(),
        &all,
    );
}
