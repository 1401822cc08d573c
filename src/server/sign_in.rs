//! Asking the user to sign in, the 2026-07-28 way (MRTR: multi round-trip requests), on stdio
//! and — with `public_url` — over HTTP.
//!
//! A `tools/call` that cannot proceed without the user — the provider is not connected, the
//! grant lacks the tool's scopes, the connection needs reconnecting (a typed
//! [`crate::tool_error::SignIn`] on the tool error) — is answered, for a 2026-07-28 client that
//! declared `elicitation.url`, with an `InputRequiredResult`: a URL elicitation whose URL is the
//! authorization URL of `keyward connect`'s browser flow, started here on demand (the loopback
//! redirect listens in this process, the grant is stored in the vault like the CLI stores it).
//! The client shows the URL to the user, and retries the call with the user's answer and the
//! `requestState` it was given; the retry waits for the sign-in to end and runs the call again.
//! Other clients, and HTTP (where the browser is on another machine than keyward), get the
//! error result with the `keyward connect` command as before.
//!
//! The URL carries what every authorization URL carries — client id, redirect URI, scopes, the
//! PKCE challenge and a single-use `state` — never the client secret or the PKCE verifier, and
//! the elicitation's message is for the person, not an instruction to the model.
//!
//! `requestState` is sealed with rmcp's `RequestStateCodec` (HMAC-SHA256 with associated data
//! and a TTL): bound to the user, the tool and a digest of the arguments, valid for as long as a
//! sign-in may take. It holds only the provider and account to wait for — nothing secret — and
//! an echoed value that does not open is refused (`-32602`), never trusted. On stdio the key is
//! random per process: the sign-in it refers to lives in this process, so no other could use it.
//!
//! **Remote users** (`keyward serve --http` with `public_url`, [`SignIns::remote`]): the browser
//! is not on keyward's machine, so the URL is a `/connect/<provider>?ticket=…` link
//! ([`super::connect_web`]) — single-use, sealed, bound to the user, provider, account and
//! scopes, valid for 10 minutes. Clients that cannot show a URL get the same link in the error
//! result's hint instead of the `keyward connect` command. The `requestState` key is the web
//! key's, shared by every process of the home folder, since the retry may reach another
//! process than the one that asked; the retry runs the call, and if the connection is still
//! missing it waits (until the link expires) for the connection to change, wherever the
//! browser finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use rmcp::model::{
    ElicitRequest, ElicitRequestParams, InputRequest, InputRequests, InputRequiredResult,
    RequestStateCodec, SealOptions,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::connect_web::{Links, TICKET_TTL};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Result;
use crate::oauth::connect::{BrowserSignIn, ConnectRequest, Selection, DEFAULT_TIMEOUT};
use crate::tool_error::{SignIn, ToolError};
use crate::vault::{ConnKey, Vault};

/// The key of keyward's one input request in an `InputRequiredResult`.
pub const SIGN_IN_REQUEST: &str = "sign-in";

/// How long a `requestState` stays valid: a sign-in's own time limit, and a minute to retry.
const STATE_TTL: Duration = Duration::from_secs(DEFAULT_TIMEOUT.as_secs() + 60);

/// How a sign-in ended: `Err` holds the message (it is shown to nobody but the log: the retried
/// call says what is still wrong).
type Ending = Shared<BoxFuture<'static, std::result::Result<(), Arc<String>>>>;

struct Running {
    url: String,
    done: Ending,
}

/// How a server asks its users to sign in: the sign-ins it started (stdio), or links.
pub struct SignIns {
    codec: RequestStateCodec,
    mode: Mode,
}

enum Mode {
    /// stdio: `keyward connect`'s browser flow on this machine's loopback.
    Local(Box<Local>),
    /// HTTP with `public_url`: `/connect` links.
    Remote(Arc<Links>),
}

/// The sign-ins a stdio server started, one at a time per connection.
struct Local {
    config: Config,
    /// Read-only servers ask only for the scopes of read-only tools.
    read_only: bool,
    running: Arc<Mutex<HashMap<ConnKey, Running>>>,
}

impl std::fmt::Debug for SignIns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIns").finish_non_exhaustive()
    }
}

