//! The catalog and executor end to end: the real `keyward call` binary against the fake
//! upstream. Each test checks what reached the upstream (method, path, query, body, token) and
//! what came back to the caller; for every tool, that is its fixture (`tests/fixtures/`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::support::fixtures;
use crate::support::home::{Kw, Run};
use crate::support::{FakeUpstream, RecordedRequest};
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

const GITHUB_SCOPES: &str = "repo read:user";
const SLACK_SCOPES: &str =
    "channels:read,channels:history,chat:write,search:read,users:read,reactions:write,im:write";
const GOOGLE_SCOPES: &str = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly";

/// A home folder configured against `fake`, with a GitHub, Slack and Google connection whose
/// access token is the canary.
pub(crate) async fn setup() -> (FakeUpstream, Kw) {
    let fake = FakeUpstream::start().await;
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    std::fs::write(kw.home().join("config.toml"), fake.config_toml()).unwrap();
    for (provider, scopes) in [
        ("github", GITHUB_SCOPES),
        ("slack", SLACK_SCOPES),
        ("google", GOOGLE_SCOPES),
    ] {
        connect(&fake, &kw, provider, scopes, Some(scopes));
    }
    (fake, kw)
}

/// Import a `provider` connection whose access token is the canary: the fake grants it
/// `granted` (the provider's own separator), keyward records `recorded` (`None`: an import
/// without `scope`, which keyward cannot check, so the provider's refusal is what shows).
pub(crate) fn connect(
    fake: &FakeUpstream,
    kw: &Kw,
    provider: &str,
    granted: &str,
    recorded: Option<&str>,
) {
    let token = format!("{CANARY_ACCESS}_{provider}");
    let scope_list: Vec<&str> = granted.split([' ', ',']).collect();
    fake.grant(provider, &token, &scope_list, None);
    let mut json = json!({"access_token": token, "refresh_token": format!("{CANARY_REFRESH}_{provider}"),
                          "token_type": "bearer", "expires_in": 28800});
    if let Some(scopes) = recorded {
        json["scope"] = json!(scopes);
    }
    kw.ok(&["import", provider], &json.to_string());
}

fn call(kw: &Kw, tool: &str, args: Value) -> Run {
    let run = kw.run(&["call", tool, "--args", &args.to_string()], "");
    run.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    run
}

fn ok_json(run: &Run) -> Value {
    assert_eq!(
        run.code(),
        Some(0),
        "call failed: {}\n{}",
        run.stdout(),
        run.stderr()
    );
    serde_json::from_str(&run.stdout()).expect("the result is JSON")
}

fn err_json(run: &Run) -> Value {
    assert_eq!(run.code(), Some(1), "call should fail: {}", run.stdout());
    serde_json::from_str(&run.stdout()).expect("the error is JSON")
}

/// The API requests the fake received (token endpoints excluded).
fn api_requests(fake: &FakeUpstream) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| !r.path.contains("token") && !r.path.contains("oauth"))
        .collect()
}

