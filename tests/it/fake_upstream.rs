//! Checks of the fake upstream itself (tests/support): if these fail, every test built on the
//! fake proves nothing.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{
    token_response_json, FakeUpstream, CANARY_ACCESS, CANARY_REFRESH, DEVICE_GRANT_TYPE,
    GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET,
    SLACK_CLIENT_ID, SLACK_CLIENT_SECRET,
};

const REPO: &str = "https://www.googleapis.com/auth/calendar.events";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn json_of(resp: reqwest::Response) -> Value {
    resp.json().await.expect("json body")
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn pkce() -> (String, String) {
    let verifier = "kw-verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG".to_string();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Play the browser: GET the authorize URL, return the query of the redirect.
async fn authorize(
    up: &FakeUpstream,
    provider: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut url = url::Url::parse(&up.authorize_url(provider)).unwrap();
    url.query_pairs_mut().extend_pairs(extra);
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 302, "authorize should redirect");
    let location = url::Url::parse(&header(&resp, "location")).unwrap();
    assert_eq!(location.host_str(), Some("127.0.0.1"));
    location.query_pairs().into_owned().collect()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn github_pulls_page_with_link_headers_and_realistic_objects() {
    let up = FakeUpstream::start().await;
    up.grant("github", CANARY_ACCESS, &["repo"], None);
    let http = client();
    let url = format!("{}/repos/octocat/hello-world/pulls", up.github_api_base());
    let resp = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .query(&[("per_page", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let link = header(&resp, "link");
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=3>; rel=\"last\""), "{link}");
    assert!(link.contains(&up.github_api_base()), "{link}");
    assert_eq!(header(&resp, "x-oauth-scopes"), "repo");
    let body = json_of(resp).await;
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(items[0]["number"], 25, "newest first");
    assert_eq!(items[0]["state"], "open");
    assert!(items[0]["head"]["repo"]["pulls_url"].is_string());
    let size = serde_json::to_vec(&items[0]).unwrap().len();
    assert!(
        size > 15_000,
        "a pull request should be ~20 KB like GitHub's, got {size}"
    );

    let last = http
        .get(&url)
        .header("authorization", format!("token {CANARY_ACCESS}"))
        .query(&[("per_page", "10"), ("page", "3")])
        .send()
        .await
        .unwrap();
    let link = header(&last, "link");
    assert!(
        link.contains("rel=\"prev\"") && !link.contains("rel=\"next\""),
        "{link}"
    );
    assert_eq!(json_of(last).await.as_array().unwrap().len(), 5);

    let all = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .query(&[("state", "all"), ("per_page", "100"), ("base", "develop")])
        .send()
        .await
        .unwrap();
    assert_eq!(header(&all, "link"), "");
    let all = json_of(all).await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["base"]["ref"] == "develop"));

    let one = http
        .get(format!("{url}/26"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    let one = json_of(one).await;
    assert_eq!(one["merged"], true);
    assert_eq!(one["state"], "closed");
    let missing = http
        .get(format!("{url}/999"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(json_of(missing).await["message"], "Not Found");
    let recorded = up.requests_to("/pulls");
    assert_eq!(recorded[0].bearer_token(), Some(CANARY_ACCESS));
    assert_eq!(recorded[0].query_param("per_page").as_deref(), Some("10"));
}

#[tokio::test]
async fn github_token_errors_and_special_repositories() {
    let up = FakeUpstream::start().await;
    up.grant(
        "github",
        CANARY_ACCESS,
        &["repo"],
        Some(Duration::from_secs(3600)),
    );
    let http = client();
    let api = up.github_api_base();

    let bad = http
        .get(format!("{api}/user"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        json_of(bad).await,
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
    );
    let me = http
        .get(format!("{api}/user"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(json_of(me).await["login"], "kw-tester");

    for (repo, status) in [
        ("private-repo", 404),
        ("needs-scope", 403),
        ("ratelimited", 403),
        ("ratelimited-429", 429),
    ] {
        let resp = http
            .get(format!("{api}/repos/octocat/{repo}/pulls"))
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{repo}");
        if repo == "needs-scope" {
            assert_eq!(header(&resp, "x-oauth-scopes"), "read:user");
            assert_eq!(header(&resp, "x-accepted-oauth-scopes"), "repo");
        }
        if repo.starts_with("ratelimited") {
            assert_eq!(header(&resp, "retry-after"), "1");
            assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
        }
    }

    let moved = http
        .get(format!("{api}/repos/octocat/moved/pulls?state=all"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 302);
    let location = header(&moved, "location");
    assert!(location.starts_with(&up.steal_base_url()), "{location}");
    assert_ne!(
        url::Url::parse(&location).unwrap().port(),
        url::Url::parse(&up.base_url()).unwrap().port()
    );
    // A careful client follows without the token; the fake records what arrived.
    http.get(&location).send().await.unwrap();
    let stolen = up.steal_requests();
    assert_eq!(stolen.len(), 1);
    assert!(stolen[0].header("authorization").is_none());
    assert!(!stolen[0].contains(CANARY_ACCESS));

    assert!(up.expire_access_token(CANARY_ACCESS));
    let expired = http
        .get(format!("{api}/user"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
}

#[tokio::test]
async fn github_issues_contents_and_search() {
    let up = FakeUpstream::start().await;
    up.grant("github", CANARY_ACCESS, &["repo"], None);
    up.grant("github", "no-scope-token", &[], None);
    let http = client();
    let repo = format!("{}/repos/octocat/hello-world", up.github_api_base());

    let bugs = http
        .get(format!("{repo}/issues"))
        .bearer_auth(CANARY_ACCESS)
        .query(&[("labels", "bug"), ("state", "all"), ("per_page", "100")])
        .send()
        .await
        .unwrap();
    let bugs = json_of(bugs).await;
    assert!(!bugs.as_array().unwrap().is_empty());
    assert!(bugs.as_array().unwrap().iter().all(|i| i["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "bug")));

    let created = http
        .post(format!("{repo}/issues"))
        .bearer_auth(CANARY_ACCESS)
        .json(&json!({ "title": "Fake upstream works", "body": "hi", "labels": ["bug"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let number = json_of(created).await["number"].as_u64().unwrap();
    assert_eq!(number, 46);
    let comment = http
        .post(format!("{repo}/issues/{number}/comments"))
        .bearer_auth(CANARY_ACCESS)
        .json(&json!({ "body": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(comment.status(), 201);
    let issue = json_of(
        http.get(format!("{repo}/issues/{number}"))
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(issue["comments"], 1);
    assert_eq!(issue["title"], "Fake upstream works");
    let missing_title = http
        .post(format!("{repo}/issues"))
        .bearer_auth(CANARY_ACCESS)
        .json(&json!({ "body": "no title" }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_title.status(), 422);
    let no_scope = http
        .post(format!("{repo}/issues"))
        .bearer_auth("no-scope-token")
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_scope.status(), 404);

    let file = json_of(
        http.get(format!("{repo}/contents/src/util/strings.rs"))
            .bearer_auth(CANARY_ACCESS)
            .query(&[("ref", "develop")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(file["type"], "file");
    assert_eq!(file["encoding"], "base64");
    let guide = json_of(
        http.get(format!("{repo}/contents/docs/guide.md"))
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let content = guide["content"].as_str().unwrap();
    assert!(content.lines().all(|l| l.len() <= 60) && content.contains('\n'));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content.replace('\n', ""))
        .unwrap();
    assert_eq!(decoded.len() as u64, guide["size"].as_u64().unwrap());
    let dir = json_of(
        http.get(format!("{repo}/contents/src"))
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = dir
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lib.rs", "main.rs", "util"]);
    let bad_ref = http
        .get(format!("{repo}/contents/README.md?ref=no-such-branch"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ref.status(), 404);

    let search = http
        .get(format!("{}/search/issues", up.github_api_base()))
        .bearer_auth(CANARY_ACCESS)
        .query(&[
            ("q", "repo:octocat/hello-world is:pr is:open refresh"),
            ("per_page", "2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 200);
    let search = json_of(search).await;
    assert!(search["total_count"].as_u64().unwrap() >= 1);
    assert!(search["items"][0]["pull_request"]["html_url"].is_string());
    let no_kind = http
        .get(format!("{}/search/issues", up.github_api_base()))
        .bearer_auth(CANARY_ACCESS)
        .query(&[("q", "refresh")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_kind.status(), 422);
}

#[tokio::test]
async fn github_code_flow_checks_pkce_and_revokes_the_family_on_refresh_reuse() {
    let up = FakeUpstream::start().await;
    let http = client();
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:4567/callback";
    let params = [
        ("client_id", GITHUB_CLIENT_ID),
        ("redirect_uri", redirect),
        ("scope", "repo read:user"),
        ("state", "st4te"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let back = authorize(&up, "github", &params).await;
    assert_eq!(get(&back, "state"), Some("st4te"));
    let code = get(&back, "code").unwrap().to_string();
    let exchange = |code: String, verifier: String| {
        let http = http.clone();
        let url = up.token_url("github");
        async move {
            http.post(url)
                .header("accept", "application/json")
                .form(&[
                    ("client_id", GITHUB_CLIENT_ID),
                    ("client_secret", GITHUB_CLIENT_SECRET),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = exchange(code.clone(), "x".repeat(50)).await;
    assert_eq!(wrong.status(), 200, "GitHub answers errors with 200");
    assert_eq!(json_of(wrong).await["error"], "bad_verification_code");
    // The code was spent by the failed attempt.
    let again = exchange(code, verifier.clone()).await;
    assert_eq!(json_of(again).await["error"], "bad_verification_code");

    let back = authorize(&up, "github", &params).await;
    let tokens = json_of(exchange(get(&back, "code").unwrap().to_string(), verifier).await).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(tokens["expires_in"], 28800);
    assert_eq!(tokens["scope"], "repo,read:user");
    assert!(up.token_is_valid("github", &access));

    let refresh = |rt: String| {
        let http = http.clone();
        let url = up.token_url("github");
        async move {
            json_of(
                http.post(url)
                    .header("accept", "application/json")
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                        ("client_id", GITHUB_CLIENT_ID),
                        ("client_secret", GITHUB_CLIENT_SECRET),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let rotated = refresh(refresh1.clone()).await;
    let access2 = rotated["access_token"].as_str().unwrap().to_string();
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    assert!(up.token_is_valid("github", &access2));
    assert!(!up.family_revoked("github"));

    let reuse = refresh(refresh1).await;
    assert_eq!(reuse["error"], "bad_refresh_token");
    assert!(up.family_revoked("github"));
    assert!(!up.token_is_valid("github", &access2));
    assert!(!up.refresh_token_is_valid("github", &refresh2));
    assert_eq!(refresh(refresh2).await["error"], "bad_refresh_token");
    assert_eq!(up.refresh_count("github"), 3);
    assert_eq!(up.successful_refreshes("github"), 1);
    assert_eq!(up.issued_tokens("github").len(), 2);
    let me = http
        .get(format!("{}/user", up.github_api_base()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn github_device_flow_polls_pending_slow_down_then_tokens_form_encoded() {
    let up = FakeUpstream::start().await;
    let http = client();
    let start = http
        .post(up.device_authorization_url("github").unwrap())
        .form(&[("client_id", GITHUB_CLIENT_ID), ("scope", "repo")])
        .send()
        .await
        .unwrap();
    assert!(header(&start, "content-type").starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&start.bytes().await.unwrap())
        .into_owned()
        .collect();
    let device_code = get(&form, "device_code").unwrap().to_string();
    let user_code = get(&form, "user_code").unwrap().to_string();
    assert_eq!(up.pending_device_codes("github"), vec![user_code.clone()]);
    let poll = || {
        let http = http.clone();
        let url = up.token_url("github");
        let device_code = device_code.clone();
        async move {
            json_of(
                http.post(url)
                    .header("accept", "application/json")
                    .form(&[
                        ("client_id", GITHUB_CLIENT_ID),
                        ("device_code", device_code.as_str()),
                        ("grant_type", DEVICE_GRANT_TYPE),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(poll().await["error"], "authorization_pending");
    assert_eq!(
        poll().await["error"],
        "slow_down",
        "polled faster than the interval"
    );
    // Forced, whatever the time since the last poll.
    up.force_slow_down("github", 1);
    let forced = poll().await;
    assert_eq!(forced["error"], "slow_down");
    assert!(forced["interval"].as_u64().unwrap() >= 6);
    assert!(up.approve_device(&user_code));
    let tokens = poll().await;
    assert!(tokens["access_token"].as_str().unwrap().starts_with("gho_"));
    assert_eq!(
        poll().await["error"],
        "incorrect_device_code",
        "device codes are single-use"
    );
}

#[tokio::test]
async fn slack_answers_ok_false_and_pages_with_cursors() {
    let up = FakeUpstream::start().await;
    up.grant(
        "slack",
        CANARY_ACCESS,
        &["channels:read", "channels:history"],
        None,
    );
    let http = client();
    let api = up.slack_api_base();
    let call = |method: &str, token: &str, query: Vec<(&str, &str)>| {
        let req = http
            .get(format!("{api}/{method}"))
            .bearer_auth(token)
            .query(&query);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            json_of(resp).await
        }
    };
    assert_eq!(
        call("auth.test", "xoxp-unknown", vec![]).await,
        json!({"ok": false, "error": "invalid_auth"})
    );
    let missing = call(
        "chat.postMessage",
        CANARY_ACCESS,
        vec![("channel", "C0GENERAL1"), ("text", "x")],
    )
    .await;
    assert_eq!(missing["error"], "missing_scope");
    assert_eq!(missing["needed"], "chat:write");
    assert_eq!(missing["provided"], "channels:read,channels:history");
    let nowhere = call(
        "conversations.history",
        CANARY_ACCESS,
        vec![("channel", "C0NOSUCH00")],
    )
    .await;
    assert_eq!(nowhere, json!({"ok": false, "error": "channel_not_found"}));

    let first = call(
        "conversations.list",
        CANARY_ACCESS,
        vec![("limit", "5"), ("exclude_archived", "true")],
    )
    .await;
    assert_eq!(first["ok"], true);
    assert_eq!(first["channels"].as_array().unwrap().len(), 5);
    let cursor = first["response_metadata"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!cursor.is_empty());
    let mut seen = 5;
    let mut cursor = cursor;
    while !cursor.is_empty() {
        let page = call(
            "conversations.list",
            CANARY_ACCESS,
            vec![
                ("limit", "5"),
                ("cursor", cursor.as_str()),
                ("exclude_archived", "true"),
            ],
        )
        .await;
        seen += page["channels"].as_array().unwrap().len();
        cursor = page["response_metadata"]["next_cursor"]
            .as_str()
            .unwrap()
            .to_string();
    }
    assert_eq!(seen, 13, "public, non-archived channels");

    let history = call(
        "conversations.history",
        CANARY_ACCESS,
        vec![("channel", "C0GENERAL1"), ("limit", "20")],
    )
    .await;
    assert_eq!(history["has_more"], true);
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 20);
    let parent = messages
        .iter()
        .find(|m| m["reply_count"].as_u64().unwrap_or(0) > 0)
        .unwrap();
    let thread = call(
        "conversations.replies",
        CANARY_ACCESS,
        vec![
            ("channel", "C0GENERAL1"),
            ("ts", parent["ts"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(thread["messages"].as_array().unwrap().len(), 4);

    up.grant("slack", "xoxp-writer", &["chat:write"], None);
    let posted = http
        .post(format!("{api}/chat.postMessage"))
        .bearer_auth("xoxp-writer")
        .header("content-type", "application/json; charset=utf-8")
        .body(json!({ "channel": "C0GENERAL1", "text": "hello from the test" }).to_string())
        .send()
        .await
        .unwrap();
    let posted = json_of(posted).await;
    assert_eq!(posted["ok"], true);
    assert_eq!(posted["channel"], "C0GENERAL1");
    assert_eq!(posted["message"]["text"], "hello from the test");

    up.grant(
        "slack",
        "xoxp-short",
        &["channels:read"],
        Some(Duration::ZERO),
    );
    assert_eq!(
        call("auth.test", "xoxp-short", vec![]).await["error"],
        "token_expired"
    );
}

#[tokio::test]
async fn slack_oauth_returns_user_tokens_and_rotates_refresh_tokens() {
    let up = FakeUpstream::start().await;
    let http = client();
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:5555/callback";
    let back = authorize(
        &up,
        "slack",
        &[
            ("client_id", SLACK_CLIENT_ID),
            ("user_scope", "channels:read,chat:write"),
            ("redirect_uri", redirect),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let code = get(&back, "code").unwrap();
    let resp = http
        .post(up.token_url("slack"))
        .basic_auth(SLACK_CLIENT_ID, Some(SLACK_CLIENT_SECRET))
        .form(&[
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier.as_str()),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .unwrap();
    let body = json_of(resp).await;
    assert_eq!(body["ok"], true, "{body}");
    let user = &body["authed_user"];
    assert_eq!(user["token_type"], "user");
    assert_eq!(user["scope"], "channels:read,chat:write");
    assert_eq!(user["expires_in"], 43200);
    let rt = user["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: String| {
        let http = http.clone();
        let url = up.token_url("slack");
        async move {
            json_of(
                http.post(url)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                        ("client_id", SLACK_CLIENT_ID),
                        ("client_secret", SLACK_CLIENT_SECRET),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let next = refresh(rt.clone()).await;
    assert_eq!(next["ok"], true);
    assert!(next["access_token"]
        .as_str()
        .unwrap()
        .starts_with("xoxe.xoxp-"));
    assert_ne!(next["refresh_token"], json!(rt));
    assert_eq!(
        refresh(rt).await,
        json!({"ok": false, "error": "invalid_refresh_token"})
    );
    assert!(up.family_revoked("slack"));

    up.grant("slack", CANARY_ACCESS, &["channels:read"], None);
    let revoked = http
        .post(format!("{}/auth.revoke", up.slack_api_base()))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(revoked).await, json!({"ok": true, "revoked": true}));
    assert_eq!(up.revocations("slack"), vec![CANARY_ACCESS.to_string()]);
    assert!(!up.token_is_valid("slack", CANARY_ACCESS));
}

#[tokio::test]
async fn google_refresh_does_not_rotate_and_calendar_behaves() {
    let up = FakeUpstream::start().await;
    up.grant_with_refresh(
        "google",
        CANARY_ACCESS,
        CANARY_REFRESH,
        &[REPO],
        Some(Duration::from_secs(60)),
    );
    let http = client();
    let refresh = || {
        http.post(up.token_url("google"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", CANARY_REFRESH),
                ("client_id", GOOGLE_CLIENT_ID),
                ("client_secret", GOOGLE_CLIENT_SECRET),
            ])
            .send()
    };
    for _ in 0..2 {
        let body = json_of(refresh().await.unwrap()).await;
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["token_type"], "Bearer");
        assert!(
            body.get("refresh_token").is_none(),
            "Google does not rotate: {body}"
        );
    }
    up.force_invalid_grant("google", true);
    let refused = refresh().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        json_of(refused).await,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    up.force_invalid_grant("google", false);

    let cal = up.google_api_base();
    let events = http
        .get(format!("{cal}/calendars/primary/events"))
        .bearer_auth(CANARY_ACCESS)
        .query(&[
            ("timeMin", "2025-01-06T00:00:00Z"),
            ("timeMax", "2025-01-11T00:00:00Z"),
            ("maxResults", "3"),
            ("singleEvents", "true"),
            ("orderBy", "startTime"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let events = json_of(events).await;
    assert_eq!(events["items"].as_array().unwrap().len(), 3);
    assert_eq!(events["items"][0]["summary"], "Daily standup");
    assert_eq!(
        events["items"][0]["start"]["dateTime"],
        "2025-01-06T09:30:00+01:00"
    );
    assert!(events["nextPageToken"].is_string());

    let bad_order = http
        .get(format!("{cal}/calendars/primary/events"))
        .bearer_auth(CANARY_ACCESS)
        .query(&[("orderBy", "startTime")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_order.status(), 400);

    let created = http
        .post(format!("{cal}/calendars/team%40example.com/events"))
        .bearer_auth(CANARY_ACCESS)
        .json(&json!({ "summary": "Test", "start": { "dateTime": "2025-03-03T10:00:00Z" }, "end": { "dateTime": "2025-03-03T11:00:00Z" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let id = json_of(created).await["id"].as_str().unwrap().to_string();
    let url = format!("{cal}/calendars/team@example.com/events/{id}");
    let deleted = http
        .delete(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = http
        .delete(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 410);
    assert_eq!(
        json_of(again).await["error"]["message"],
        "Resource has been deleted"
    );
    let unknown = http
        .delete(format!("{cal}/calendars/primary/events/nope"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(json_of(unknown).await["error"]["status"], "NOT_FOUND");
    let holiday = http
        .get(format!(
            "{cal}/calendars/en.usa%23holiday%40group.v.calendar.google.com/events"
        ))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(holiday.status(), 200);

    let free_busy = http
        .post(format!("{cal}/freeBusy"))
        .bearer_auth(CANARY_ACCESS)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        free_busy.status(),
        403,
        "calendar.events does not cover freeBusy"
    );
    assert!(header(&free_busy, "www-authenticate").contains("insufficient_scope"));

    let revoke = http
        .post(format!("{}/google/revoke", up.base_url()))
        .form(&[("token", CANARY_REFRESH)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let after = http
        .get(format!("{cal}/users/me/calendarList"))
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert_eq!(json_of(after).await["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn knobs_inject_failures_delays_and_omissions() {
    let up = FakeUpstream::start().await;
    up.grant_with_refresh("github", CANARY_ACCESS, CANARY_REFRESH, &["repo"], None);
    let http = client();
    up.fail_api("/github/repos/o/r/pulls", 2, 429, Some(2));
    let url = format!("{}/repos/o/r/pulls", up.github_api_base());
    for _ in 0..2 {
        let resp = http
            .get(&url)
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(header(&resp, "retry-after"), "2");
    }
    assert_eq!(
        http.get(&url)
            .bearer_auth(CANARY_ACCESS)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    up.fail_token_endpoint("github", 1, 503);
    up.omit_refresh_token("github", true);
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", CANARY_REFRESH),
        ("client_id", GITHUB_CLIENT_ID),
        ("client_secret", GITHUB_CLIENT_SECRET),
    ];
    let down = http
        .post(up.token_url("github"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    let ok = http
        .post(up.token_url("github"))
        .header("accept", "application/json")
        .form(&form)
        .send()
        .await
        .unwrap();
    let body = json_of(ok).await;
    assert!(body.get("refresh_token").is_none());
    assert!(
        up.refresh_token_is_valid("github", CANARY_REFRESH),
        "an omitted refresh token keeps the old one"
    );
    assert_eq!(up.token_requests("github"), 2);

    up.token_endpoint_delay("github", Duration::from_millis(300));
    let started = std::time::Instant::now();
    http.post(up.token_url("github"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    let parsed = keyward::config::Config::parse(&up.config_toml()).expect("config.toml parses");
    assert_eq!(
        parsed.provider("github").unwrap().api_base.as_deref(),
        Some(up.github_api_base().as_str())
    );
    assert!(
        token_response_json(CANARY_ACCESS, Some(CANARY_REFRESH), Some(3600), "repo")
            .contains("\"expires_in\":3600")
    );
}

/// `answer_api` (the fixtures' sample answers): exactly that method and path, once; an injected
/// failure still comes first.
#[tokio::test]
async fn a_canned_answer_replaces_the_fakes_own_once() {
    let up = FakeUpstream::start().await;
    up.grant("github", CANARY_ACCESS, &["repo"], None);
    let http = client();
    let url = format!("{}/repos/o/r/issues/7", up.github_api_base());
    let canned = |n: u16| {
        up.answer_api(
            "GET",
            "/github/repos/o/r/issues/7",
            n,
            vec![("x-canned".into(), "yes".into())],
            br#"{"canned":true}"#.to_vec(),
        )
    };
    canned(200);
    let post = http
        .post(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert!(post.headers().get("x-canned").is_none(), "another method");
    let get = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&get, "x-canned"), "yes");
    assert_eq!(json_of(get).await, json!({"canned": true}));
    let again = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert!(again.headers().get("x-canned").is_none(), "once");

    canned(200);
    up.fail_api("/issues/7", 1, 503, None);
    let failed = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    let get = http
        .get(&url)
        .bearer_auth(CANARY_ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&get, "x-canned"), "yes");
}

#[tokio::test]
async fn google_code_flow_needs_offline_for_a_refresh_token_and_device_flow_uses_428() {
    let up = FakeUpstream::start().await;
    let http = client();
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:7777/cb";
    let mut params = vec![
        ("client_id", GOOGLE_CLIENT_ID),
        ("redirect_uri", redirect),
        ("response_type", "code"),
        ("scope", REPO),
        ("state", "g"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let exchange = |code: String, redirect_uri: &'static str| {
        let http = http.clone();
        let url = up.token_url("google");
        let verifier = verifier.clone();
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier.as_str()),
                    ("client_id", GOOGLE_CLIENT_ID),
                    ("client_secret", GOOGLE_CLIENT_SECRET),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let back = authorize(&up, "google", &params).await;
    assert_eq!(get(&back, "scope"), Some(REPO));
    let online = json_of(exchange(get(&back, "code").unwrap().into(), redirect).await).await;
    assert!(
        online.get("refresh_token").is_none(),
        "no access_type=offline: {online}"
    );

    params.push(("access_type", "offline"));
    let back = authorize(&up, "google", &params).await;
    let wrong_redirect = exchange(get(&back, "code").unwrap().into(), "http://127.0.0.1:1/x").await;
    assert_eq!(wrong_redirect.status(), 400);
    assert_eq!(
        json_of(wrong_redirect).await["error"],
        "redirect_uri_mismatch"
    );
    let back = authorize(&up, "google", &params).await;
    let offline = json_of(exchange(get(&back, "code").unwrap().into(), redirect).await).await;
    assert!(offline["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("1//"));
    assert_eq!(offline["scope"], REPO);

    up.deny_authorization("google", true);
    let denied = authorize(&up, "google", &params).await;
    assert_eq!(get(&denied, "error"), Some("access_denied"));
    assert_eq!(get(&denied, "state"), Some("g"));

    let start = json_of(
        http.post(up.device_authorization_url("google").unwrap())
            .form(&[("client_id", GOOGLE_CLIENT_ID), ("scope", REPO)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        start["verification_url"].is_string(),
        "Google says verification_url: {start}"
    );
    let poll = || {
        http.post(up.token_url("google"))
            .form(&[
                ("client_id", GOOGLE_CLIENT_ID),
                ("client_secret", GOOGLE_CLIENT_SECRET),
                ("device_code", start["device_code"].as_str().unwrap()),
                ("grant_type", DEVICE_GRANT_TYPE),
            ])
            .send()
    };
    let pending = poll().await.unwrap();
    assert_eq!(pending.status(), 428);
    assert_eq!(json_of(pending).await["error"], "authorization_pending");
    // A denied code is refused at once, whatever the time since the last poll.
    assert!(up.deny_device(start["user_code"].as_str().unwrap()));
    let denied = poll().await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(json_of(denied).await["error"], "access_denied");
}
