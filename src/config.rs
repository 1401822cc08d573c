//! Where keyward keeps its files, and `config.toml`.
//!
//! The home folder is `--home`, else `KEYWARD_HOME`, else `$XDG_DATA_HOME/keyward`, else
//! `~/.local/share/keyward`. It holds the sled database (`vault/`), the master key file
//! (`master.key`, unless `KEYWARD_MASTER_KEY` is set) and the optional `config.toml`. With
//! `[store] url` (or `KEYWARD_STORE_URL`) the vault is in PostgreSQL instead of `vault/`; the
//! URL is a secret (it may hold a password), so it is kept and reported like one.
//! Provider sections of the config override a manifest's endpoints and carry the OAuth client
//! credentials; their keys are fixed because GitHub Enterprise users and the tests rely on them.
//!
//! Everything keyward reads from the home folder decides where tokens go (the owner socket
//! receives imported tokens in plaintext, `config.toml` and manifests name the hosts a token may
//! be sent to). So, as ssh's `StrictModes` does, keyward trusts the home folder, `vault/`,
//! `config.toml`, extra manifest folders and the owner socket only when they belong to the
//! effective uid and are not writable by group or others ([`check_trusted`], invariant 13). The
//! parents of the home folder are not checked: `/tmp` is world-writable by design, and its sticky
//! bit already keeps other users from replacing what we own in it.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::secret::SecretString;

/// The resolved home folder.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// Resolve the home folder from the flag, the environment, or the XDG default.
    pub fn resolve(flag: Option<&Path>) -> Result<Home> {
        if let Some(dir) = flag {
            return Ok(Home {
                dir: dir.to_path_buf(),
            });
        }
        if let Some(dir) = std::env::var_os("KEYWARD_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home {
                dir: PathBuf::from(dir),
            });
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home {
                dir: PathBuf::from(xdg).join("keyward"),
            });
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(Home {
                dir: PathBuf::from(home).join(".local/share/keyward"),
            }),
            None => Err(Error::usage(
                "cannot find a home folder for keyward: set KEYWARD_HOME or pass --home DIR",
            )),
        }
    }

    pub fn vault_dir(&self) -> PathBuf {
        self.dir.join("vault")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("master.key")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn exists(&self) -> bool {
        self.vault_dir().exists()
    }

    /// Refuse a home folder that another user owns or can write to (see [`check_trusted`]).
    pub fn check_trusted(&self) -> Result<()> {
        check_trusted(&self.dir, "the keyward home folder", Fix::Private)
    }

    /// Create the home folder with mode 0700 (and tighten an existing one we created).
    pub fn create(&self) -> Result<()> {
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("setting mode 0700 on {}", self.dir.display()), e))?;
        Ok(())
    }
}

/// How [`check_trusted`] tells the user to repair a path others can write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// A folder keyward creates 0700 (home, `vault/`): `chmod 700`.
    Private,
    /// Anything else: take away the write bits of group and others.
    NoWrite,
}

/// Refuse `path` unless it belongs to the effective uid and neither group nor others may write
/// to it (a missing path passes: there is nothing to trust yet). Symlinks are followed, so the
/// object actually used is the one checked. `what` names it in the error, which also gives the
/// command that fixes it.
pub fn check_trusted(path: &Path, what: &str, fix: Fix) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("checking {what} {}", path.display()), e)),
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::Untrusted(format!(
            "{what} {path} belongs to uid {owner}, not to you (uid {me}), so another user could \
             change what keyward reads there or listen in its place; keyward refuses to use it. \
             If it is yours, run `chown -R {me} {path}`; otherwise use a folder of your own \
             (--home or KEYWARD_HOME)",
            path = path.display(),
            owner = meta.uid(),
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let command = match fix {
            Fix::Private => format!("chmod 700 {}", path.display()),
            Fix::NoWrite => format!("chmod go-w {}", path.display()),
        };
        return Err(Error::Untrusted(format!(
            "{what} {} has mode {mode:04o}: group or other users can write to it, so they could \
             change what keyward reads there; keyward refuses to use it. Run `{command}`",
            path.display()
        )));
    }
    Ok(())
}