/// What a sealed `requestState` names.
#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    provider: String,
    account: String,
    /// Remote: until when (unix seconds) the retry waits for the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
}

/// The connection a retry waits for, from its `requestState`.
#[derive(Debug, Clone)]
pub struct Awaited {
    pub key: ConnKey,
    /// Remote: the link's expiry (unix seconds).
    pub until: Option<i64>,
}

impl SignIns {
    /// stdio: sign-ins started on demand with the loopback redirect.
    pub fn new(config: Config, read_only: bool) -> SignIns {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let codec = RequestStateCodec::try_new(key.to_vec())
            .expect("32 random bytes are a long enough key");
        SignIns {
            codec,
            mode: Mode::Local(Box::new(Local {
                config,
                read_only,
                running: Arc::default(),
            })),
        }
    }

    /// HTTP with `public_url`: `/connect` links, and `requestState` sealed with the web key's
    /// codec (`codec`), shared by every process of the home folder.
    pub fn remote(links: Arc<Links>, codec: RequestStateCodec) -> SignIns {
        SignIns {
            codec,
            mode: Mode::Remote(links),
        }
    }

    /// Remote: `error` with its `keyward connect` hint replaced by a `/connect` link, for a
    /// client that cannot show a URL itself. stdio: `error` as it is.
    pub fn with_link(&self, mut error: ToolError) -> ToolError {
        let (Mode::Remote(links), Some(sign_in)) = (&self.mode, &error.sign_in) else {
            return error;
        };
        let link = links.issue(sign_in);
        error.hint = Some(format!(
            "ask the user to open {} in a browser to connect their account (the link works once, \
             for {} minutes), then call the tool again",
            link.url,
            TICKET_TTL.as_secs() / 60
        ));
        error
    }

    /// Start the browser sign-in `sign_in` asks for (or join the one running for the same
    /// connection) and return the `InputRequiredResult` that asks the user to open its URL.
    pub async fn ask(
        &self,
        vault: &Arc<Vault>,
        catalog: &Arc<Catalog>,
        sign_in: &SignIn,
        tool: &str,
        args: &Map<String, Value>,
    ) -> Result<InputRequiredResult> {
        let (url, until) = match &self.mode {
            Mode::Local(local) => (local.start(vault, catalog, sign_in).await?, None),
            Mode::Remote(links) => {
                let link = links.issue(sign_in);
                (link.url, Some(link.expires_at))
            }
        };
        let title = catalog
            .provider(&sign_in.key.provider)
            .map(|p| p.title.clone())
            .unwrap_or_else(|| sign_in.key.provider.clone());
        let message = format!(
            "Sign in with {title} to let keyward act for you ({}). keyward keeps the token; \
             the assistant never sees it. Come back here when the page says the connection is \
             stored.",
            sign_in.key
        );
        let elicit = ElicitRequest::new(ElicitRequestParams::UrlElicitationParams {
            meta: None,
            message,
            url,
            elicitation_id: String::new(),
        });
        let mut requests = InputRequests::new();
        requests.insert(SIGN_IN_REQUEST.into(), InputRequest::Elicitation(elicit));
        let state = serde_json::to_vec(&State {
            provider: sign_in.key.provider.clone(),
            account: sign_in.key.account.clone(),
            until,
        })
        .expect("the state serializes");
        let bound = binding(&sign_in.key.user, tool, args);
        let ttl = match self.mode {
            Mode::Local(_) => STATE_TTL,
            Mode::Remote(_) => TICKET_TTL + Duration::from_secs(60),
        };
        let sealed = self
            .codec
            .seal_with(&state, &SealOptions::new().associated_data(&bound).ttl(ttl));
        Ok(InputRequiredResult::new(Some(requests), Some(sealed)))
    }

    /// The connection a `requestState` from [`SignIns::ask`] names, if it opens for this user,
    /// tool and arguments and has not expired.
    pub fn open(
        &self,
        sealed: &str,
        user: &str,
        tool: &str,
        args: &Map<String, Value>,
    ) -> std::result::Result<Awaited, String> {
        let bound = binding(user, tool, args);
        let opened = self
            .codec
            .open_with(sealed, &bound)
            .map_err(|e| e.to_string())?;
        let state: State = serde_json::from_slice(&opened).map_err(|e| e.to_string())?;
        let key = ConnKey::new(user, &state.provider, &state.account).map_err(|e| e.to_string())?;
        Ok(Awaited {
            key,
            until: state.until,
        })
    }

