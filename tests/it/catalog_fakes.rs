//! The tools issue 16 added, through the real binary (`keyward serve` over stdio) against the
//! fake's standing routes — stateful, scope-checking, paging and refusing like GitHub, Slack
//! and Google — rather than the canned answers of the fixtures (`exec.rs`). Each test checks
//! the exact request that reached the fake and what the model gets back: writes read back
//! through the other tools, lists paged to their end, the providers' refusals as error results
//! that say what to do, and no token anywhere (every result passes the canary check).

use serde_json::{json, Value};

use crate::exec::{connect, setup};
use crate::support::canary::assert_no_canary;
use crate::support::home::{home_for, Kw};
use crate::support::mcp::{self, StdioServer};
use crate::support::{FakeUpstream, RecordedRequest, CANARY_ACCESS, HOLIDAY_CALENDAR};

/// One `keyward serve` on a home connected to a fake.
struct Session {
    fake: FakeUpstream,
    server: StdioServer,
    _kw: Kw,
}

impl Session {
    /// GitHub, Slack and Google connected with the scopes their tools need (`exec::setup`).
    async fn start() -> Session {
        let (fake, kw) = setup().await;
        Session::serve(fake, kw).await
    }

    /// One `provider` connection the fake grants `granted`, recorded as `recorded`.
    async fn with(provider: &str, granted: &str, recorded: Option<&str>) -> Session {
        let fake = FakeUpstream::start().await;
        let kw = home_for(&fake, &[]);
        connect(&fake, &kw, provider, granted, recorded);
        Session::serve(fake, kw).await
    }

    async fn serve(fake: FakeUpstream, kw: Kw) -> Session {
        let server = mcp::serve_stdio(&kw, &[]).await;
        Session {
            fake,
            server,
            _kw: kw,
        }
    }

    async fn call(&self, tool: &str, args: Value) -> rmcp::model::CallToolResult {
        let result = mcp::call(&self.server.client, tool, args).await;
        assert_no_canary(tool, format!("{result:?}").as_bytes());
        result
    }

    /// A successful call's structured result.
    async fn ok(&self, tool: &str, args: Value) -> Value {
        mcp::ok_value(&self.call(tool, args).await)
    }

    /// A failed call's text (error and hint).
    async fn err(&self, tool: &str, args: Value) -> String {
        mcp::error_text(&self.call(tool, args).await)
    }

    /// The last request whose path ends with `path_end`.
    fn last(&self, path_end: &str) -> RecordedRequest {
        self.fake
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with(path_end))
            .unwrap_or_else(|| panic!("no request to …{path_end}"))
    }

    /// Every item of a list tool, following `next_page` / `next_cursor` to the end.
    async fn all_pages(&self, tool: &str, mut args: Value) -> Vec<Value> {
        let mut items = Vec::new();
        for _ in 0..20 {
            let page = self.ok(tool, args.clone()).await;
            items.extend(
                page["items"]
                    .as_array()
                    .expect("a list result")
                    .iter()
                    .cloned(),
            );
            if let Some(n) = page.get("next_page").and_then(Value::as_u64) {
                args["page"] = json!(n);
            } else if let Some(c) = page.get("next_cursor").and_then(Value::as_str) {
                args["cursor"] = json!(c);
            } else {
                return items;
            }
        }
        panic!("{tool} has more than 20 pages");
    }

    async fn finish(self) {
        self.server.finish().await;
    }
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a Value> {
    items.iter().map(|i| &i[name]).collect()
}

/// The request's query is exactly `want` (a `None` value: present, with any value — a cursor).
fn assert_query(request: &RecordedRequest, want: &[(&str, Option<&str>)]) {
    let mut got = request.query_pairs();
    got.sort();
    let mut names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    names.dedup();
    let mut want_names: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    want_names.sort();
    assert_eq!(names, want_names, "the query of {}: {got:?}", request.path);
    assert_eq!(
        names.len(),
        got.len(),
        "a repeated query parameter: {got:?}"
    );
    for (name, value) in want {
        if let Some(value) = value {
            assert_eq!(
                request.query_param(name).as_deref(),
                Some(*value),
                "{name} in the query of {}",
                request.path
            );
        }
    }
}

fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is not in {text}");
    }
}

// ----- GitHub ---------------------------------------------------------------------------------

const REPO: (&str, &str) = ("octo", "hello");

fn gh(extra: Value) -> Value {
    let mut args = json!({"owner": REPO.0, "repo": REPO.1});
    if let (Value::Object(a), Value::Object(e)) = (&mut args, extra) {
        a.extend(e);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_update_issue_changes_what_get_and_list_return() {
    let s = Session::start().await;
    let updated = s
        .ok(
            "github_update_issue",
            gh(
                json!({"number": 33, "title": "Crash on start", "state": "closed",
                      "state_reason": "not_planned", "labels": ["bug"], "assignees": ["hubot"]}),
            ),
        )
        .await;
    let request = s.last("/issues/33");
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/github/repos/octo/hello/issues/33");
    assert_eq!(
        request.body_json().unwrap(),
        json!({"title": "Crash on start", "state": "closed", "state_reason": "not_planned",
               "labels": ["bug"], "assignees": ["hubot"]})
    );
    assert_eq!(updated["state"], "closed", "{updated}");
    assert_eq!(updated["state_reason"], "not_planned");

    // Only the field sent changes.
    s.ok(
        "github_update_issue",
        gh(json!({"number": 33, "body": "Steps: run it."})),
    )
    .await;
    assert_eq!(
        s.last("/issues/33").body_json().unwrap(),
        json!({"body": "Steps: run it."})
    );
    let issue = s.ok("github_get_issue", gh(json!({"number": 33}))).await;
    assert_eq!(issue["title"], "Crash on start", "{issue}");
    assert_eq!(issue["body"], "Steps: run it.");
    assert_eq!(issue["state"], "closed");
    assert_eq!(issue["labels"], json!(["bug"]));
    assert_eq!(issue["assignees"], json!(["hubot"]));

    let open = s
        .all_pages("github_list_issues", gh(json!({"per_page": 100})))
        .await;
    assert!(!field(&open, "number").contains(&&json!(33)));
    let closed = s
        .ok(
            "github_list_issues",
            gh(json!({"state": "closed", "per_page": 100})),
        )
        .await;
    assert!(field(closed["items"].as_array().unwrap(), "number").contains(&&json!(33)));

    let reopened = s
        .ok(
            "github_update_issue",
            gh(json!({"number": 33, "state": "open"})),
        )
        .await;
    assert_eq!(reopened["state"], "open");
    assert_eq!(reopened["state_reason"], "reopened");
    // `[]` goes out as it is and removes every label.
    let cleared = s
        .ok(
            "github_update_issue",
            gh(json!({"number": 33, "labels": []})),
        )
        .await;
    assert_eq!(
        s.last("/issues/33").body_json().unwrap(),
        json!({"labels": []})
    );
    assert_eq!(cleared["labels"], json!([]));

    let missing = s
        .err(
            "github_update_issue",
            gh(json!({"number": 999, "title": "x"})),
        )
        .await;
    assert_has(&missing, &["404", "not found"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_pull_request_is_created_listed_reviewed_and_merged_once() {
    let s = Session::start().await;
    let create = gh(
        json!({"title": "Release 1.0", "head": "release/v1.0", "base": "main",
                           "body": "Ship it.", "draft": false}),
    );
    let created = s.ok("github_create_pull_request", create.clone()).await;
    let request = s.last("/repos/octo/hello/pulls");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.body_json().unwrap(),
        json!({"title": "Release 1.0", "head": "release/v1.0", "base": "main",
               "body": "Ship it.", "draft": false})
    );
    let number = created["number"].as_u64().expect("a number");
    assert_eq!(created["state"], "open");

    let listed = s
        .ok("github_list_pull_requests", gh(json!({"per_page": 2})))
        .await;
    assert_eq!(listed["items"][0]["number"], number, "{listed}");
    assert_eq!(listed["items"][0]["head"], "release/v1.0");
    assert_eq!(listed["items"][0]["author"], "kw-tester");
    let again = s.err("github_create_pull_request", create).await;
    assert_has(
        &again,
        &["422", "A pull request already exists for octo:release/v1.0"],
    );

    // The author may not approve their own pull request; someone else's takes a review.
    let own = s
        .err(
            "github_create_pull_request_review",
            gh(json!({"number": number, "event": "APPROVE"})),
        )
        .await;
    assert_has(&own, &["422", "Can not approve your own pull request"]);
    let review = s
        .ok(
            "github_create_pull_request_review",
            gh(json!({"number": 2, "event": "REQUEST_CHANGES", "body": "Please add a test."})),
        )
        .await;
    assert_eq!(
        s.last("/pulls/2/reviews").body_json().unwrap(),
        json!({"event": "REQUEST_CHANGES", "body": "Please add a test."})
    );
    assert_eq!(review["state"], "CHANGES_REQUESTED");
    let reviews = s
        .all_pages("github_list_pull_request_reviews", gh(json!({"number": 2})))
        .await;
    let last = reviews.last().expect("reviews");
    assert_eq!(last["id"], review["id"]);
    assert_eq!(last["author"], "kw-tester");
    assert_eq!(last["body"], "Please add a test.");

    // Merged once: the pull request is closed and merged, its commit heads main; not twice.
    let merged = s
        .ok(
            "github_merge_pull_request",
            gh(json!({"number": number, "merge_method": "squash"})),
        )
        .await;
    let request = s.last(&format!("/pulls/{number}/merge"));
    assert_eq!(request.method, "PUT");
    assert_eq!(
        request.body_json().unwrap(),
        json!({"merge_method": "squash"})
    );
    assert_eq!(merged["merged"], true, "{merged}");
    let pull = s
        .ok("github_get_pull_request", gh(json!({"number": number})))
        .await;
    assert_eq!(
        (&pull["state"], &pull["merged"]),
        (&json!("closed"), &json!(true))
    );
    let head = s
        .ok("github_list_commits", gh(json!({"per_page": 1})))
        .await;
    assert_eq!(head["items"][0]["sha"], merged["sha"]);
    assert_eq!(
        head["items"][0]["message"],
        format!("Release 1.0 (#{number})")
    );
    let twice = s
        .err("github_merge_pull_request", gh(json!({"number": number})))
        .await;
    assert_has(&twice, &["405", "Pull Request is not mergeable"]);
    let conflicting = s
        .err("github_merge_pull_request", gh(json!({"number": 8})))
        .await;
    assert_has(&conflicting, &["405", "not mergeable"]);
    let moved = s
        .err(
            "github_merge_pull_request",
            gh(json!({"number": 3, "sha": "0".repeat(40)})),
        )
        .await;
    assert_has(&moved, &["409", "Head branch was modified"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_lists_page_to_their_end() {
    let s = Session::start().await;
    let commits = s
        .all_pages("github_list_commits", gh(json!({"per_page": 15})))
        .await;
    assert_eq!(commits.len(), 40);
    let request = s.last("/repos/octo/hello/commits");
    assert_eq!(request.method, "GET");
    assert_query(&request, &[("per_page", Some("15")), ("page", Some("3"))]);
    assert_eq!(commits.last().unwrap()["message"], "Initial commit");

    // The first commit's files, four a page.
    let first = commits.last().unwrap()["sha"].as_str().unwrap().to_string();
    let files = s
        .all_pages(
            "github_get_commit",
            gh(json!({"ref": first, "per_page": 4})),
        )
        .await;
    assert_eq!(files.len(), 9, "{files:?}");
    assert!(field(&files, "filename").contains(&&json!("src/lib.rs")));

    let branches = s
        .all_pages("github_list_branches", gh(json!({"per_page": 10})))
        .await;
    assert_eq!(branches.len(), 33);
    let protected = s
        .ok("github_list_branches", gh(json!({"protected": true})))
        .await;
    assert_eq!(
        field(protected["items"].as_array().unwrap(), "name"),
        [&json!("develop"), &json!("main")]
    );
    assert_query(&s.last("/branches"), &[("protected", Some("true"))]);

    let failed = s
        .all_pages(
            "github_list_workflow_runs",
            gh(json!({"status": "failure", "per_page": 2})),
        )
        .await;
    assert_eq!(failed.len(), 4);
    assert!(
        failed.iter().all(|r| r["conclusion"] == "failure"),
        "{failed:?}"
    );

    let repos = s
        .all_pages("github_list_repositories", json!({"per_page": 4}))
        .await;
    let names: Vec<&str> = repos
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10);
    assert!(names.contains(&"acme/platform") && names.contains(&"kw-tester/keyward-notes"));
    assert_query(
        &s.last("/user/repos"),
        &[("per_page", Some("4")), ("page", Some("3"))],
    );

    let changed = s
        .all_pages(
            "github_get_pull_request_files",
            gh(json!({"number": 6, "per_page": 2})),
        )
        .await;
    assert_eq!(changed.len(), 7);
    assert!(changed
        .iter()
        .any(|f| f["status"] == "renamed" && f["previous_filename"].is_string()));
    let comments = s
        .all_pages(
            "github_list_pull_request_comments",
            gh(json!({"number": 3, "per_page": 2})),
        )
        .await;
    assert_eq!(comments.len(), 3);
    assert_eq!(comments[1]["in_reply_to_id"], comments[0]["id"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_diffs_and_patches_are_capped_and_marked_truncated() {
    let s = Session::start().await;
    let big = s
        .ok("github_get_pull_request_diff", gh(json!({"number": 13})))
        .await;
    let request = s.last("/repos/octo/hello/pulls/13");
    assert_eq!(
        request.header("accept"),
        Some("application/vnd.github.diff")
    );
    assert_eq!(big["truncated"], true);
    assert!(big["size"].as_u64().unwrap() > 65_536, "{}", big["size"]);
    assert!(big["diff"].as_str().unwrap().len() <= 65_536);

    let small = s
        .ok("github_get_pull_request_diff", gh(json!({"number": 2})))
        .await;
    let diff = small["diff"].as_str().unwrap();
    assert!(small.get("truncated").is_none(), "{small}");
    assert_eq!(small["size"], diff.len());
    assert!(
        diff.starts_with("diff --git a/src/hello/module_02.rs"),
        "{diff}"
    );
    assert!(diff.contains("rename from"));

    // The second commit rewrites a long file: its patch is cut at 4 KB.
    let commits = s
        .ok("github_list_commits", gh(json!({"per_page": 100})))
        .await;
    let sha = commits["items"][38]["sha"].as_str().unwrap().to_string();
    let commit = s.ok("github_get_commit", gh(json!({"ref": sha}))).await;
    assert_eq!(commit["message"], "Rewrite the guide");
    assert_eq!(commit["items"][0]["truncated"], true, "{commit}");
    assert!(commit["items"][0]["patch"].as_str().unwrap().len() <= 4096);
    let unknown = s
        .err("github_get_commit", gh(json!({"ref": "no-such-branch"})))
        .await;
    assert_has(
        &unknown,
        &["422", "No commit found for SHA: no-such-branch"],
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_search_finds_repositories_and_code() {
    let s = Session::start().await;
    let found = s
        .ok(
            "github_search_repositories",
            json!({"query": "language:rust stars:>1000", "sort": "stars", "per_page": 2}),
        )
        .await;
    let request = s.last("/search/repositories");
    assert_query(
        &request,
        &[
            ("q", Some("language:rust stars:>1000")),
            ("sort", Some("stars")),
            ("per_page", Some("2")),
        ],
    );
    assert_eq!(found["total_count"], 4, "{found}");
    assert_eq!(found["items"][0]["full_name"], "tokio-rs/tokio");
    assert_eq!(found["next_page"], 2);

    let code = s
        .ok(
            "github_search_code",
            json!({"query": "shout repo:octo/hello language:rust"}),
        )
        .await;
    assert_query(
        &s.last("/search/code"),
        &[("q", Some("shout repo:octo/hello language:rust"))],
    );
    assert_eq!(code["total_count"], 1, "{code}");
    assert_eq!(code["items"][0]["repository"], "octo/hello");
    assert_eq!(code["items"][0]["path"], "src/util/strings.rs");
    s.finish().await;
}

/// Issue 16: public reads must not demand `repo`. A write without it is refused before any
/// request with the exact command; a connection keyward cannot check gets GitHub's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_public_reads_need_no_scope_and_writes_name_the_fix() {
    let s = Session::with("github", "read:user", Some("read:user")).await;
    let commits = s
        .ok("github_list_commits", gh(json!({"per_page": 1})))
        .await;
    assert_eq!(commits["count"], 1);
    let repos = s
        .ok("github_list_repositories", json!({"per_page": 100}))
        .await;
    let repos = repos["items"].as_array().unwrap();
    assert_eq!(repos.len(), 6);
    assert!(repos.iter().all(|r| r["private"] == false), "{repos:?}");
    let private = s
        .err("github_list_commits", gh(json!({"repo": "private-repo"})))
        .await;
    assert_has(&private, &["404", "`repo` scope"]);

    s.fake.clear_requests();
    let refused = s
        .err(
            "github_create_pull_request",
            gh(json!({"title": "t", "head": "release/v1.0", "base": "main"})),
        )
        .await;
    assert_has(
        &refused,
        &["keyward connect github --scopes read:user,repo"],
    );
    assert!(
        s.fake
            .requests()
            .iter()
            .all(|r| !r.path.contains("/repos/")),
        "a refused write reached GitHub"
    );
    s.finish().await;

    let unchecked = Session::with("github", "read:user", None).await;
    let refused = unchecked
        .err("github_merge_pull_request", gh(json!({"number": 1})))
        .await;
    assert_has(&refused, &["404", "`repo` scope"]);
    unchecked.finish().await;
}

// ----- Slack ----------------------------------------------------------------------------------

async fn newest_ts(s: &Session, channel: &str) -> String {
    let history = s
        .ok(
            "slack_read_channel",
            json!({"channel": channel, "limit": 1}),
        )
        .await;
    history["items"][0]["ts"]
        .as_str()
        .expect("a ts")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_reacts_once_then_answers_already_reacted() {
    let s = Session::start().await;
    let ts = newest_ts(&s, "C0GENERAL1").await;
    let reacted = s
        .ok(
            "slack_add_reaction",
            json!({"channel": "#general", "ts": ts, "name": "eyes"}),
        )
        .await;
    assert_eq!(reacted["ok"], true);
    let request = s.last("/reactions.add");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.body_json().unwrap(),
        json!({"channel": "C0GENERAL1", "timestamp": ts, "name": "eyes"})
    );
    // The reaction is on the message (Slack's own answer; the tool's projection has no
    // reactions).
    keyward::exec::client::install_crypto_provider();
    let history: Value = reqwest::Client::new()
        .get(format!(
            "{}/conversations.history?channel=C0GENERAL1&limit=1",
            s.fake.slack_api_base()
        ))
        .bearer_auth(format!("{CANARY_ACCESS}_slack"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        history["messages"][0]["reactions"],
        json!([{"name": "eyes", "users": ["U0TESTER01"], "count": 1}])
    );

    let twice = s
        .err(
            "slack_add_reaction",
            json!({"channel": "C0GENERAL1", "ts": ts, "name": "eyes"}),
        )
        .await;
    assert_has(&twice, &["already_reacted"]);
    let gone = s
        .err(
            "slack_add_reaction",
            json!({"channel": "C0GENERAL1", "ts": "1.000001", "name": "eyes"}),
        )
        .await;
    assert_has(&gone, &["message_not_found"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_open_dm_returns_the_same_conversation_which_takes_a_post() {
    let s = Session::start().await;
    let opened = s
        .ok("slack_open_dm", json!({"users": ["U0BOB00001"]}))
        .await;
    let request = s.last("/conversations.open");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.body_form(),
        [("users".to_string(), "U0BOB00001".to_string())]
    );
    let dm = opened["channel"]
        .as_str()
        .expect("a channel id")
        .to_string();
    assert!(dm.starts_with('D'), "{opened}");
    assert_ne!(opened["already_open"], true);
    let again = s
        .ok("slack_open_dm", json!({"users": ["U0BOB00001"]}))
        .await;
    assert_eq!(
        (&again["channel"], &again["already_open"]),
        (&json!(dm), &json!(true))
    );
    let alice = s
        .ok("slack_open_dm", json!({"users": ["U0ALICE001"]}))
        .await;
    assert_eq!(alice["channel"], "D0DMALICE1");

    let posted = s
        .ok(
            "slack_post_message",
            json!({"channel": dm, "text": "hi Bob"}),
        )
        .await;
    assert_eq!(posted["channel"], json!(dm), "{posted}");

    // A group DM needs mpim:write, which this connection lacks: Slack says so, and the hint
    // names the command.
    let group = s
        .err(
            "slack_open_dm",
            json!({"users": ["U0ALICE001", "U0BOB00001"]}),
        )
        .await;
    assert_has(
        &group,
        &["missing_scope", "keyward connect slack --scopes mpim:write"],
    );
    let departed = s
        .err("slack_open_dm", json!({"users": ["U0GONE0001"]}))
        .await;
    assert_has(&departed, &["user_disabled"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_users_channel_info_and_permalinks() {
    let s = Session::start().await;
    let users = s.all_pages("slack_list_users", json!({"limit": 3})).await;
    assert_eq!(users.len(), 7);
    assert!(field(&users, "id").contains(&&json!("U0TESTER01")));
    let request = s.last("/users.list");
    assert_query(&request, &[("limit", Some("3")), ("cursor", None)]);

    let info = s
        .ok("slack_get_channel_info", json!({"channel": "#engineering"}))
        .await;
    let request = s.last("/conversations.info");
    assert_eq!(request.method, "GET");
    assert_query(
        &request,
        &[
            ("channel", Some("C0ENGINEER")),
            ("include_num_members", Some("true")),
        ],
    );
    assert_eq!(info["id"], "C0ENGINEER");
    assert_eq!(info["name"], "engineering");
    assert_eq!(info["num_members"], 5);
    assert_eq!(info["is_member"], true);

    let ts = newest_ts(&s, "C0GENERAL1").await;
    let link = s
        .ok(
            "slack_get_permalink",
            json!({"channel": "C0GENERAL1", "ts": ts}),
        )
        .await;
    let request = s.last("/chat.getPermalink");
    assert_query(
        &request,
        &[("channel", Some("C0GENERAL1")), ("message_ts", Some(&ts))],
    );
    assert_eq!(
        link["permalink"],
        format!(
            "https://acme.slack.com/archives/C0GENERAL1/p{}",
            ts.replace('.', "")
        )
    );
    // A thread reply's link names its thread.
    let history = s
        .ok(
            "slack_read_channel",
            json!({"channel": "C0GENERAL1", "limit": 20}),
        )
        .await;
    let parent = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reply_count"].as_u64() > Some(0))
        .expect("a thread in #general")["ts"]
        .as_str()
        .unwrap()
        .to_string();
    let thread = s
        .ok(
            "slack_read_thread",
            json!({"channel": "C0GENERAL1", "thread_ts": parent}),
        )
        .await;
    let reply = thread["items"][1]["ts"].as_str().unwrap().to_string();
    let link = s
        .ok(
            "slack_get_permalink",
            json!({"channel": "C0GENERAL1", "ts": reply}),
        )
        .await;
    assert_eq!(
        link["permalink"],
        format!(
            "https://acme.slack.com/archives/C0GENERAL1/p{}?thread_ts={parent}&cid=C0GENERAL1",
            reply.replace('.', "")
        )
    );
    let unknown = s
        .err(
            "slack_get_permalink",
            json!({"channel": "C0NOPE0001", "ts": ts}),
        )
        .await;
    assert_has(&unknown, &["channel_not_found", "slack_list_channels"]);
    s.finish().await;
}

/// A connection whose scopes keyward does not know: Slack's `missing_scope` names the scope,
/// and the hint the exact command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_missing_scopes_name_the_connect_command() {
    let s = Session::with("slack", "channels:read,channels:history,chat:write", None).await;
    let users = s.err("slack_list_users", json!({})).await;
    assert_has(
        &users,
        &["missing_scope", "keyward connect slack --scopes users:read"],
    );
    let ts = newest_ts(&s, "C0RANDOM01").await;
    let react = s
        .err(
            "slack_add_reaction",
            json!({"channel": "C0RANDOM01", "ts": ts, "name": "tada"}),
        )
        .await;
    assert_has(&react, &["keyward connect slack --scopes reactions:write"]);
    s.finish().await;
}

// ----- Google Calendar ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_update_event_changes_only_the_given_fields() {
    let s = Session::start().await;
    let event = json!({"event_id": "kwq1planning"});
    let before = s.ok("calendar_get_event", event.clone()).await;
    s.ok(
        "calendar_update_event",
        json!({"event_id": "kwq1planning", "summary": "Q1 planning (final)", "location": "Room 5.02"}),
    )
    .await;
    let request = s.last("/events/kwq1planning");
    assert_eq!(request.method, "PATCH");
    assert_eq!(
        request.path,
        "/google/calendar/v3/calendars/primary/events/kwq1planning"
    );
    assert_eq!(
        request.body_json().unwrap(),
        json!({"summary": "Q1 planning (final)", "location": "Room 5.02"})
    );
    let after = s.ok("calendar_get_event", event.clone()).await;
    assert_eq!(after["summary"], "Q1 planning (final)");
    assert_eq!(after["location"], "Room 5.02");
    for kept in ["description", "start", "end", "attendees", "responses"] {
        assert_eq!(after[kept], before[kept], "{kept} changed");
    }

    s.ok(
        "calendar_update_event",
        json!({"event_id": "kwq1planning", "start": "2025-01-08T14:00:00",
               "end": "2025-01-08T15:00:00", "time_zone": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(
        s.last("/events/kwq1planning").body_json().unwrap(),
        json!({"start": {"dateTime": "2025-01-08T14:00:00", "timeZone": "Europe/Berlin"},
               "end": {"dateTime": "2025-01-08T15:00:00", "timeZone": "Europe/Berlin"}})
    );
    let moved = s.ok("calendar_get_event", event.clone()).await;
    assert_eq!(moved["start"], "2025-01-08T14:00:00+01:00");
    assert_eq!(moved["summary"], "Q1 planning (final)");

    // A time zone alone goes out as `{"timeZone"}` objects, which Google merges: the times stay.
    s.ok(
        "calendar_update_event",
        json!({"event_id": "kwq1planning", "time_zone": "America/New_York"}),
    )
    .await;
    assert_eq!(
        s.last("/events/kwq1planning").body_json().unwrap(),
        json!({"start": {"timeZone": "America/New_York"}, "end": {"timeZone": "America/New_York"}})
    );
    let zoned = s.ok("calendar_get_event", event).await;
    assert_eq!(zoned["start"], moved["start"]);
    assert_eq!(zoned["time_zone"], "America/New_York");

    let backwards = s
        .err(
            "calendar_update_event",
            json!({"event_id": "kwq1planning", "end": "2025-01-08T13:00:00+01:00"}),
        )
        .await;
    assert_has(&backwards, &["400", "time range is empty"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_respond_sets_only_my_response_and_refuses_non_guests() {
    let s = Session::start().await;
    let answered = s
        .ok(
            "calendar_respond_to_event",
            json!({"event_id": "kw1on1alice20250107", "email": "tester@example.com",
                   "response": "tentative", "comment": "Might be late"}),
        )
        .await;
    let request = s.last("/events/kw1on1alice20250107");
    assert_eq!(request.method, "PATCH");
    assert_eq!(
        request.body_json().unwrap(),
        json!({"attendeesOmitted": true, "attendees": [{"email": "tester@example.com",
               "responseStatus": "tentative", "comment": "Might be late"}]})
    );
    assert_eq!(
        answered["attendees"],
        json!(["alice@example.com", "tester@example.com"])
    );
    assert_eq!(answered["responses"], json!(["accepted", "tentative"]));
    let read = s
        .ok(
            "calendar_get_event",
            json!({"event_id": "kw1on1alice20250107"}),
        )
        .await;
    assert_eq!(read["responses"], answered["responses"]);

    // Not a guest of Bob's event, and not answering for Bob on Alice's.
    let stranger = s
        .err(
            "calendar_respond_to_event",
            json!({"calendar_id": "team@example.com", "event_id": "kwincidentreview",
                   "email": "tester@example.com", "response": "accepted"}),
        )
        .await;
    assert_has(&stranger, &["403", "organizer"]);
    let for_bob = s
        .err(
            "calendar_respond_to_event",
            json!({"event_id": "kw1on1alice20250107", "email": "bob@example.com",
                   "response": "declined"}),
        )
        .await;
    assert_has(&for_bob, &["403", "organizer"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_quick_add_creates_an_event_that_is_listed() {
    let s = Session::start().await;
    let text = "Dentist checkup 2025-03-03 14:30";
    let added = s.ok("calendar_quick_add", json!({"text": text})).await;
    let request = s.last("/events/quickAdd");
    assert_eq!(request.method, "POST");
    assert_query(&request, &[("text", Some(text))]);
    assert!(request.body.is_empty());
    assert_eq!(added["summary"], "Dentist checkup");
    assert_eq!(added["start"], "2025-03-03T14:30:00+01:00");
    assert_eq!(added["end"], "2025-03-03T15:30:00+01:00");

    let listed = s
        .ok(
            "calendar_list_events",
            json!({"time_min": "2025-03-03T00:00:00Z", "time_max": "2025-03-04T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        field(listed["items"].as_array().unwrap(), "id"),
        [&added["id"]]
    );

    let all_day = s
        .ok(
            "calendar_quick_add",
            json!({"text": "Company holiday 2025-03-10"}),
        )
        .await;
    assert_eq!(all_day["start"], "2025-03-10");
    let read_only = s
        .err(
            "calendar_quick_add",
            json!({"calendar_id": HOLIDAY_CALENDAR, "text": "Party 2025-03-03"}),
        )
        .await;
    assert_has(&read_only, &["403", "writer access"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_instances_page_through_a_recurring_event_only() {
    let s = Session::start().await;
    let instances = s
        .all_pages(
            "calendar_list_event_instances",
            json!({"event_id": "kwstandup", "max_results": 7}),
        )
        .await;
    assert_eq!(instances.len(), 20);
    assert!(instances
        .iter()
        .all(|i| i["id"].as_str().unwrap().starts_with("kwstandup_")));
    let starts: Vec<&str> = instances
        .iter()
        .map(|i| i["start"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    let request = s.last("/events/kwstandup/instances");
    assert_query(&request, &[("maxResults", Some("7")), ("pageToken", None)]);

    for single in ["kwteamlunch0110", "no-such-event"] {
        let err = s
            .err("calendar_list_event_instances", json!({"event_id": single}))
            .await;
        assert_has(&err, &["404"]);
    }
    s.finish().await;
}

/// A read-only grant keyward cannot check: Google's 403 names the scope it lacks, and the hint
/// the command that grants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_read_only_grant_is_told_to_add_the_write_scope() {
    let s = Session::with(
        "google",
        "https://www.googleapis.com/auth/calendar.readonly",
        None,
    )
    .await;
    let read = s
        .ok(
            "calendar_list_event_instances",
            json!({"event_id": "kwstandup"}),
        )
        .await;
    assert_eq!(read["count"], 20);
    let write = s
        .err(
            "calendar_update_event",
            json!({"event_id": "kwdentist0115", "summary": "Dentist (moved)"}),
        )
        .await;
    assert_has(
        &write,
        &[
            "403",
            "keyward connect google --scopes https://www.googleapis.com/auth/calendar.events",
        ],
    );
    s.finish().await;
}
