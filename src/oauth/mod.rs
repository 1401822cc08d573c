//! Getting tokens into the vault and keeping them valid: import of existing token responses,
//! (later) the authorization-code and device flows, single-flight refresh and revocation.

pub mod refresh;
pub mod token_response;
