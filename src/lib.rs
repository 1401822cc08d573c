//! keyward: an MCP tool server that lets AI agents use a person's GitHub, Slack and Google
//! Calendar accounts while the OAuth tokens stay in keyward's own encrypted vault. The model asks
//! for a tool; keyward checks the tool's scopes, takes the token out of the vault just in time
//! (refreshing it first if it is near expiry, never two refreshes racing), calls the provider and
//! returns a compact result. **No token ever reaches the model.**
//!
//! The binary (`src/main.rs`) is a thin clap CLI over this library; the integration tests and
//! benches use the library directly. The path of one tool call, in the order the
//! modules see it:
//!
//! ```text
//! MCP client ─stdio | Streamable HTTP | legacy SSE─▶ server ─▶ catalog ─▶ exec ─▶ provider
//!                                                     │            ▲
//!                                                     └─ vault ◀─ oauth::refresh
//! ```
//!
//! The map of the design — the data path, every module, the numbered invariants the code cites
//! and what each test file covers — is `docs/ARCHITECTURE.md`.
//!
//! # Modules
//!
//! - [`server`] — how clients reach keyward: the rmcp `ServerHandler` ([`server::handler`]),
//!   stdio ([`server::stdio`]), Streamable HTTP and the HTTP access rules ([`server::http`],
//!   [`server::auth`]), and the legacy HTTP+SSE transport rmcp 3 no longer ships
//!   ([`server::sse`]). It decides *who* the caller is (`--user`, the API key's user, or the
//!   team identity provider's user: [`server::oidc`]) and which tools are offered. It also
//!   serves the browser pages of a remote deployment (sign-in, the account page, connecting an
//!   account: [`server::web`], [`server::connect_web`]) and the RFC 8693 token exchange for the
//!   team's own tool servers ([`server::exchange`]).
//! - [`catalog`] — the tools as data. `tools/*.toml` manifests (embedded, plus extra folders)
//!   compiled into what the call path runs on: input schemas, scope sets with implications,
//!   the host policy a token may travel to, and the toolset/read-only filters.
//! - [`exec`] — one validated call in, one compact result out: render the request (path
//!   segments encoded, host pinned), send it with the vault's token ([`exec::client`]), map
//!   provider failures to tool errors with hints ([`exec::errors`]), project the answer to the
//!   declared fields ([`exec::project`]) and redact anything secret from the result or the
//!   error ([`secret::Redactor`]).
//! - [`vault`] — the encrypted store: sealed token records under compare-and-swap
//!   ([`vault::store`], [`vault::record`]), the envelope of master key and data keys
//!   ([`vault::keys`], [`vault::crypto`]), the audit log, HTTP users and exchange clients, and
//!   sharing one database between every local keyward process through the owner's unix socket
//!   ([`vault::share`]). Behind one async interface ([`vault::storage`]) the same sealed records
//!   can live in PostgreSQL instead, shared by replicas on many machines ([`vault::postgres`];
//!   moved between the two by [`vault::transfer`]).
//! - [`oauth`] — tokens in and kept valid: `keyward connect` (authorization code with PKCE on a
//!   loopback redirect, or the device flow), the single-flight refresher, reconnect marking and
//!   revocation on `keyward disconnect`.
//! - [`config`] — where the home folder is, and `config.toml` (provider overrides, executor
//!   limits, server filters and allowed hosts).
//! - [`secret`] — wrapper types for tokens and keys: `[redacted]` in Debug/Display, read only
//!   through an explicit `expose()`, zeroized on drop; and the [`secret::Redactor`] that
//!   scrubs every secret known for an operation out of text a provider sent back.
//! - [`sync`] — lock helpers that survive a panic in another request (no poisoning cascade).
//! - [`tool_error`] — what a failed tool call tells its client (message, hint naming the fix,
//!   retryable, status); produced by the executor and the refresher alike, so it sits below both.
//! - [`budget`] — deadlines from time budgets that cannot overflow the clock, whatever a
//!   provider or a config says.
//! - [`error`] — the crate's error type; every message says what happened and the command that
//!   fixes it, and maps to the CLI's exit code.
//!
//! # Why the parts are split this way
//!
//! The catalog knows nothing about tokens, and the vault nothing about HTTP: the executor is the
//! one place where a token meets a request, which keeps the rules about where a token may go
//! (DESIGN.md invariants 2–4) in a few hundred lines that can be read in one sitting. Refreshes
//! live in [`oauth::refresh`] rather than the vault because they talk to providers; they reach
//! every local process through [`vault::share`], where only the process owning the database
//! refreshes (on PostgreSQL, whichever replica holds the connection's advisory lock).
#![forbid(unsafe_code)]
// The module docs are a map for people working on keyward (`cargo doc --document-private-items`):
// they name private items on purpose.
#![allow(rustdoc::private_intra_doc_links)]

pub mod budget;
pub mod catalog;
pub mod config;
pub mod error;
pub mod exec;
pub mod oauth;
pub mod secret;
pub mod server;
pub mod sync;
pub mod tool_error;
pub mod vault;
