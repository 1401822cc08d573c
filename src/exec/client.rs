//! The upstream HTTP client: one request with the token, within the call's time budget.
//!
//! - Redirects are followed only to the same scheme, host and port (GitHub answers a renamed
//!   repository with a same-host 301); a redirect anywhere else is not followed, so the token
//!   never travels to a host the manifest did not declare (invariant 3).
//! - Bodies larger than the cap are cut off with a clear error rather than buffered.
//! - 429, 5xx and GitHub's rate-limit 403 are retried a bounded number of times, honouring
//!   `Retry-After`, but only while the call's deadline allows; past it the error says when to
//!   try again. Waits are untrusted numbers (`Retry-After: 18446744073709551615`): they are
//!   compared with the time left, never added to an `Instant`, so no value can overflow.

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use reqwest::redirect::Policy;

use super::render::{RenderedBody, RenderedRequest};
use super::ToolError;
use crate::config::ExecutorConfig;
use crate::error::{Error, Result};
use crate::secret::SecretString;

pub use crate::budget::deadline_after;

/// A response, read whole (up to the size cap).
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The shared HTTP client and its limits.
pub struct Upstream {
    http: reqwest::Client,
    limits: ExecutorConfig,
}

pub use crate::oauth::http::install_crypto_provider;

impl Upstream {
    pub fn new(limits: &ExecutorConfig) -> Result<Upstream> {
        install_crypto_provider();
        let policy = Policy::custom(|attempt| {
            let same_origin = attempt.previous().first().is_some_and(|first| {
                let next = attempt.url();
                first.scheme() == next.scheme()
                    && first.host_str() == next.host_str()
                    && first.port_or_known_default() == next.port_or_known_default()
            });
            if same_origin && attempt.previous().len() < 5 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(limits.connect_timeout_ms))
            .read_timeout(Duration::from_millis(limits.read_timeout_ms))
            .redirect(policy)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::other(format!("building the HTTP client: {e}")))?;
        Ok(Upstream {
            http,
            limits: limits.clone(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Send `request` with `token`, retrying rate limits and server errors within `deadline`.
    pub async fn send(
        &self,
        request: &RenderedRequest,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<UpstreamResponse, ToolError> {
        let host = request.url.host_str().unwrap_or("the provider").to_string();
        let mut attempt = 0u32;
        loop {
            let response = self.send_once(request, token, deadline, &host).await?;
            let retry_after = retry_delay(&response, attempt);
            let Some(wait) = retry_after else {
                return Ok(response);
            };
            attempt += 1;
            let out_of_time = wait >= deadline.saturating_duration_since(Instant::now());
            if attempt > self.limits.max_retries || out_of_time {
                return Err(retry_exhausted(&response, &host, wait));
            }
            tracing::debug!(status = %response.status, ?wait, attempt, "retrying upstream request");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        request: &RenderedRequest,
        token: &SecretString,
        deadline: Instant,
        host: &str,
    ) -> Result<UpstreamResponse, ToolError> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = builder.bearer_auth(token.expose());
        builder = match &request.body {
            Some(RenderedBody::Json(value)) => builder.json(value),
            Some(RenderedBody::Form(pairs)) => builder.form(pairs),
            None => builder,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let io = async {
            let mut response = builder.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > self.limits.max_body_bytes {
                    return Ok(Err(self.limits.max_body_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(UpstreamResponse {
                status,
                headers,
                body,
            }))
        };
        match tokio::time::timeout(left, io).await {
            Err(_) => Err(ToolError::new(format!("{host} did not answer within the call's time budget"))
                .hint("try again in a moment")
                .retryable()),
            Ok(Err(e)) => Err(transport_error(&e, host)),
            Ok(Ok(Err(cap))) => Err(ToolError::new(format!(
                "{host} sent a response larger than {} MiB, which keyward does not read",
                cap / (1024 * 1024)
            ))
            .hint("narrow the request (fewer items per page, a smaller file), or raise `max_body_bytes` under [executor] in config.toml")),
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }
}

/// How long to wait before retrying this response, or `None` when it is not retryable.
fn retry_delay(response: &UpstreamResponse, attempt: u32) -> Option<Duration> {
    let status = response.status;
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (response.headers.contains_key("retry-after")
                || header_str(&response.headers, "x-ratelimit-remaining") == Some("0")));
    if !(rate_limited || status.is_server_error()) {
        return None;
    }
    if let Some(secs) = header_str(&response.headers, "retry-after").and_then(parse_retry_after) {
        return Some(Duration::from_secs(secs));
    }
    if let Some(reset) =
        header_str(&response.headers, "x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
    {
        let wait = reset.saturating_sub(chrono::Utc::now().timestamp());
        return Some(Duration::from_secs(wait.max(1).unsigned_abs()));
    }
    // Exponential backoff: 200 ms, 400 ms, 800 ms, …
    Some(Duration::from_millis(200u64 << attempt.min(6)))
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3). Delay-seconds too
/// large for a `u64` mean "a very long time", not "no advice".
fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = when
        .timestamp()
        .saturating_sub(chrono::Utc::now().timestamp());
    Some(secs.max(0).unsigned_abs())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn retry_exhausted(response: &UpstreamResponse, host: &str, wait: Duration) -> ToolError {
    let secs = wait.as_secs().max(1);
    if response.status.is_server_error() {
        ToolError::new(format!(
            "{host} answered {} and kept failing",
            response.status
        ))
        .status(response.status.as_u16())
        .hint(format!(
            "the provider is having trouble; retry in about {secs} seconds"
        ))
        .retryable()
    } else {
        ToolError::new(format!(
            "{host} is rate limiting this connection ({})",
            response.status
        ))
        .status(response.status.as_u16())
        .hint(format!("retry after {secs} seconds"))
        .retryable()
    }
}

fn transport_error(e: &reqwest::Error, host: &str) -> ToolError {
    // reqwest's messages name the URL but never the headers, so they cannot carry the token.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not be reached"
    } else {
        "failed"
    };
    ToolError::new(format!("the request to {host} {what}"))
        .hint("check the network and try again")
        .retryable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(3));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_retry_after("99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn which_responses_are_retried() {
        let resp = |status: u16, headers: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, v.parse().unwrap());
            }
            UpstreamResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: map,
                body: vec![],
            }
        };
        assert_eq!(
            retry_delay(&resp(429, &[("retry-after", "2")]), 0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_delay(&resp(503, &[]), 1),
            Some(Duration::from_millis(400))
        );
        assert!(retry_delay(
            &resp(403, &[("x-ratelimit-remaining", "0"), ("retry-after", "1")]),
            0
        )
        .is_some());
        assert_eq!(
            retry_delay(&resp(403, &[]), 0),
            None,
            "a plain 403 is a permission error"
        );
        assert_eq!(retry_delay(&resp(404, &[]), 0), None);
        // An absurd reset time in the past or future: a wait, never an overflow.
        assert_eq!(
            retry_delay(
                &resp(429, &[("x-ratelimit-reset", "-9223372036854775808")]),
                0
            ),
            Some(Duration::from_secs(1))
        );
        assert!(retry_delay(
            &resp(429, &[("x-ratelimit-reset", "9223372036854775807")]),
            0
        )
        .is_some());
        assert_eq!(retry_delay(&resp(200, &[]), 0), None);
    }
}