/// OAuth client and endpoint overrides for one provider (`[providers.NAME]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Replaces the manifest's `api_base`; its host is added to the allowed hosts.
    pub api_base: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub revoke_url: Option<String>,
    pub device_authorization_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// Port of the loopback redirect `http://127.0.0.1:PORT/callback` (0 = any free port).
    pub redirect_port: Option<u16>,
    /// Refresh a token this many seconds before it expires (default 300).
    pub refresh_margin_secs: Option<u64>,
}

/// Limits of the upstream HTTP client (`[executor]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Total time one tool call may take, retries included.
    pub call_budget_ms: u64,
    pub max_body_bytes: usize,
    pub max_retries: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            read_timeout_ms: 30_000,
            call_budget_ms: 60_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_retries: 3,
        }
    }
}

/// Which tools a server offers and the HTTP server's limits (`[server]`, and the flags of
/// `keyward serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub toolsets: Vec<String>,
    pub tools: Vec<String>,
    pub read_only: bool,
    pub all_tools: bool,
    /// Extra Host header values accepted by the HTTP server (besides the bind address).
    pub allowed_hosts: Vec<String>,
    /// Extra Origin values accepted by the HTTP server (besides loopback origins).
    pub allowed_origins: Vec<String>,
    /// HTTP: a client must send a request's whole head (request line and headers) within this
    /// long, or its connection is closed. Also how long an idle keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// HTTP: how many connections may be open before one of their requests has presented a
    /// valid API key. Beyond that, new connections wait (in the kernel's accept queue) until a
    /// place frees up, so half-sent requests cannot use up the process's file descriptors.
    pub max_unauthenticated_connections: usize,
    /// HTTP: how many live MCP sessions (Streamable HTTP and legacy SSE together) one user may
    /// have; opening one more closes that user's least recently used session.
    pub max_sessions_per_user: usize,
    /// HTTP: the address clients and browsers reach this server at (behind its TLS proxy), used
    /// in the protected-resource metadata, in `/connect` links and in OAuth redirect URIs. Its
    /// host and origin are allowed like `allowed_hosts`/`allowed_origins` entries.
    pub public_url: Option<String>,
    /// HTTP: trust the team's identity provider (`[server.auth]`): its JWT access tokens
    /// authenticate MCP clients beside API keys, and browsers sign in with it.
    pub auth: Option<AuthConfig>,
}

/// `[server.auth]`: the identity provider keyward trusts (an OAuth 2.1 protected resource, MCP
/// authorization).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The issuer, exactly as its tokens' `iss` says; discovery (OIDC, else RFC 8414) from here.
    pub issuer: String,
    /// What access tokens' `aud` must contain; default `public_url` + `/mcp` (RFC 8707).
    pub audience: Option<String>,
    /// The claim that names the keyward user (`sub`, `email`, `preferred_username`, …).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Scopes every access token must carry (else 403 `insufficient_scope`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// keyward's own client at the identity provider, for browser sign-in.
    pub client_id: Option<String>,
    /// Its secret (or `KEYWARD_AUTH_CLIENT_SECRET`); none for a public client.
    pub client_secret: Option<SecretString>,
}

fn default_user_claim() -> String {
    "sub".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            toolsets: Vec::new(),
            tools: Vec::new(),
            read_only: false,
            all_tools: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            max_unauthenticated_connections: 256,
            max_sessions_per_user: 64,
            public_url: None,
            auth: None,
        }
    }
}