fn only_request(fake: &FakeUpstream) -> RecordedRequest {
    let mut reqs = api_requests(fake);
    assert_eq!(
        reqs.len(),
        1,
        "expected exactly one upstream request: {:?}",
        reqs.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    reqs.remove(0)
}

/// Every catalog tool and its provider, from `keyward tools --json`.
pub(crate) fn catalog_tools(kw: &Kw) -> BTreeMap<String, String> {
    let tools: Vec<Value> = serde_json::from_str(&kw.ok(&["tools", "--json"], "").stdout())
        .expect("tools --json is JSON");
    tools
        .iter()
        .map(|t| {
            let field = |name: &str| t[name].as_str().expect("a string").to_string();
            (field("name"), field("provider"))
        })
        .collect()
}

/// Each tool's fixture (`tests/fixtures/<tool>.json`, see `support::fixtures`): its arguments
/// make keyward send exactly the fixture's request, and the fixture's sample answer becomes
/// exactly its result. `KEYWARD_UPDATE_SNAPSHOTS=1` rewrites the results for review; requests
/// are the fixtures' own and never rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_sends_its_fixtures_request_and_returns_its_result() {
    let (fake, kw) = setup().await;
    let providers = catalog_tools(&kw);
    let update = std::env::var_os("KEYWARD_UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for fixture in fixtures::all() {
        let tool = fixture.tool.as_str();
        let Some(provider) = providers.get(tool) else {
            failures.push(format!("{tool}: no such tool in the catalog"));
            continue;
        };
        // Where the provider's API base is on the fake: `/github`, `/slack/api`, …
        let api_path = url::Url::parse(&fake.api_base(provider))
            .expect("a URL")
            .path()
            .to_string();
        fake.clear_requests();
        fixture.answer_on(&fake, &api_path);
        let run = call(&kw, tool, fixture.args());
        let requests = api_requests(&fake);
        match requests.as_slice() {
            [request] => {
                let token = format!("{CANARY_ACCESS}_{provider}");
                for difference in fixture.request_differences(request, &api_path, &token) {
                    failures.push(format!("{tool}: request {difference}"));
                }
            }
            _ => failures.push(format!(
                "{tool}: {} upstream requests instead of one: {:?}",
                requests.len(),
                requests.iter().map(|r| &r.path).collect::<Vec<_>>()
            )),
        }
        if run.code() != Some(0) {
            failures.push(format!("{tool}: the call failed: {}", run.stdout()));
            continue;
        }
        let result: Value = serde_json::from_str(&run.stdout()).expect("the result is JSON");
        if update {
            fixtures::write_result(tool, &result);
        } else if result != fixture.result {
            failures.push(format!(
                "{tool}: result\n  expected {}\n  got      {result}",
                fixture.result
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures in tests/fixtures/ that keyward does not follow:\n{}",
        failures.join("\n")
    );
}

/// A list tool's result is at most 15% of the provider's answer (issue 16's budget), on the
/// fixtures' realistic answers: whole objects as the APIs return them. The fixtures' results are
/// what the binary returns (see above). One list is allowed more, because what it keeps is most
/// of what there is: a calendar list entry is its id, its name and the user's role on it, and
/// dropping any of those leaves the model unable to pick or write to a calendar.
#[test]
fn list_projections_keep_at_most_15_percent_of_the_answer() {
    const ALLOWED: [(&str, usize); 1] = [("calendar_list_calendars", 20)];
    let mut over = Vec::new();
    for fixture in fixtures::all() {
        // List tools only: a get tool whose answer has items (github_get_commit's changed
        // files with their patches) returns the content that was asked for, capped per item.
        if !fixture.result.get("items").is_some_and(Value::is_array)
            || fixture.tool.contains("_get_")
        {
            continue;
        }
        let raw = serde_json::to_vec(&fixture.response.body).unwrap().len();
        let kept = serde_json::to_vec(&fixture.result).unwrap().len();
        let percent = ALLOWED
            .iter()
            .find(|(tool, _)| *tool == fixture.tool)
            .map_or(15, |(_, percent)| *percent);
        println!("{}: {kept} of {raw} bytes", fixture.tool);
        if kept * 100 > raw * percent {
            over.push(format!("{}: {kept} of {raw} bytes", fixture.tool));
        }
    }
    assert!(
        over.is_empty(),
        "projections over their share of the answer: {over:?}"
    );
}

/// Adding a tool means adding its fixture; a fixture outlives no tool.
#[test]
fn every_catalog_tool_has_a_fixture() {
    let tools: BTreeSet<String> = catalog_tools(&Kw::new()).into_keys().collect();
    let fixtures: BTreeSet<String> = fixtures::all().into_iter().map(|f| f.tool).collect();
    let missing: Vec<&String> = tools.difference(&fixtures).collect();
    let stale: Vec<&String> = fixtures.difference(&tools).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "tools without a fixture (add tests/fixtures/<tool>.json): {missing:?}; fixtures of no \
         tool: {stale:?}"
    );
}

/// Slack channel arguments take a name: `#general` is looked up with conversations.list (the
/// connection's own token) and the call is sent with the id; an id needs no lookup; an unknown
/// name is an error naming the tool that lists channels; one server process looks a workspace
/// up once and answers later names from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_names_are_resolved_to_ids_once_per_connection() {
    let (fake, kw) = setup().await;
    let read = |channel: &str| json!({"channel": channel, "limit": 2});
    let paths = |requests: &[RecordedRequest]| -> Vec<String> {
        requests.iter().map(|r| r.path.clone()).collect()
    };

    fake.clear_requests();
    let result = ok_json(&call(&kw, "slack_read_channel", read("#general")));
    assert_eq!(result["count"], 2, "{result}");
    let requests = api_requests(&fake);
    assert_eq!(
        paths(&requests),
        [
            "/slack/api/conversations.list",
            "/slack/api/conversations.history"
        ]
    );
    assert!(requests[1]
        .query_pairs()
        .contains(&("channel".into(), "C0GENERAL1".into())));

    fake.clear_requests();
    ok_json(&call(&kw, "slack_read_channel", read("C0GENERAL1")));
    assert_eq!(only_request(&fake).path, "/slack/api/conversations.history");

    fake.clear_requests();
    let err = err_json(&call(
        &kw,
        "slack_post_message",
        json!({"channel": "nope", "text": "x"}),
    ));
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("no channel named \"nope\""),
        "{err}"
    );
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("slack_list_channels"),
        "{err}"
    );
    assert_eq!(
        paths(&api_requests(&fake)),
        ["/slack/api/conversations.list"]
    );

    // One server: the second name comes from the cache.
    fake.clear_requests();
    let server = crate::support::mcp::serve_stdio(&kw, &[]).await;
    for channel in ["#general", "random"] {
        let result =
            crate::support::mcp::call(&server.client, "slack_read_channel", read(channel)).await;
        crate::support::mcp::ok_value(&result);
    }
    server.finish().await;
    let lists = fake.requests_to("conversations.list");
    assert_eq!(lists.len(), 1, "{:?}", paths(&api_requests(&fake)));
}

