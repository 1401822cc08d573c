//! The account page in a real browser: headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` with the `fantoccini` WebDriver client) signs in with the test identity
//! provider, sees the user's connections, disconnects one. A screenshot of the page is saved
//! as `target/account-page.png` (the README shows it).
//!
//! Chromium and chromedriver are installed with apt when missing under `CI=true`; elsewhere the
//! test is skipped with a note when they are missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::remote_auth::Remote;
use crate::support::home::status_of;
use crate::support::mcp::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and its driver, installed under CI when missing. `false`: not here (skip).
fn chromium_available() -> bool {
    let present =
        || std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if present() {
        return true;
    }
    if std::env::var("CI").as_deref() != Ok("true") {
        return false;
    }
    let installed = Command::new("bash")
        .arg("-c")
        .arg(
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
             apt-get install -y -qq chromium chromium-driver",
        )
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed && present(),
        "CI must be able to install Debian's chromium and chromium-driver for the browser test"
    );
    true
}

/// A chromedriver child on a free loopback port; killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let ready = async {
        loop {
            if reqwest::get(&status).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("chromedriver answers within 60 s");
    driver
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_page_in_headless_chromium_lists_and_disconnects() {
    if !chromium_available() {
        eprintln!("skipping the browser test: chromium and chromedriver are not installed");
        return;
    }
    let remote = Remote::start(Algorithm::RS256, &["alice"], true).await;
    let slack = json!({
        "access_token": "xoxp-kwcanary_access_slack", "token_type": "bearer",
        "scope": "channels:history,chat:write,users:read",
    });
    remote.kw.ok(
        &["import", "slack", "--user", "alice", "--account", "work"],
        &slack.to_string(),
    );
    remote.issuer.sign_in_browser_as("alice");
    let driver = driver().await;
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,760",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    let base = &remote.base;

    // Signed out: one button, to the identity provider and back.
    client.goto(&format!("{base}/")).await.unwrap();
    client
        .find(Locator::LinkText("Sign in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let table = client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#connections"))
        .await
        .expect("the account page after sign-in");
    let text = table.text().await.unwrap();
    assert!(text.contains("GitHub") && text.contains("Slack"), "{text}");
    assert!(
        text.contains("read:user") && text.contains("active"),
        "{text}"
    );
    let page = client.source().await.unwrap();
    assert!(page.contains("Signed in as"), "{page}");
    crate::support::canary::assert_no_canary("the account page", page.as_bytes());
    // The session cookie is not readable by scripts (HttpOnly).
    let script_cookies = client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(script_cookies, json!(""), "{script_cookies}");

    let shot = client.screenshot().await.unwrap();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("account-page.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");

    // Disconnect GitHub: the page comes back without it, with a notice.
    client
        .find(Locator::Css(
            "tr[data-provider=\"github\"] form[action=\"/account/disconnect\"] button",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = match client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(".notice"))
        .await
    {
        Ok(notice) => notice,
        Err(e) => panic!(
            "no notice after disconnecting ({e}); the browser is at {:?} showing:\n{}",
            client.current_url().await.map(|u| u.to_string()),
            client.source().await.unwrap_or_default()
        ),
    };
    assert!(
        notice.text().await.unwrap().contains("Disconnected github"),
        "{:?}",
        notice.text().await
    );
    let rows = client
        .find_all(Locator::Css("tr[data-provider=\"github\"]"))
        .await
        .unwrap();
    assert!(rows.is_empty(), "GitHub is gone from the page");
    assert!(status_of(&remote.kw, "github").is_none());

    client.close().await.unwrap();
    drop(driver);
    remote.server.stop().await;
}