impl ServerConfig {
    /// The HTTP limits must let the server work at all.
    pub fn check_http_limits(&self) -> Result<()> {
        for (key, value) in [
            (
                "header_read_timeout_ms",
                self.header_read_timeout_ms as usize,
            ),
            (
                "max_unauthenticated_connections",
                self.max_unauthenticated_connections,
            ),
            ("max_sessions_per_user", self.max_sessions_per_user),
        ] {
            if value == 0 {
                return Err(Error::config(format!(
                    "`{key} = 0` in the [server] section of config.toml would refuse every client: \
                     set it to at least 1, or remove the line for the default"
                )));
            }
        }
        self.public_base()?;
        if let Some(auth) = &self.auth {
            if self.public_url.is_none() {
                return Err(Error::config(
                    "[server.auth] needs `public_url` in the [server] section of config.toml: the \
                     address clients reach keyward at (e.g. \"https://keyward.example.com\"), used \
                     in its metadata and redirect URIs",
                ));
            }
            check_web_url(&auth.issuer, "issuer", "[server.auth]")?;
            if auth.user_claim.trim().is_empty() {
                return Err(Error::config(
                    "`user_claim` in [server.auth] is empty: name the claim that holds the user \
                     (\"sub\", \"email\" or \"preferred_username\")",
                ));
            }
        }
        Ok(())
    }

    /// `public_url` checked, without a trailing slash (`https://keyward.example.com`); `None`
    /// when it is not set.
    pub fn public_base(&self) -> Result<Option<String>> {
        let Some(text) = &self.public_url else {
            return Ok(None);
        };
        let url = check_web_url(text, "public_url", "[server]")?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(Error::config(format!(
                "`public_url` in [server] must be an origin only, like \"https://{}\": keyward \
                 serves its paths (/mcp, /connect, …) at the root",
                url.host_str().unwrap_or("keyward.example.com")
            )));
        }
        Ok(Some(url.as_str().trim_end_matches('/').to_string()))
    }

    /// The audience access tokens must name: `[server.auth] audience`, else `public_url` +
    /// `/mcp` (the resource, RFC 8707). `None` without `[server.auth]`.
    pub fn audience(&self) -> Result<Option<String>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        if let Some(audience) = &auth.audience {
            return Ok(Some(audience.clone()));
        }
        Ok(self.public_base()?.map(|base| format!("{base}/mcp")))
    }
}

/// A URL keyward sends people or requests to: https, or plain http to a loopback host (for
/// trying things out and for tests), without credentials in it.
fn check_web_url(text: &str, key: &str, section: &str) -> Result<url::Url> {
    let bad = |why: &str| {
        Error::config(format!(
            "`{key}` in {section} of config.toml {why}: give an https URL such as \
             \"https://keyward.example.com\" (plain http only for 127.0.0.1 or localhost)"
        ))
    };
    let url = url::Url::parse(text).map_err(|_| bad("is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(bad("has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(bad("is not https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("carries credentials"));
    }
    Ok(url)
}

/// The RFC 8693 token-exchange endpoint of `keyward serve --http` (`[exchange]`; see
/// [`crate::server::exchange`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// Serve `POST /oauth/token` and its metadata. Off unless asked for: the endpoint hands
    /// provider tokens to other programs.
    pub enabled: bool,
    /// Exchanges one client may make per minute, on average (a token bucket per client).
    pub rate_limit_per_minute: u32,
    /// How many exchanges one client may make at once before the average applies.
    pub rate_limit_burst: u32,
    /// `expires_in` never says more than this, even for a provider token that lives longer (or
    /// forever, like a GitHub OAuth app's): a backend comes back at least this often, so a
    /// removed client or user loses access within it.
    pub max_expires_in_secs: u64,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate_limit_per_minute: 600,
            rate_limit_burst: 60,
            max_expires_in_secs: 3600,
        }
    }
}