/// What the fixtures do not show: an array argument of a list tool goes out comma-joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_query_arguments_are_joined_with_commas() {
    let (fake, kw) = setup().await;
    fake.clear_requests();
    ok_json(&call(
        &kw,
        "github_list_issues",
        json!({"owner":"octo","repo":"hello","labels":["bug","ui"],"state":"all"}),
    ));
    let request = only_request(&fake);
    assert_eq!(request.query_param("labels").as_deref(), Some("bug,ui"));
    assert_eq!(request.query_param("state").as_deref(), Some("all"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_are_compact_and_keep_what_matters() {
    let (fake, kw) = setup().await;
    let result = ok_json(&call(
        &kw,
        "github_list_pull_requests",
        json!({"owner":"octo","repo":"hello","per_page":10}),
    ));
    let items = result["items"].as_array().expect("a list result has items");
    assert_eq!(items.len(), 10);
    let pr = &items[0];
    for field in [
        "number",
        "title",
        "state",
        "author",
        "draft",
        "head",
        "base",
        "labels",
        "created_at",
        "updated_at",
        "html_url",
    ] {
        assert!(pr.get(field).is_some(), "{field} missing from {pr}");
    }
    assert!(
        pr["author"].is_string(),
        "author is the login, not the user object: {pr}"
    );
    // The fake has more pages; the Link header becomes a page number.
    assert_eq!(result["next_page"], json!(2), "{result}");
    // The same request made directly, to weigh the raw upstream body.
    keyward::exec::client::install_crypto_provider();
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/repos/octo/hello/pulls?per_page=10",
            fake.github_api_base()
        ))
        .bearer_auth(format!("{CANARY_ACCESS}_github"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let projected = serde_json::to_vec(&result).unwrap().len();
    assert!(
        projected * 100 <= raw * 15,
        "projected {projected} bytes is more than 15% of raw {raw}"
    );

    // A file comes back as decoded text, a directory as names and types.
    let file = ok_json(&call(
        &kw,
        "github_get_file_contents",
        json!({"owner":"octo","repo":"hello","path":"README.md"}),
    ));
    assert!(
        file["content"].as_str().unwrap().starts_with("# hello\n"),
        "decoded text: {file}"
    );
    let dir = ok_json(&call(
        &kw,
        "github_get_file_contents",
        json!({"owner":"octo","repo":"hello","path":"src"}),
    ));
    assert!(
        dir.to_string().contains("\"type\":\"file\"")
            || dir.to_string().contains("\"type\": \"file\""),
        "{dir}"
    );
    let _ = fake;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_are_refused_before_any_request() {
    let (fake, kw) = setup().await;
    fake.clear_requests();
    let bad: Vec<(&str, Value)> = vec![
        (
            "github_get_pull_request",
            json!({"owner":"../../user","repo":"x","number":1}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"a%2Fb","number":1}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"x?y=1","number":1}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"x#frag","number":1}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"x\ny","number":1}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"..","number":1}),
        ),
        (
            "github_get_file_contents",
            json!({"owner":"octo","repo":"x","path":"../../../user"}),
        ),
        (
            "github_get_file_contents",
            json!({"owner":"octo","repo":"x","path":"a/%2e%2e/b"}),
        ),
        (
            "github_get_file_contents",
            json!({"owner":"octo","repo":"x","path":"a?b"}),
        ),
        (
            "calendar_get_event",
            json!({"calendar_id":"primary/../../users","event_id":"x"}),
        ),
        (
            "slack_read_channel",
            json!({"channel":"C0GENERAL1","limit":"ten"}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"x"}),
        ),
        (
            "github_get_pull_request",
            json!({"owner":"octo","repo":"x","number":1,"extra":true}),
        ),
        (
            "github_list_pull_requests",
            json!({"owner":"octo","repo":"x","state":"merged"}),
        ),
        (
            "github_list_pull_requests",
            json!({"owner":"octo","repo":"x","per_page":1000}),
        ),
    ];
    for (tool, args) in bad {
        let err = err_json(&call(&kw, tool, args.clone()));
        assert!(
            err["error"].as_str().unwrap().contains("argument"),
            "{tool} {args}: {err}"
        );
    }
    assert!(
        api_requests(&fake).is_empty(),
        "a refused call reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_never_carries_the_token() {
    let (fake, kw) = setup().await;
    let err = err_json(&call(
        &kw,
        "github_get_pull_request",
        json!({"owner":"octo","repo":"moved","number":1}),
    ));
    assert!(
        err["error"].as_str().unwrap().contains("redirected"),
        "{err}"
    );
    for req in fake.steal_requests() {
        assert_eq!(
            req.header("authorization"),
            None,
            "the token followed a redirect to another host"
        );
    }
    assert!(
        fake.steal_requests().is_empty(),
        "the redirect was followed at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_become_tool_errors_with_hints() {
    let (fake, kw) = setup().await;
    let err = err_json(&call(
        &kw,
        "github_get_pull_request",
        json!({"owner":"octo","repo":"private-repo","number":1}),
    ));
    assert_eq!(err["status"], 404);
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("not found, or the connection cannot see it"),
        "{err}"
    );

    let err = err_json(&call(
        &kw,
        "github_list_issues",
        json!({"owner":"octo","repo":"needs-scope"}),
    ));
    assert_eq!(err["status"], 403);
    assert!(err["hint"].as_str().unwrap().contains("`repo`"), "{err}");
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("keyward connect github --scopes"),
        "{err}"
    );

    let err = err_json(&call(&kw, "slack_read_channel", json!({"channel":"CNOPE"})));
    assert!(
        err["error"].as_str().unwrap().contains("channel_not_found"),
        "{err}"
    );

    let err = err_json(&call(
        &kw,
        "calendar_get_event",
        json!({"calendar_id":"primary","event_id":"missing"}),
    ));
    assert_eq!(err["status"], 404);
    assert!(
        err["error"].as_str().unwrap().contains("Not Found"),
        "{err}"
    );
    let _ = fake;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_within_the_budget() {
    let (fake, kw) = setup().await;
    fake.fail_api("/pulls", 2, 503, None);
    fake.clear_requests();
    ok_json(&call(
        &kw,
        "github_list_pull_requests",
        json!({"owner":"octo","repo":"hello"}),
    ));
    assert_eq!(api_requests(&fake).len(), 3, "two 503s then a success");

    fake.fail_api("/pulls", 1, 429, Some(1));
    fake.clear_requests();
    let started = std::time::Instant::now();
    ok_json(&call(
        &kw,
        "github_list_pull_requests",
        json!({"owner":"octo","repo":"hello"}),
    ));
    assert_eq!(api_requests(&fake).len(), 2);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );

    // Out of retries: a retryable error that says when to try again.
    fake.fail_api("/pulls", 100, 429, Some(1));
    let err = err_json(&call(
        &kw,
        "github_list_pull_requests",
        json!({"owner":"octo","repo":"hello"}),
    ));
    assert_eq!(err["retryable"], true);
    assert!(
        err["hint"].as_str().unwrap().contains("retry after"),
        "{err}"
    );
    fake.fail_api("/pulls", 0, 429, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_ends_the_call_with_a_retryable_error() {
    let (fake, kw) = setup().await;
    // A budget (generous, so that a loaded machine still answers the first request within
    // it) that every one of these waits exceeds by far.
    let config = kw.home().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[executor]\ncall_budget_ms = 30000\n");
    std::fs::write(&config, text).unwrap();
    for (status, retry_after) in [
        (429, u64::MAX),
        (503, u64::MAX),
        (429, i64::MAX as u64),
        (429, 1 << 40),
    ] {
        // One failure: a retry (there must be none, the wait exceeds the budget) would succeed.
        fake.fail_api("/pulls", 1, status, Some(retry_after));
        let err = err_json(&call(
            &kw,
            "github_list_pull_requests",
            json!({"owner":"octo","repo":"hello"}),
        ));
        assert_eq!(err["retryable"], true, "{status} {retry_after}: {err}");
        assert_eq!(err["status"], status, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scopes_and_connections_are_named_with_the_fixing_command() {
    let (fake, kw) = setup().await;
    kw.ok(
        &["import", "github", "--account", "narrow"],
        &json!({"access_token": "narrow-token-123", "scope": "read:user"}).to_string(),
    );
    fake.clear_requests();
    let run = kw.run(
        &[
            "call",
            "github_list_issues",
            "--account",
            "narrow",
            "--args",
            r#"{"owner":"o","repo":"r"}"#,
        ],
        "",
    );
    let err = err_json(&run);
    assert!(err["error"].as_str().unwrap().contains("repo"), "{err}");
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("keyward connect github --account narrow --scopes"),
        "{err}"
    );
    assert!(api_requests(&fake).is_empty());

    let run = kw.run(&["call", "github_get_me", "--user", "nobody"], "");
    let err = err_json(&run);
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("keyward connect github --user nobody"),
        "{err}"
    );
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("keyward import github --user nobody"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_secret_is_redacted_and_every_call_is_audited() {
    let (fake, kw) = setup().await;
    // Somebody pasted the token into an issue; the upstream echoes it back.
    let body = format!("my token is {CANARY_ACCESS}_github oops");
    let run = kw.run(
        &[
            "call",
            "github_create_issue",
            "--args",
            &json!({"owner":"o","repo":"r","title": body.clone()}).to_string(),
        ],
        "",
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(
        !run.stdout().contains(CANARY_ACCESS),
        "an echoed token reached the caller"
    );
    assert!(run.stdout().contains("[redacted]"), "{}", run.stdout());

    let audit = kw.ok(&["audit", "--json"], "");
    audit.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    let last: Value = serde_json::from_str(audit.stdout().lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "tool-call");
    assert_eq!(last["tool"], "github_create_issue");
    assert_eq!(last["method"], "POST");
    assert_eq!(last["host"], "127.0.0.1");
    assert_eq!(last["path"], "/github/repos/o/r/issues");
    assert_eq!(last["status"], 201);
    assert!(last["latency_ms"].as_f64().is_some());
    let _ = fake;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_a_clear_error() {
    let (_fake, kw) = setup().await;
    let mut config = std::fs::read_to_string(kw.home().join("config.toml")).unwrap();
    config.push_str("\n[executor]\nmax_body_bytes = 2000\n");
    std::fs::write(kw.home().join("config.toml"), config).unwrap();
    let err = err_json(&call(
        &kw,
        "github_list_pull_requests",
        json!({"owner":"octo","repo":"hello"}),
    ));
    assert!(
        err["error"].as_str().unwrap().contains("larger than"),
        "{err}"
    );
    assert!(
        err["hint"].as_str().unwrap().contains("max_body_bytes"),
        "{err}"
    );
}

#[test]
fn a_bad_extra_manifest_fails_with_file_line_and_reason() {
    let mut kw = Kw::new();
    let dir = kw.dir.path().join("tools");
    std::fs::create_dir_all(&dir).unwrap();
    let github =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/github.toml")).unwrap();
    // Point the API base somewhere its allowed hosts do not cover.
    std::fs::write(
        dir.join("github.toml"),
        github.replace(
            "api_base = \"https://api.github.com\"",
            "api_base = \"https://evil.example.com\"",
        ),
    )
    .unwrap();
    kw.env
        .push(("KEYWARD_TOOLS_DIR".into(), dir.display().to_string()));
    let run = kw.run(&["tools"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stderr().contains("github.toml"), "{}", run.stderr());
    assert!(
        run.stderr().contains("evil.example.com"),
        "{}",
        run.stderr()
    );

    std::fs::write(dir.join("github.toml"), "[provider]\nname = 3\n").unwrap();
    let run = kw.run(&["tools"], "");
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr().contains("github.toml:2"),
        "file and line: {}",
        run.stderr()
    );
}

#[test]
fn tools_lists_every_tool_with_scopes() {
    let kw = Kw::new();
    let run = kw.ok(&["tools", "--json"], "");
    let tools: Vec<Value> = serde_json::from_str(&run.stdout()).unwrap();
    assert!(tools.len() >= 21);
    let del = tools
        .iter()
        .find(|t| t["name"] == "calendar_delete_event")
        .unwrap();
    assert_eq!(del["destructive"], true);
    assert_eq!(
        del["scopes"],
        json!(["https://www.googleapis.com/auth/calendar.events"])
    );
    let slack = kw.ok(&["tools", "--provider", "slack"], "").stdout();
    assert!(
        slack.contains("slack_post_message") && !slack.contains("github_get_me"),
        "{slack}"
    );
    assert_eq!(
        kw.run(&["tools", "--provider", "gitlab"], "").code(),
        Some(2)
    );
}

/// A provider that exists only as a manifest in an extra tools folder, with its own error
/// convention table: keyward must treat its auth-failure code like Slack's `invalid_auth`
/// (forced refresh, one retry) and give its own hints — providers are data, not code.
mod manifest_provider {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::{call, err_json, ok_json};
    use crate::support::home::Kw;

    /// The one token the upstream refuses with its auth-failure code.
    const STALE: &str = "acme-stale-token";
    const FRESH: &str = "acme-fresh-token";

    #[derive(Default)]
    struct Seen {
        /// (widget id, bearer token) of every API request.
        api: Mutex<Vec<(String, String)>>,
        refreshes: AtomicUsize,
    }

    /// Acme speaks like Slack: HTTP 200 with `{"ok": false, "error": …}`, except a conflict.
    async fn widget(
        State(seen): State<Arc<Seen>>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        seen.api.lock().unwrap().push((id.clone(), token.clone()));
        if token == STALE || id == "always-stale" {
            return Json(json!({"ok": false, "error": "acme_key_stale"})).into_response();
        }
        match id.as_str() {
            "gone" => Json(json!({"ok": false, "error": "widget_gone", "reason": "melted"}))
                .into_response(),
            "odd" => Json(json!({"ok": false, "error": "odd_failure"})).into_response(),
            "busy" => (
                StatusCode::CONFLICT,
                Json(json!({"message": "widget is busy"})),
            )
                .into_response(),
            _ => Json(json!({"ok": true, "widget": {"id": id, "color": "blue"}})).into_response(),
        }
    }

    async fn token(State(seen): State<Arc<Seen>>) -> Json<Value> {
        seen.refreshes.fetch_add(1, Ordering::SeqCst);
        Json(
            json!({"access_token": FRESH, "refresh_token": "acme-refresh-2",
                    "token_type": "bearer", "expires_in": 3600}),
        )
    }

    fn manifest(base: &str) -> String {
        format!(
            r#"
[provider]
name = "acme"
title = "Acme"
authorize_url = "{base}/authorize"
token_url = "{base}/token"
api_base = "{base}/api"
allowed_hosts = ["127.0.0.1"]
error_convention = "slack_ok"

[provider.errors]
auth_codes = ["acme_key_stale"]
other_codes = "Acme said {{code}}; see its error list"

[provider.errors.codes.widget_gone]
hint = "{{tool}} found the widget {{reason}}: {{code}}; reconnect with `{{connect}}` if it persists"
fields = {{ reason = "absent" }}
retryable = true

[provider.errors.status.409]
hint = "{{title}} is busy with that widget; try again"
retryable = true

[[tools]]
name = "acme_get_widget"
title = "Get a widget"
description = "Get one Acme widget by id."
toolset = "widgets"
read_only = true
params = [{{ name = "id", type = "string", description = "Widget id.", required = true, pattern = "[a-z-]+" }}]
request = {{ method = "GET", path = "/widgets/{{id}}" }}
response = {{ fields = ["id = widget.id", "color = widget.color"] }}
"#
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_extra_manifest_declares_its_own_auth_codes_and_hints() {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/api/widgets/{id}", get(widget))
            .route("/token", post(token))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let kw = Kw::new();
        let tools = kw.with_tools_dir(
            "acme-tools",
            "\n[providers.acme]\nclient_id = \"acme-id\"\nclient_secret = \"acme-secret\"\n",
        );
        std::fs::write(tools.join("acme.toml"), manifest(&base)).unwrap();
        let import = json!({"access_token": STALE, "refresh_token": "acme-refresh-1",
                            "token_type": "bearer", "expires_in": 28800});
        kw.ok(&["import", "acme"], &import.to_string());

        // The manifest's auth code: one forced refresh, the call retried with the new token.
        let out = ok_json(&call(&kw, "acme_get_widget", json!({"id": "w-one"})));
        assert_eq!(out, json!({"id": "w-one", "color": "blue"}));
        assert_eq!(seen.refreshes.load(Ordering::SeqCst), 1);
        let tokens: Vec<String> = seen
            .api
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(
            tokens,
            [STALE, FRESH],
            "retried once with the refreshed token"
        );

        // Still refused after the refresh: the reconnect hint, and no second retry.
        seen.api.lock().unwrap().clear();
        let err = err_json(&call(&kw, "acme_get_widget", json!({"id": "always-stale"})));
        assert_eq!(err["error"], "Acme answered acme_key_stale");
        assert_eq!(
            err["hint"],
            "Acme no longer accepts this connection's token: run `keyward connect acme`"
        );
        assert_eq!(err["retryable"], false);
        assert_eq!(seen.api.lock().unwrap().len(), 2, "one retry only");

        // A declared code: its hint with every placeholder filled, and its retryable flag.
        let err = err_json(&call(&kw, "acme_get_widget", json!({"id": "gone"})));
        assert_eq!(err["error"], "Acme answered widget_gone");
        assert_eq!(
            err["hint"],
            "acme_get_widget found the widget melted: widget_gone; reconnect with `keyward connect acme` if it persists"
        );
        assert_eq!(err["retryable"], true);

        // Any other code gets `other_codes`; a status gets the manifest's hint over keyward's.
        let err = err_json(&call(&kw, "acme_get_widget", json!({"id": "odd"})));
        assert_eq!(err["hint"], "Acme said odd_failure; see its error list");
        assert_eq!(err["retryable"], false);
        let err = err_json(&call(&kw, "acme_get_widget", json!({"id": "busy"})));
        assert_eq!(err["status"], 409);
        assert_eq!(err["error"], "Acme answered 409: widget is busy");
        assert_eq!(err["hint"], "Acme is busy with that widget; try again");
        assert_eq!(err["retryable"], true);
    }

    #[test]
    fn a_bad_errors_table_fails_with_file_line_and_reason() {
        let kw = Kw::new();
        let tools = kw.with_tools_dir("acme-tools", "");
        let good = manifest("http://127.0.0.1:9");
        let line_of =
            |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        for (broken, near, reason) in [
            (
                good.replace("{reason}: {code}", "{reson}: {code}"),
                "[provider.errors.codes.widget_gone]",
                "`{reson}` is not a placeholder",
            ),
            (
                good.replace("status.409]", "status.209]"),
                "status.209",
                "must be an HTTP error status",
            ),
            (
                good.replace("error_convention = \"slack_ok\"\n", ""),
                "auth_codes = ",
                "need `error_convention = \"slack_ok\"`",
            ),
            (
                good.replace(
                    "retryable = true\n\n[provider.errors.status",
                    "retry = true\n\n[provider.errors.status",
                ),
                "retry = true",
                "unknown field `retry`",
            ),
        ] {
            std::fs::write(tools.join("acme.toml"), &broken).unwrap();
            let run = kw.run(&["tools"], "");
            assert_eq!(run.code(), Some(1), "{broken}");
            let expected = format!("acme.toml:{}:", line_of(&broken, near));
            assert!(
                run.stderr().contains(&expected),
                "{expected} in {}",
                run.stderr()
            );
            assert!(
                run.stderr().contains(reason),
                "{reason} in {}",
                run.stderr()
            );
        }
    }
}
