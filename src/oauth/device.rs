//! The device authorization grant (RFC 8628), for machines without a browser.
//!
//! keyward asks the device authorization endpoint for a code (through `oauth2`'s device
//! request over [`super::http::OAuthHttp`]), prints the code and the verification URL, then
//! polls the token endpoint itself: waiting `interval` before every poll, continuing on
//! `authorization_pending`, adding 5 seconds to the interval for good on `slow_down` (or
//! taking the server's new `interval` when it is larger, as GitHub sends one), backing off on
//! network errors and 5xx, and stopping on `expired_token`, `access_denied` or any other error.
//! The polling is not `oauth2`'s because GitHub reports `authorization_pending` with HTTP 200,
//! which `oauth2` treats as a malformed token response.

use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, DeviceAuthorizationUrl, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse,
};
use serde_json::Value;

use super::app::OAuthApp;
use super::connect::{exchange_result, ConnectRequest, Notify};
use super::http::OAuthHttp;
use super::token_endpoint::{self, Answer};
use crate::error::{Error, Result};
use crate::secret::Redactor;
use crate::vault::TokenRecord;

/// RFC 8628 §3.4 grant type.
pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Added to the interval on every `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The longest wait between two polls after network errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Run the device flow to a token record.
pub async fn run(
    http: &OAuthHttp,
    app: &OAuthApp,
    requested: &[String],
    request: &ConnectRequest,
    notify: Notify<'_>,
) -> Result<TokenRecord> {
    let Some(device_url) = app.device_authorization_url.clone() else {
        return Err(Error::usage(format!(
            "{} has no device authorization flow; connect in a browser instead: `keyward connect {}{}` \
             (with --no-browser the URL is printed for you to open on any machine that can reach this one's 127.0.0.1)",
            app.title,
            app.provider,
            request.key.cli_flags()
        )));
    };
    let client = app.client(false, true)?;
    let oauth = BasicClient::new(ClientId::new(client.id.to_string()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(device_url)
                .map_err(|e| Error::config(format!("device_authorization_url: {e}")))?,
        );
    let mut ask = oauth.exchange_device_code();
    if !requested.is_empty() {
        ask = if app.scope_separator == " " {
            ask.add_scopes(requested.iter().cloned().map(Scope::new))
        } else {
            ask.add_extra_param("scope", requested.join(&app.scope_separator))
        };
    }
    let details: StandardDeviceAuthorizationResponse = ask
        .request_async(http)
        .await
        .map_err(|e| device_code_error(app, e))?;

    let expires_in = details.expires_in();
    let mut interval = details.interval().max(Duration::from_secs(1));
    let verification = details.verification_uri().as_str().to_string();
    notify(&format!(
        "keyward: to connect {}, open {verification} and enter the code {} (it expires in {} minutes)",
        app.title,
        details.user_code().secret(),
        expires_in.as_secs().div_ceil(60)
    ));
    if let Some(complete) = details.verification_uri_complete() {
        notify(&format!(
            "keyward: or open {} (the code is filled in)",
            complete.secret()
        ));
    }
    if request.open_browser {
        super::connect::open_browser(&verification);
    }

    let deadline = crate::budget::deadline_after(request.timeout.min(expires_in));
    let expired = || {
        let what = if request.timeout < expires_in {
            format!(
                "no approval within {}s (--timeout)",
                request.timeout.as_secs()
            )
        } else {
            "the code expired before it was approved".to_string()
        };
        Error::other(format!(
            "{what}; nothing was stored. Run `keyward connect {}{} --device` again",
            app.provider,
            request.key.cli_flags()
        ))
    };
    let mut backoff = Duration::ZERO;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(expired());
        }
        // The server sets the interval: saturate rather than overflow on an absurd one.
        tokio::time::sleep(interval.saturating_add(backoff).min(left)).await;
        let mut form = vec![
            ("grant_type", DEVICE_GRANT_TYPE),
            ("device_code", details.device_code().secret().as_str()),
            ("client_id", client.id),
        ];
        if let Some(secret) = client.secret {
            form.push(("client_secret", secret.expose()));
        }
        let answer = token_endpoint::request(http, &app.token_url, &form, http.timeout()).await;
        match answer {
            Answer::Error(e) => match e.code.as_str() {
                "authorization_pending" => backoff = Duration::ZERO,
                "slow_down" => {
                    backoff = Duration::ZERO;
                    interval = interval.saturating_add(SLOW_DOWN_STEP);
                    if let Some(secs) = e.body.get("interval").and_then(Value::as_u64) {
                        interval = interval.max(Duration::from_secs(secs));
                    }
                }
                "expired_token" => {
                    return Err(Error::other(format!(
                        "the code expired before it was approved ({} answered expired_token); nothing was stored. Run `keyward connect {}{} --device` again",
                        app.title,
                        app.provider,
                        request.key.cli_flags()
                    )))
                }
                "access_denied" => {
                    return Err(Error::other(format!(
                        "the authorization was declined at {} (access_denied); nothing was stored",
                        app.title
                    )))
                }
                _ => return exchange_result(app, Answer::Error(e)),
            },
            Answer::Unavailable(_) => {
                // RFC 8628 §3.5: back off exponentially on connection problems.
                backoff = (backoff * 2).max(interval).min(MAX_BACKOFF);
            }
            other => return exchange_result(app, other),
        }
    }
}

fn device_code_error<E: std::error::Error>(
    app: &OAuthApp,
    e: RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> Error {
    // The OAuth error code, when the endpoint named one, decides the hint; the reason quotes it.
    let (code, reason) = match e {
        RequestTokenError::ServerResponse(resp) => {
            let code = resp.error().to_string();
            let reason = match resp.error_description() {
                Some(d) => format!("{code}: {d}"),
                None => code.clone(),
            };
            (Some(code), reason)
        }
        // GitHub reports errors with 200 and an `error` field, which `oauth2` cannot parse as a
        // device authorization response: read the error out of the body.
        RequestTokenError::Parse(_, body) => {
            match token_endpoint::sort(http::StatusCode::OK, &body) {
                Answer::Error(e) => (Some(e.code.clone()), e.reason()),
                _ => (
                    None,
                    "an answer that is not a device authorization response".into(),
                ),
            }
        }
        RequestTokenError::Request(e) => (None, format!("no answer ({e})")),
        RequestTokenError::Other(text) => (None, text),
    };
    // The endpoint's own words are quoted: keep the client secret it was sent out of them.
    let reason = Redactor::of(&app.client_secret).text(&reason);
    let hint = match code.as_deref() {
        Some("device_flow_disabled") => {
            " — enable Device Flow in the OAuth app's settings".to_string()
        }
        Some(code) if super::refresh::CLIENT_CODES.contains(&code) => {
            format!(" — check client_id under [providers.{}]", app.provider)
        }
        _ => String::new(),
    };
    Error::other(format!(
        "{} refused to start the device flow ({reason}){hint}",
        app.title
    ))
}