impl ExchangeConfig {
    /// Limits of 0 would refuse every exchange.
    pub fn check(&self) -> Result<()> {
        for (key, value) in [
            ("rate_limit_per_minute", self.rate_limit_per_minute as u64),
            ("rate_limit_burst", self.rate_limit_burst as u64),
            ("max_expires_in_secs", self.max_expires_in_secs),
        ] {
            if value == 0 {
                return Err(Error::config(format!(
                    "`{key} = 0` in the [exchange] section of config.toml would refuse every \
                     exchange: set it to at least 1, or remove the line for the default"
                )));
            }
        }
        Ok(())
    }
}

/// Where the vault is (`[store]`): the embedded sled database in the home folder (no `url`), or
/// a PostgreSQL database shared by several keyward processes (`url = "postgres://…"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://USER@HOST:PORT/DATABASE?sslmode=require`; may hold a password, so it is a
    /// secret. `KEYWARD_STORE_URL` replaces it.
    pub url: Option<SecretString>,
}

/// The environment variable that chooses the store, over `[store] url`.
pub const STORE_URL_ENV: &str = "KEYWARD_STORE_URL";

/// `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tools_dirs: Vec<PathBuf>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub executor: ExecutorConfig,
    pub server: ServerConfig,
    pub exchange: ExchangeConfig,
    pub store: StoreConfig,
}

impl Config {
    /// Load `config.toml` from the home folder (absent → defaults), then apply the environment:
    /// `KEYWARD_TOOLS_DIR` and `KEYWARD_<PROVIDER>_CLIENT_ID` / `_CLIENT_SECRET`.
    pub fn load(home: &Home) -> Result<Config> {
        home.check_trusted()?;
        let path = home.config_file();
        check_trusted(&path, "the config file", Fix::NoWrite)?;
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text)
                .map_err(|reason| Error::config(format!("{}: {reason}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        config.apply_env();
        Ok(config)
    }

    /// Parse `config.toml`. The error names the line, the key and what is wrong, but never
    /// quotes the file: the offending line may be `client_secret = […]`, and toml's own
    /// message would print it (and serde's quotes a wrongly typed string value).
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }

    fn apply_env(&mut self) {
        if let Some(auth) = &mut self.server.auth {
            if let Some(secret) = std::env::var("KEYWARD_AUTH_CLIENT_SECRET")
                .ok()
                .filter(|v| !v.is_empty())
            {
                auth.client_secret = Some(SecretString::new(secret));
            }
        }
        if let Some(url) = std::env::var(STORE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            self.store.url = Some(SecretString::new(url));
        }
        if let Some(dirs) = std::env::var_os("KEYWARD_TOOLS_DIR").filter(|v| !v.is_empty()) {
            for dir in std::env::split_paths(&dirs) {
                self.tools_dirs.push(dir);
            }
        }
        for name in ["github", "slack", "google"] {
            let upper = name.to_ascii_uppercase();
            let id = std::env::var(format!("KEYWARD_{upper}_CLIENT_ID")).ok();
            let secret = std::env::var(format!("KEYWARD_{upper}_CLIENT_SECRET")).ok();
            if id.is_none() && secret.is_none() {
                continue;
            }
            let entry = self.providers.entry(name.to_string()).or_default();
            if let Some(id) = id.filter(|v| !v.is_empty()) {
                entry.client_id = Some(id);
            }
            if let Some(secret) = secret.filter(|v| !v.is_empty()) {
                entry.client_secret = Some(SecretString::new(secret));
            }
        }
    }

    /// Where the store URL in effect comes from, for messages (never its value).
    pub fn store_url_origin(home: &Home) -> String {
        if std::env::var(STORE_URL_ENV).is_ok_and(|v| !v.trim().is_empty()) {
            STORE_URL_ENV.to_string()
        } else {
            format!(
                "`url` in the [store] section of {}",
                home.config_file().display()
            )
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.get(name)
    }
}

/// Where a TOML error is and what it is, without any value from the document: `line 7, key
/// `client_secret` in [providers.github]: invalid type: sequence, expected a string`.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let mut out = String::new();
    if let Some(span) = error.span() {
        let start = span.start.min(text.len());
        let before = &text[..start];
        let line_no = before.matches('\n').count() + 1;
        out.push_str(&format!("line {line_no}"));
        let line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
            .split('\n')
            .next()
            .unwrap_or("");
        // Only a plain key is named: text before `=` that is not a plain key may be part of a
        // multi-line value.
        let is_key = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-. \"".contains(c))
        };
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if is_key(key) {
                out.push_str(&format!(", key `{key}`"));
            }
        }
        let section =
            before.lines().rev().map(str::trim).find(|l| {
                l.starts_with('[') && l.ends_with(']') && is_key(l.trim_matches(['[', ']']))
            });
        if let Some(section) = section {
            out.push_str(&format!(" in {section}"));
        }
        out.push_str(": ");
    }
    out.push_str(&scrub_values(error.message()));
    out
}

