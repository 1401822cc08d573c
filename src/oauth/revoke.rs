//! `keyward disconnect`: revoke at the provider, then delete locally.
//!
//! Deleting only the local copy would leave a live grant at the provider that nobody is
//! watching any more, so revocation comes first, and a failed revocation deletes nothing —
//! unless `--force`, which deletes the local copy and warns that the grant still lives at the
//! provider and where to revoke it by hand. How each provider revokes (the manifest's
//! `revoke_style`, endpoint overridable in config):
//! - `github_grant`: `DELETE /applications/{client_id}/grant`, HTTP basic auth with the OAuth
//!   app's client id and secret, JSON body `{"access_token": …}`; revokes the whole grant.
//!   Without client credentials there is no way to revoke, and the error says so.
//! - `slack`: `auth.revoke` with the token as bearer.
//! - `rfc7009` (Google): `POST` the form `token=…` — the refresh token when there is one, which
//!   revokes the access tokens issued from it too.
//!
//! `oauth2` 5's own revocation refuses any endpoint that is not https (RFC 7009 §2), which
//! would rule out the loopback test server, and covers only the RFC style; so this is keyward's.
//! A token that expired is refreshed first (GitHub and Slack revoke with the access token),
//! through the same single-flight [`Refresher`] every tool call uses.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::app::{manual_revoke_hint, OAuthApp};
use super::http::{basic, form_request, OAuthHttp};
use super::refresh::Refresher;
use crate::catalog::{Catalog, RevokeStyle};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::secret::Redactor;
use crate::vault::{AuditEntry, ConnKey, TokenRecord, Vault};

/// What a client id may hold unencoded in a URL path segment (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// What the provider said to the revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The grant (or token) is revoked now.
    Now,
    /// The provider says the token was already invalid: nothing is left to revoke.
    Already(String),
}

/// What `disconnect` did.
#[derive(Debug)]
pub struct Disconnected {
    pub key: ConnKey,
    /// `Ok`: revoked; `Err(reason)`: revocation failed and `--force` deleted the local copy.
    pub revocation: std::result::Result<Revoked, String>,
    /// Where to revoke by hand when keyward could not.
    pub manual_revoke: String,
}

/// Revoke `key`'s grant at the provider, then delete the local record. With `force`, a failed
/// revocation (or a record that does not open) still deletes the local record.
pub async fn disconnect(
    vault: Arc<Vault>,
    catalog: Arc<Catalog>,
    config: &Config,
    key: &ConnKey,
    force: bool,
) -> Result<Disconnected> {
    let spec = catalog
        .provider(&key.provider)
        .ok_or_else(|| Error::usage(format!("unknown provider {:?}", key.provider)))?;
    let app = OAuthApp::new(spec, config);
    let manual = manual_revoke_hint(&app.provider, &app.title);
    let not_found = || {
        Error::NotFound(format!(
            "there is no connection {key}: `keyward status` lists them"
        ))
    };

    let conn = match vault.get(key).await {
        Ok(Some(conn)) => conn,
        Ok(None) => return Err(not_found()),
        Err(e @ Error::RecordCorrupt { .. }) if force => {
            let reason =
                format!("the record does not open, so its token could not be revoked ({e})");
            return delete(&vault, key, Err(reason), manual).await;
        }
        Err(e) => return Err(e),
    };

    let http = OAuthHttp::new(Duration::from_millis(
        config.executor.read_timeout_ms.max(1000),
    ))?;
    let mut record = conn.record.clone();
    let style = app.revoke_style;
    if matches!(style, Some(RevokeStyle::GithubGrant | RevokeStyle::Slack))
        && record.refresh_token.is_some()
    {
        // These revoke with the access token: make sure it is alive.
        let refresher = Refresher::new(
            catalog.clone(),
            vault.clone(),
            config,
            http.client().clone(),
        );
        let deadline =
            crate::budget::deadline_after(Duration::from_millis(config.executor.call_budget_ms));
        if let Ok((token, _)) = refresher.fresh_token(key, conn.clone(), deadline).await {
            record.access_token = token;
        }
    }

    let outcome = revoke(&http, &app, &record).await;
    vault
        .audit(
            &AuditEntry::new(
                &key.user,
                "revoke",
                match &outcome {
                    Ok(Revoked::Now) => "ok".to_string(),
                    Ok(Revoked::Already(why)) => format!("ok ({why})"),
                    Err(reason) => format!("error: {reason}"),
                },
            )
            .connection(&key.provider, &key.account),
        )
        .await;
    match outcome {
        Ok(revoked) => delete(&vault, key, Ok(revoked), manual).await,
        Err(reason) if force => delete(&vault, key, Err(reason), manual).await,
        Err(reason) => {
            let _ = vault.flush().await;
            Err(Error::other(format!(
                "revoking the {} grant of {key} failed: {reason}. Nothing was deleted. Retry, or run `keyward disconnect {}{} --force` to delete keyward's copy anyway (the grant then stays valid at {} until you revoke it at {manual})",
                app.title,
                key.provider,
                key.cli_flags(),
                app.title
            )))
        }
    }
}

