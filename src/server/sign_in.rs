//! Asking the user to sign in, the 2026-07-28 way (MRTR: multi round-trip requests), on stdio.
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
//! an echoed value that does not open is refused (`-32602`), never trusted. The key is random
//! per process: the sign-in it refers to lives in this process, so no other could use it.

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

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Result;
use crate::oauth::connect::{BrowserSignIn, ConnectRequest, Selection, DEFAULT_TIMEOUT};
use crate::tool_error::SignIn;
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

/// The sign-ins this stdio server started, one at a time per connection.
pub struct SignIns {
    config: Config,
    /// Read-only servers ask only for the scopes of read-only tools.
    read_only: bool,
    codec: RequestStateCodec,
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
}

impl SignIns {
    pub fn new(config: Config, read_only: bool) -> SignIns {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let codec = RequestStateCodec::try_new(key.to_vec())
            .expect("32 random bytes are a long enough key");
        SignIns {
            config,
            read_only,
            codec,
            running: Arc::default(),
        }
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
        let url = self.start(vault, catalog, sign_in).await?;
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
        })
        .expect("the state serializes");
        let bound = binding(&sign_in.key.user, tool, args);
        let sealed = self.codec.seal_with(
            &state,
            &SealOptions::new().associated_data(&bound).ttl(STATE_TTL),
        );
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
    ) -> std::result::Result<ConnKey, String> {
        let bound = binding(user, tool, args);
        let opened = self
            .codec
            .open_with(sealed, &bound)
            .map_err(|e| e.to_string())?;
        let state: State = serde_json::from_slice(&opened).map_err(|e| e.to_string())?;
        ConnKey::new(user, &state.provider, &state.account).map_err(|e| e.to_string())
    }

    /// Wait until the sign-in of `key` ends, if one is running.
    pub async fn wait(&self, key: &ConnKey) {
        let done = crate::sync::lock(&self.running)
            .get(key)
            .map(|r| r.done.clone());
        if let Some(done) = done {
            if let Err(e) = done.await {
                tracing::info!(connection = %key, "the sign-in ended without a grant: {e}");
            }
        }
    }

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