/// serde quotes a wrongly typed string or character (`invalid type: string "…", expected
/// u64`) and an unknown enum variant: drop the quoted value, keep the rest.
fn scrub_values(message: &str) -> String {
    static QUOTED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = QUOTED.get_or_init(|| {
        regex::Regex::new(r#"(string) "(?:[^"\\]|\\.)*"|(character|unknown variant) `[^`]*`"#)
            .expect("valid pattern")
    });
    re.replace_all(message, "$1$2").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_settings_are_checked_at_start() {
        let server = |text: &str| Config::parse(text).unwrap().server;
        let ok = server(
            "[server]\npublic_url = \"https://kw.example.com/\"\n[server.auth]\nissuer = \"https://idp.example.com/\"\n",
        );
        ok.check_http_limits().unwrap();
        assert_eq!(
            ok.public_base().unwrap().as_deref(),
            Some("https://kw.example.com")
        );
        assert_eq!(
            ok.audience().unwrap().as_deref(),
            Some("https://kw.example.com/mcp")
        );
        assert_eq!(ok.auth.as_ref().unwrap().user_claim, "sub");
        for (text, needle) in [
            ("[server.auth]\nissuer = \"https://idp.example.com/\"\n", "public_url"),
            ("[server]\npublic_url = \"http://kw.example.com\"\n", "https"),
            ("[server]\npublic_url = \"https://kw.example.com/keyward\"\n", "origin only"),
            (
                "[server]\npublic_url = \"https://kw.example.com\"\n[server.auth]\nissuer = \"http://idp.example.com\"\n",
                "issuer",
            ),
        ] {
            let err = server(text).check_http_limits().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // Loopback may be plain http (trying it out, tests).
        server("[server]\npublic_url = \"http://127.0.0.1:8787\"\n")
            .check_http_limits()
            .unwrap();
    }

    #[test]
    fn config_errors_name_line_and_key_but_never_the_value() {
        let text = "[providers.github]\nclient_id = \"x\"\nclient_secret = [\"kwcanary_secret_in_config\"]\n";
        let err = Config::parse(text).unwrap_err();
        assert!(!err.contains("kwcanary_secret_in_config"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("key `client_secret`"), "{err}");
        assert!(err.contains("[providers.github]"), "{err}");

        let text = "[providers.github]\nrefresh_margin_secs = \"kwcanary_secret_as_number\"\n";
        let err = Config::parse(text).unwrap_err();
        assert!(!err.contains("kwcanary_secret_as_number"), "{err}");
        assert!(
            err.contains("key `refresh_margin_secs`") && err.contains("invalid type: string"),
            "{err}"
        );

        // A syntax error in the middle of a multi-line value names the line only.
        let text = "tools_dirs = [\n  \"kwcanary_secret_unterminated\n]\n";
        let err = Config::parse(text).unwrap_err();
        assert!(!err.contains("kwcanary_secret_unterminated"), "{err}");
        assert!(err.starts_with("line "), "{err}");
    }
}