    /// stdio: wait until the sign-in of `key` ends, if one is running. Remote: nothing to wait
    /// for before the call (see [`SignIns::wait_for_change`]).
    pub async fn wait(&self, key: &ConnKey) {
        let Mode::Local(local) = &self.mode else {
            return;
        };
        let done = crate::sync::lock(&local.running)
            .get(key)
            .map(|r| r.done.clone());
        if let Some(done) = done {
            if let Err(e) = done.await {
                tracing::info!(connection = %key, "the sign-in ended without a grant: {e}");
            }
        }
    }

    /// Remote: whether a retried call that still lacks its connection should wait for it.
    pub fn waits_for_change(&self) -> bool {
        matches!(self.mode, Mode::Remote(_))
    }

    /// Wait until `changes` reports a change of `awaited`'s connection (the browser finished,
    /// in whichever process) or its link expires. True on a change.
    pub async fn wait_for_change(
        &self,
        mut changes: tokio::sync::broadcast::Receiver<ConnKey>,
        awaited: &Awaited,
    ) -> bool {
        let left = awaited
            .until
            .map(|until| (until - chrono::Utc::now().timestamp()).max(0) as u64)
            .unwrap_or(0);
        let changed = async {
            loop {
                match changes.recv().await {
                    Ok(key) if key == awaited.key => return true,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(left), changed)
            .await
            .unwrap_or(false)
    }
}

impl Local {
    async fn start(
        &self,
        vault: &Arc<Vault>,
        catalog: &Arc<Catalog>,
        sign_in: &SignIn,
    ) -> Result<String> {
        if let Some(running) = crate::sync::lock(&self.running).get(&sign_in.key) {
            return Ok(running.url.clone());
        }
        let selection = match &sign_in.scopes {
            Some(scopes) => Selection {
                scopes: vec![scopes.join(",")],
                ..Selection::default()
            },
            None => Selection {
                read_only: self.read_only,
                ..Selection::default()
            },
        };
        let request = ConnectRequest {
            key: sign_in.key.clone(),
            selection,
            device: false,
            open_browser: false,
            timeout: DEFAULT_TIMEOUT,
        };
        let flow = BrowserSignIn::start(&self.config, catalog, request).await?;
        let url = flow.url.clone();
        let key = sign_in.key.clone();
        let task = {
            let (vault, catalog, running, key, url) = (
                vault.clone(),
                catalog.clone(),
                self.running.clone(),
                key.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                let notify = |line: &str| tracing::info!("{line}");
                let ended = flow.finish(&vault, &catalog, &notify).await;
                let mut running = crate::sync::lock(&running);
                if running.get(&key).is_some_and(|r| r.url == url) {
                    running.remove(&key);
                }
                drop(running);
                match ended {
                    Ok(connected) => {
                        tracing::info!(connection = %connected.key, "signed in");
                        Ok(())
                    }
                    Err(e) => Err(Arc::new(e.to_string())),
                }
            })
        };
        let abort = task.abort_handle();
        let done = async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::new(format!("the sign-in task failed: {e}"))))
        }
        .boxed()
        .shared();
        let mut running = crate::sync::lock(&self.running);
        match running.get(&key) {
            // Another call started one meanwhile: nobody was sent to this one's URL.
            Some(first) => {
                abort.abort();
                Ok(first.url.clone())
            }
            None => {
                running.insert(
                    key,
                    Running {
                        url: url.clone(),
                        done,
                    },
                );
                Ok(url)
            }
        }
    }
}

/// What a `requestState` is bound to: the user, the tool and a digest of the arguments.
fn binding(user: &str, tool: &str, args: &Map<String, Value>) -> Vec<u8> {
    let digest = Sha256::digest(serde_json::to_vec(args).expect("JSON arguments serialize"));
    let mut bound = format!("keyward/sign-in/v1\0{user}\0{tool}\0").into_bytes();
    bound.extend_from_slice(&digest);
    bound
}
