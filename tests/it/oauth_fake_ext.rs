//! What the OAuth tests need besides `tests/support`: a headless "browser" that follows the
//! authorize redirect to keyward's loopback callback, and small token-response helpers.

use std::time::Duration;

/// A client that follows no redirects: the test looks at each hop itself.
pub fn browser() -> reqwest::Client {
    keyward::exec::client::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Play the browser: GET the authorize URL, take the 302 to keyward's loopback callback,
/// optionally tamper with it, GET it. Returns the callback page's status and HTML.
pub async fn play_browser(
    authorize: &url::Url,
    tamper: impl FnOnce(url::Url) -> url::Url,
) -> (u16, String) {
    let client = browser();
    let resp = client
        .get(authorize.clone())
        .send()
        .await
        .expect("the authorize endpoint answers");
    assert_eq!(
        resp.status().as_u16(),
        302,
        "the authorize endpoint redirects: {:?}",
        resp.text().await
    );
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let callback = tamper(url::Url::parse(&location).unwrap());
    assert_eq!(callback.host_str(), Some("127.0.0.1"));
    assert_eq!(callback.path(), "/callback");
    let page = client
        .get(callback)
        .send()
        .await
        .expect("keyward's callback answers");
    let status = page.status().as_u16();
    (status, page.text().await.unwrap())
}

/// A query parameter of `url`.
pub fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
