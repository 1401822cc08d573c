//! The HTTP client of the OAuth flows: `oauth2`'s [`AsyncHttpClient`] over the project's reqwest.
//!
//! `oauth2` 5.x ships a reqwest integration, but it pins an older reqwest than the rest of the
//! build (rmcp), and two reqwests mean two TLS stacks. So this module implements `oauth2`'s
//! client trait over the reqwest client keyward already has, and every request the OAuth code
//! makes — device authorization, token endpoint, revocation — goes through [`OAuthHttp::call`].
//!
//! Errors never carry a body or a header: reqwest's own messages name the URL only, and the
//! token endpoint is never given a token in its URL.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};

use crate::error::{Error, Result};

/// Upper bound on any answer of an OAuth endpoint (they are a few hundred bytes).
const MAX_BODY: usize = 256 * 1024;

/// Why an OAuth HTTP request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("timed out")]
    Timeout,
    #[error("could not connect")]
    Connect,
    #[error("the answer was larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    Other(String),
}

/// Install the process-wide rustls crypto provider (reqwest is built without one so that the
/// build pulls in a single TLS backend). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client for OAuth endpoints, usable by `oauth2` and by keyward's own requests.
#[derive(Clone)]
pub struct OAuthHttp {
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for OAuthHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthHttp")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OAuthHttp {
    /// A client of its own: redirects are not followed (an OAuth endpoint that redirects is
    /// misconfigured, and following would carry the form with the secrets elsewhere).
    pub fn new(timeout: Duration) -> Result<OAuthHttp> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::other(format!("building the HTTP client: {e}")))?;
        Ok(OAuthHttp { client, timeout })
    }

    /// Wrap an existing client (the executor's), keeping its redirect policy.
    pub fn with_client(client: reqwest::Client, timeout: Duration) -> OAuthHttp {
        OAuthHttp { client, timeout }
    }

    /// Send one request and read the whole answer, within `timeout`.
    pub async fn send(
        &self,
        request: HttpRequest,
        timeout: Duration,
    ) -> std::result::Result<HttpResponse, HttpError> {
        let request =
            reqwest::Request::try_from(request).map_err(|e| HttpError::Other(e.to_string()))?;
        let io = async {
            let mut response = self.client.execute(request).await?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Ok(Err(HttpError::TooLarge));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(
                builder
                    .body(body)
                    .map_err(|e| HttpError::Other(e.to_string())),
            )
        };
        match tokio::time::timeout(timeout, io).await {
            Err(_) => Err(HttpError::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(HttpError::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(HttpError::Connect),
            Ok(Err(e)) => Err(HttpError::Other(strip_url(&e))),
            Ok(Ok(result)) => result,
        }
    }

    /// The underlying reqwest client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The default per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// reqwest's error text without the URL (a revocation URL could in principle carry a query).
fn strip_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the endpoint");
    }
    text
}

impl<'c> AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request, self.timeout))
    }
}

/// A form POST with `Accept: application/json` (GitHub's token endpoint answers
/// form-encoded text without it).
pub fn form_request(
    url: &str,
    form: &[(&str, &str)],
    basic_auth: Option<(&str, &str)>,
) -> Result<HttpRequest> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
        .into_bytes();
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let Some((user, password)) = basic_auth {
        builder = builder.header(http::header::AUTHORIZATION, basic(user, password));
    }
    builder
        .body(body)
        .map_err(|e| Error::config(format!("the endpoint {url} is not a valid URL: {e}")))
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