async fn delete(
    vault: &Vault,
    key: &ConnKey,
    revocation: std::result::Result<Revoked, String>,
    manual: String,
) -> Result<Disconnected> {
    let existed = vault.remove(key).await?;
    let outcome = match (&revocation, existed) {
        (_, false) => "error: the record was already gone".to_string(),
        (Ok(_), true) => "ok".to_string(),
        (Err(reason), true) => format!("ok (forced; not revoked at the provider: {reason})"),
    };
    vault
        .audit(
            &AuditEntry::new(&key.user, "disconnect", outcome)
                .connection(&key.provider, &key.account),
        )
        .await;
    vault.flush().await?;
    Ok(Disconnected {
        key: key.clone(),
        revocation,
        manual_revoke: manual,
    })
}

/// Revoke `record`'s grant at the provider. `Err` carries a reason without any secret.
pub async fn revoke(
    http: &OAuthHttp,
    app: &OAuthApp,
    record: &TokenRecord,
) -> std::result::Result<Revoked, String> {
    let Some(style) = app.revoke_style else {
        return Err(format!(
            "{}'s manifest declares no way to revoke a grant",
            app.title
        ));
    };
    let Some(url) = app.revoke_url.clone() else {
        return Err(format!(
            "{}'s manifest declares no revocation endpoint",
            app.title
        ));
    };
    let mut redactor = Redactor::of([&record.access_token]);
    redactor.extend(&record.refresh_token);
    redactor.extend(&app.client_secret);
    let request = match style {
        RevokeStyle::GithubGrant => {
            let (Some(id), Some(secret)) = (&app.client_id, &app.client_secret) else {
                return Err(format!(
                    "{} revokes a grant only with the OAuth app's client id and secret, and they are not configured (set client_id and client_secret under [providers.{}] or KEYWARD_{}_CLIENT_ID / _CLIENT_SECRET)",
                    app.title,
                    app.provider,
                    app.provider.to_ascii_uppercase()
                ));
            };
            let encoded: String = percent_encoding::utf8_percent_encode(id, SEGMENT).collect();
            let body =
                serde_json::json!({ "access_token": record.access_token.expose() }).to_string();
            http::Request::builder()
                .method(http::Method::DELETE)
                .uri(url.replace("{client_id}", &encoded))
                .header(http::header::AUTHORIZATION, basic(id, secret.expose()))
                .header(http::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.into_bytes())
        }
        RevokeStyle::Slack => http::Request::builder()
            .method(http::Method::POST)
            .uri(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", record.access_token.expose()),
            )
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Vec::new()),
        RevokeStyle::Rfc7009 => {
            let (token, hint) = match &record.refresh_token {
                Some(refresh) => (refresh.expose(), "refresh_token"),
                None => (record.access_token.expose(), "access_token"),
            };
            return match form_request(&url, &[("token", token), ("token_type_hint", hint)], None) {
                Ok(request) => send(http, app, request, style, &redactor).await,
                Err(e) => Err(e.to_string()),
            };
        }
    };
    match request {
        Ok(request) => send(http, app, request, style, &redactor).await,
        Err(e) => Err(format!("the revocation endpoint is not a valid URL ({e})")),
    }
}

/// Send the revocation and read the answer. The provider's error code is quoted in the reason,
/// so it is redacted with every secret the request carried (a hostile or broken endpoint may
/// echo the token it was asked to revoke).
async fn send(
    http: &OAuthHttp,
    app: &OAuthApp,
    request: oauth2::HttpRequest,
    style: RevokeStyle,
    redactor: &Redactor,
) -> std::result::Result<Revoked, String> {
    let response = http
        .send(request, http.timeout())
        .await
        .map_err(|e| format!("{} could not be reached ({e})", app.title))?;
    let status = response.status();
    let body: Option<Value> = serde_json::from_slice(response.body()).ok();
    let error = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .map(|code| redactor.text(code));
    match style {
        RevokeStyle::GithubGrant => match status.as_u16() {
            204 | 200 => Ok(Revoked::Now),
            404 => Err(format!(
                "{} answered 404: it knows no such grant (already revoked, or issued to another OAuth app)",
                app.title
            )),
            401 | 403 => Err(format!("{} answered {status}: check client_id and client_secret", app.title)),
            _ => Err(format!("{} answered {status}", app.title)),
        },
        RevokeStyle::Slack => {
            if !status.is_success() {
                return Err(format!("{} answered {status}", app.title));
            }
            match (body.as_ref().and_then(|b| b.get("ok")).and_then(Value::as_bool), error.as_deref()) {
                (Some(true), _) => Ok(Revoked::Now),
                (_, Some("token_revoked")) => Ok(Revoked::Already("Slack says the token was already revoked".into())),
                (_, Some(code)) => Err(format!("{} answered {code}", app.title)),
                _ => Err(format!("{} answered without `ok`", app.title)),
            }
        }
        RevokeStyle::Rfc7009 => match (status.as_u16(), error.as_deref()) {
            (200..=299, _) => Ok(Revoked::Now),
            // RFC 7009 §2.2 would answer 200; Google answers 400 `invalid_token` for a token that
            // is already revoked or expired: there is nothing left to revoke.
            (400, Some("invalid_token")) => Ok(Revoked::Already(format!("{} says the token was already invalid", app.title))),
            (_, Some(code)) => Err(format!("{} answered {status} ({code})", app.title)),
            _ => Err(format!("{} answered {status}", app.title)),
        },
    }
}
