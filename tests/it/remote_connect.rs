//! Connecting an account from a browser, end to end with real processes: a remote user's call
//! that lacks a connection gets a `/connect` link (URL elicitation for a 2026-07-28 client that
//! can show one, the error's hint for others); the browser signs in with the test identity
//! provider, is sent to the fake provider, comes back to `/oauth/callback/<provider>`, the grant
//! is stored, and the retried call succeeds. Tickets are single-use, expire, cannot be forged,
//! and a browser signed in as someone else cannot use them.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::remote_auth::{get_me, Remote};
use crate::server_stateless::{answer, call_tool, call_tool_eliciting, post};
use crate::support::browser::Browser;
use crate::support::canary::assert_no_canary;
use crate::support::home::status_of;

/// A 2026-07-28 POST of `body` with `credential`; the JSON-RPC answer.
async fn rpc(base: &str, credential: &str, body: &Value) -> Value {
    let response = post(base, credential, body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    answer(response).await.1
}

fn issue_args() -> Value {
    json!({"owner": "octo", "repo": "seen-by", "number": 3})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_connection_becomes_a_link_the_user_completes_in_a_browser() {
    let remote = Remote::start(Algorithm::ES256, &[], true).await;
    let base = &remote.base;
    let alice = remote.token("alice");

    // A client that can show a URL is asked to open the link.
    let asked = rpc(
        base,
        &alice,
        &call_tool_eliciting(1, "github_get_issue", issue_args()),
    )
    .await["result"]
        .clone();
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let elicit = &asked["inputRequests"]["sign-in"];
    assert_eq!(elicit["params"]["mode"], "url", "{asked}");
    let link = elicit["params"]["url"].as_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!("{base}/connect/github?ticket=")),
        "{link}"
    );
    let state = asked["requestState"].as_str().unwrap().to_string();
    assert_no_canary("the connect link", link.as_bytes());
    assert_no_canary("the requestState", state.as_bytes());

    // A client that cannot gets the same kind of link in the error's hint.
    let plain = rpc(
        base,
        &alice,
        &call_tool(2, "github_get_issue", issue_args()),
    )
    .await;
    assert_eq!(plain["result"]["isError"], true, "{plain}");
    let hint = plain["result"]["structuredContent"]["hint"]
        .as_str()
        .unwrap();
    assert!(
        hint.contains(&format!("{base}/connect/github?ticket=")),
        "{hint}"
    );

    // The client retries at once, with the answer and the state: the retry waits for the
    // connection while the person opens the link (sign-in at the identity provider, then the
    // provider).
    let mut retry = call_tool_eliciting(3, "github_get_issue", issue_args());
    retry["params"]["inputResponses"] = json!({"sign-in": {"action": "accept"}});
    retry["params"]["requestState"] = json!(state);
    let retried = {
        let (base, alice) = (base.clone(), alice.clone());
        tokio::spawn(async move { rpc(&base, &alice, &retry).await })
    };
    remote.issuer.sign_in_browser_as("alice");
    let browser = Browser::new();
    let page = browser.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("GitHub is connected"), "{}", page.body);
    let path = |p: &str| page.visited.iter().any(|u| u.path() == p);
    assert!(
        path("/auth/sign-in") && path("/auth/callback") && path("/oauth/callback/github"),
        "{:?}",
        page.visited
    );
    // The identity provider was asked with PKCE and a nonce; the provider too.
    let idp = remote.issuer.authorize_requests.lock().unwrap()[0].clone();
    assert_eq!(idp["code_challenge_method"], "S256");
    assert!(idp.contains_key("nonce") && idp.contains_key("state"));
    let session = browser.cookie("keyward_session").expect("a session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(
            session.attributes.iter().any(|a| a == attribute),
            "{attribute}: {session:?}"
        );
    }
    let stored = status_of(&remote.kw, "github").expect("the connection is stored");
    assert_eq!(stored["user"], "alice", "{stored}");

    // The retry went through once the connection was stored.
    let done = tokio::time::timeout(std::time::Duration::from_secs(120), retried)
        .await
        .expect("the retry answers once the connection is stored")
        .unwrap();
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");

    // The link works once.
    let again = browser.get(&link).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already used"), "{}", again.body);
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_is_refused_to_another_signed_in_user_and_when_forged_or_expired() {
    let remote = Remote::start(Algorithm::RS256, &[], true).await;
    let base = &remote.base;
    let plain = rpc(
        base,
        &remote.token("alice"),
        &call_tool(1, "github_get_me", json!({})),
    )
    .await;
    let hint = plain["result"]["structuredContent"]["hint"]
        .as_str()
        .unwrap()
        .to_string();
    let link = hint
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_string();

    // Mallory got alice's link: signed in as herself, she cannot use it.
    remote.issuer.sign_in_browser_as("mallory");
    let mallory = Browser::new();
    let page = mallory.get(&link).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("someone else"), "{}", page.body);
    assert!(status_of(&remote.kw, "github").is_none());

    // A tampered ticket, and one past its expiry (sealed with the server's own key), are
    // refused before anything else happens.
    let tampered = format!("{}A", link);
    let page = Browser::new().get(&tampered).await;
    assert_eq!(page.status, 400, "{}", page.body);
    let key = keyward::server::seal::WebKey::load_or_create(&keyward::config::Home {
        dir: remote.kw.home(),
    })
    .unwrap();
    let expired = key.seal(
        "ticket",
        &keyward::server::connect_web::Ticket {
            id: "expired".into(),
            user: "alice".into(),
            provider: "github".into(),
            account: "default".into(),
            scopes: None,
            exp: chrono::Utc::now().timestamp() - 1,
        },
    );
    let page = Browser::new()
        .get(&format!("{base}/connect/github?ticket={expired}"))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    // A link for one provider does not open another's flow.
    let other = link.replace("/connect/github", "/connect/slack");
    assert_eq!(Browser::new().get(&other).await.status, 400);

    // Alice herself still can: mallory's attempt did not use the link up.
    remote.issuer.sign_in_browser_as("alice");
    let page = Browser::new().get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (status, me, _) = get_me(base, &remote.token("alice")).await;
    assert_eq!(status, 200);
    assert_eq!(me["result"]["isError"], false, "{me}");
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_identity_provider_the_ticket_alone_connects() {
    let remote = Remote::start(Algorithm::ES256, &[], false).await;
    let base = &remote.base;
    let key = remote.kw.ok(&["users", "add", "alice"], "").stdout();
    let plain = rpc(base, key.trim(), &call_tool(1, "github_get_me", json!({}))).await;
    let hint = plain["result"]["structuredContent"]["hint"]
        .as_str()
        .unwrap()
        .to_string();
    let link = hint
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{base}/connect/")))
        .unwrap_or_else(|| panic!("a link in {hint}"))
        .to_string();
    let page = Browser::new().get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.visited.iter().any(|u| u.path().starts_with("/auth/")));
    let (_, me, _) = get_me(base, key.trim()).await;
    assert_eq!(me["result"]["isError"], false, "{me}");
    // No identity provider: no metadata, and the account page says sign-in is not set up.
    let response = reqwest::get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let home = Browser::new().get(&format!("{base}/")).await;
    assert!(home.body.contains("not set"), "{}", home.body);
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_authenticates_with_basic_auth_when_the_provider_wants_it() {
    let remote = Remote::start(Algorithm::ES256, &["alice"], true).await;
    // Before keyward reads the discovery document (it does so on first need).
    remote
        .issuer
        .basic_only
        .store(true, std::sync::atomic::Ordering::SeqCst);
    remote.issuer.sign_in_browser_as("alice");
    let browser = Browser::new();
    let page = browser.get(&format!("{}/auth/sign-in", remote.base)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Your connections"), "{}", page.body);
    assert!(page.body.contains("GitHub"), "{}", page.body);
    // `users remove` signs the browser out too: the session cookie no longer counts.
    remote.kw.ok(&["users", "remove", "alice"], "");
    let page = browser.get(&format!("{}/", remote.base)).await;
    assert!(!page.body.contains("Your connections"), "{}", page.body);
    assert!(page.body.contains("Sign in"), "{}", page.body);
    remote.server.stop().await;
}
