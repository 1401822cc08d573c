//! The OAuth app keyward acts as with one provider: the provider's endpoints (manifest, with
//! the config's overrides already applied by the catalog) and the client credentials
//! (`[providers.NAME]` in config.toml, or `KEYWARD_<NAME>_CLIENT_ID` / `_CLIENT_SECRET`).
//!
//! keyward ships no client credentials of its own: each user registers an OAuth app with each
//! provider. When the credentials are missing, the error says exactly how, including the
//! redirect URI to register — the part people get wrong.

use crate::catalog::{ProviderSpec, RevokeStyle};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Endpoints and client credentials for one provider.
#[derive(Clone)]
pub struct OAuthApp {
    pub provider: String,
    pub title: String,
    pub authorize_url: String,
    pub token_url: String,
    pub revoke_url: Option<String>,
    pub revoke_style: Option<RevokeStyle>,
    pub device_authorization_url: Option<String>,
    pub scope_separator: String,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// Port of the loopback redirect; 0 picks a free port.
    pub redirect_port: u16,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish_non_exhaustive()
    }
}

/// The client credentials, once checked.
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: Option<&'a SecretString>,
}

impl OAuthApp {
    pub fn new(spec: &ProviderSpec, config: &Config) -> OAuthApp {
        let overrides = config.provider(&spec.name).cloned().unwrap_or_default();
        OAuthApp {
            provider: spec.name.clone(),
            title: spec.title.clone(),
            authorize_url: spec.authorize_url.clone(),
            token_url: spec.token_url.clone(),
            revoke_url: spec.revoke_url.clone(),
            revoke_style: spec.revoke_style,
            device_authorization_url: spec.device_authorization_url.clone(),
            scope_separator: spec.scope_separator.clone(),
            client_id: overrides.client_id.filter(|id| !id.trim().is_empty()),
            client_secret: overrides.client_secret.filter(|s| !s.is_empty()),
            redirect_port: overrides.redirect_port.unwrap_or(0),
        }
    }

    /// The client credentials; `need_secret` for flows where the provider requires the secret.
    /// Missing ones → an error that says how to register an app and where to put them.
    pub fn client(&self, need_secret: bool, device: bool) -> Result<Client<'_>> {
        let missing = match (&self.client_id, &self.client_secret) {
            (None, None) => Some("no OAuth client id or secret"),
            (None, Some(_)) => Some("no OAuth client id"),
            (Some(_), None) if need_secret => Some("no OAuth client secret"),
            _ => None,
        };
        if let Some(what) = missing {
            return Err(Error::config(format!(
                "{what} is configured for {}. {}",
                self.title,
                registration_help(self, device)
            )));
        }
        Ok(Client {
            id: self.client_id.as_deref().expect("checked above"),
            secret: self.client_secret.as_ref(),
        })
    }

    /// The redirect URI to register with the provider, as the user should type it.
    pub fn redirect_uri_to_register(&self) -> String {
        match (self.provider.as_str(), self.redirect_port) {
            (_, port) if port != 0 => format!("http://127.0.0.1:{port}/callback"),
            // GitHub and Google accept any port on a registered loopback redirect (RFC 8252 §7.3).
            ("github", _) => "http://127.0.0.1/callback".into(),
            ("google", _) => {
                "http://127.0.0.1 (nothing to register for a Desktop app client)".into()
            }
            _ => "http://127.0.0.1:PORT/callback, with the PORT you also set as `redirect_port`"
                .into(),
        }
    }
}

/// How to register an OAuth app with the provider and hand its credentials to keyward.
pub fn registration_help(app: &OAuthApp, device: bool) -> String {
    let name = &app.provider;
    let upper = name.to_ascii_uppercase().replace('-', "_");
    let redirect = app.redirect_uri_to_register();
    let how =
        match name.as_str() {
            "github" => format!(
            "Register an OAuth app at https://github.com/settings/applications/new (Settings → \
             Developer settings → OAuth Apps → New OAuth App) with the Authorization callback URL \
             {redirect} (GitHub accepts any port on a loopback callback){}, then generate a client \
             secret.",
            if device { " and tick \"Enable Device Flow\"" } else { "" }
        ),
            "slack" => format!(
                "Create an app at https://api.slack.com/apps (\"From scratch\"); under OAuth & \
             Permissions add the Redirect URL {redirect} and the User Token Scopes keyward asks \
             for. Slack matches the redirect URL exactly, so fix the port with `redirect_port = \
             PORT` under [providers.slack]. The client id and secret are on the app's Basic \
             Information page."
            ),
            "google" => format!(
            "Create an OAuth client at https://console.cloud.google.com/apis/credentials (Create \
             credentials → OAuth client ID) of type {}, and enable the Google Calendar API for \
             the project. Redirect URI: {redirect}.",
            if device { "\"TVs and Limited Input devices\"" } else { "\"Desktop app\"" }
        ),
            _ => format!(
                "Register an OAuth app with {} whose redirect URI is {redirect}.",
                app.title
            ),
        };
    format!(
        "{how} Then put `client_id` and `client_secret` under [providers.{name}] in config.toml \
         in the keyward home folder, or set KEYWARD_{upper}_CLIENT_ID and \
         KEYWARD_{upper}_CLIENT_SECRET."
    )
}

/// Where a user revokes keyward's access by hand when keyward could not.
pub fn manual_revoke_hint(provider: &str, title: &str) -> String {
    match provider {
        "github" => "https://github.com/settings/applications (Authorized OAuth Apps)".into(),
        "slack" => {
            "your Slack workspace's \"Manage apps\" page (Installed apps → the app → Remove)".into()
        }
        "google" => "https://myaccount.google.com/permissions".into(),
        _ => format!("{title}'s list of authorized apps"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn app(provider: &str, toml: &str) -> OAuthApp {
        let config = Config::parse(toml).unwrap();
        let catalog = Catalog::embedded();
        OAuthApp::new(catalog.provider(provider).unwrap(), &config)
    }

    #[test]
    fn missing_credentials_explain_registration_and_the_redirect_uri() {
        let e = app("github", "")
            .client(true, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("https://github.com/settings/applications/new"),
            "{e}"
        );
        assert!(e.contains("http://127.0.0.1/callback"), "{e}");
        assert!(e.contains("KEYWARD_GITHUB_CLIENT_ID"), "{e}");
        let e = app(
            "slack",
            "[providers.slack]\nclient_id = \"x\"\nredirect_port = 8765\n",
        )
        .client(true, false)
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no OAuth client secret"), "{e}");
        assert!(e.contains("http://127.0.0.1:8765/callback"), "{e}");
        let e = app("google", "")
            .client(false, true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("TVs and Limited Input devices"), "{e}");
    }

    #[test]
    fn device_flow_needs_only_the_id() {
        let a = app("github", "[providers.github]\nclient_id = \"Iv1.x\"\n");
        assert_eq!(a.client(false, true).unwrap().id, "Iv1.x");
        assert!(a.client(true, false).is_err());
    }
}
