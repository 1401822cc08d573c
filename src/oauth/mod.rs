//! Getting tokens into the vault and keeping them valid (invariants 5 and 6 of DESIGN.md).
//!
//! - [`connect`] — `keyward connect`: picks the minimal scopes for the selected tools, runs the
//!   authorization-code flow with PKCE on a [`loopback`] redirect or the [`device`] flow, and
//!   stores the grant;
//! - [`refresh`] — the single-flight [`refresh::Refresher`] every tool call goes through;
//!   tells permanent refusals (`invalid_grant` → needs reconnect) from passing trouble;
//! - [`peers`] — [`peers::open_vault`], how every command opens the vault: while this process
//!   owns it, it refreshes for the other local processes;
//! - [`revoke`] — `keyward disconnect`: revoke at the provider, then delete locally;
//! - [`import`] — `keyward import`: a token response obtained elsewhere, stored as a connection;
//! - [`token_endpoint`] — one POST to a token endpoint and the sorting of its answer;
//!   [`token_response`] — parsing a token response into a vault record (also for `import`);
//! - [`app`] — a provider's endpoints and keyward's client credentials for it, and how to
//!   register an OAuth app when they are missing;
//! - [`http`] — `oauth2`'s async HTTP client trait over the project's reqwest.
//!
//! The `oauth2` crate builds the authorization URL, the PKCE pair and the `state`, and sends
//! the device authorization request. Token endpoint answers are parsed by keyward because the
//! providers do not fit `oauth2`'s types: GitHub reports errors (even the device flow's
//! `authorization_pending`) with HTTP 200, and Slack puts a user token under `authed_user`.
//! Revocation is keyward's too: `oauth2`'s refuses non-https endpoints and knows only RFC 7009.

pub mod app;
pub mod connect;
pub mod device;
pub mod http;
pub mod import;
pub mod loopback;
pub mod peers;
pub mod refresh;
pub mod revoke;
pub mod test_hooks;
pub mod token_endpoint;
pub mod token_response;
