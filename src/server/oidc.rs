//! The team's identity provider (`[server.auth]`): discovery, its signing keys, and the
//! validation of the JWTs it issues — access tokens that MCP clients send to `/mcp`, and the ID
//! tokens of browser sign-in ([`super::web`]).
//!
//! keyward is an OAuth 2.1 *protected resource* (MCP authorization): it never issues tokens for
//! MCP clients, it checks the ones the identity provider issued. A token is accepted only when
//! all of this holds (any failure is a 401 `invalid_token`, with the reason in
//! `error_description`):
//!
//! - **Signature.** The header's `alg` is an asymmetric algorithm (RS/PS 256–512, ES256, ES384,
//!   EdDSA); `none` and every HMAC algorithm are refused before any key is looked at, so a token
//!   "signed" with the public key as an HMAC secret never verifies. The key is the JWKS entry
//!   whose `kid` the header names (or the only signing key when there is one and the header
//!   names none), and its type (and curve, and `alg` when the JWK states one) must fit the
//!   header's `alg`. Verification is the `jsonwebtoken` crate's (RustCrypto backend).
//! - **Keys.** The JWKS (from the discovery document's `jwks_uri`) is cached. A `kid` not in the
//!   cache makes keyward fetch the set again — a rotation at the provider is picked up without a
//!   restart — but at most once per [`UNKNOWN_KID_COOLDOWN`], so a stream of made-up `kid`s
//!   cannot make keyward hammer the provider. The cached set is refreshed after [`JWKS_MAX_AGE`]
//!   as well, so a key the provider withdrew stops working.
//! - **Claims.** `iss` equals the configured issuer exactly; `aud` contains the audience
//!   (`public_url` + `/mcp` unless configured, RFC 8707) — a token for any other resource is
//!   refused; `exp` is required and, like `nbf`, checked with [`LEEWAY_SECS`] of clock skew.
//! - **User.** The configured claim (`sub` by default) is a string that is a valid keyward user
//!   name.
//! - **Scopes.** Every configured scope is in `scope` (space-separated) or `scp` (a string or an
//!   array, as Okta and Entra write it); otherwise 403 `insufficient_scope`.
//!
//! The client's token is used for nothing else: it is never stored and never sent upstream.
//!
//! Discovery reads the OpenID configuration at `<issuer>/.well-known/openid-configuration`,
//! falling back to RFC 8414's `/.well-known/oauth-authorization-server` form; the document's
//! `issuer` must be the configured one, exactly (mix-up defence). Discovery happens on first
//! need, not at start: keyward starts while the provider is down, and API keys keep working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::error::{Error, Result};
use crate::oauth::http::OAuthHttp;
use crate::secret::SecretString;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// After fetching the JWKS because of a `kid` it did not hold, keyward waits this long before
/// fetching it again for another unknown `kid`.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// A cached JWKS is fetched again when it is older than this.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// A failed discovery is retried no sooner than this.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Upper bound on a discovery document or a JWKS.
const MAX_DOCUMENT: usize = 512 * 1024;

/// How long one request to the identity provider may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The signature algorithms keyward accepts: asymmetric ones only.
const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the identity provider's discovery document says (the fields keyward uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

impl Discovery {
    /// Whether keyward's client authenticates with HTTP basic auth at the token endpoint: when
    /// the provider offers `client_secret_basic` but not `client_secret_post` (Okta's default
    /// for web apps). A provider that says nothing gets the form body (`client_secret_post`).
    pub fn wants_basic_auth(&self) -> bool {
        let offers = |m: &str| {
            self.token_endpoint_auth_methods_supported
                .iter()
                .any(|x| x == m)
        };
        offers("client_secret_basic") && !offers("client_secret_post")
    }
}

/// A validated token: who it is for and what it allows.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The keyward user: the configured claim.
    pub user: String,
    /// The scopes the token carries (`scope` or `scp`).
    pub scopes: Vec<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// 401 `invalid_token`: the reason is safe to show (it never quotes the token).
    #[error("{0}")]
    Invalid(String),
    /// 403 `insufficient_scope`: the token is valid but lacks these required scopes.
    #[error("the token lacks the scopes {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
    /// The identity provider's keys could not be had: nobody can be checked now (503).
    #[error("{0}")]
    Unavailable(String),
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

/// The keys of one JWKS fetch.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

#[derive(Default)]
struct Cache {
    discovery: Option<Arc<Discovery>>,
    discovery_failed: Option<Instant>,
    keys: Option<Arc<Keys>>,
    /// When the JWKS was last fetched because a token named a `kid` it lacked.
    unknown_kid_fetch: Option<Instant>,
}

/// The identity provider of one server, with its discovery document and keys cached.
pub struct Oidc {
    issuer: String,
    audience: String,
    user_claim: String,
    scopes: Vec<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    http: OAuthHttp,
    /// One fetch at a time: requests arriving meanwhile wait for its result.
    cache: tokio::sync::Mutex<Cache>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The provider of `[server.auth]`, tokens for `audience`.
    pub fn new(config: &AuthConfig, audience: String) -> Result<Oidc> {
        Ok(Oidc {
            issuer: config.issuer.clone(),
            audience,
            user_claim: config.user_claim.clone(),
            scopes: config.scopes.clone(),
            client_id: config.client_id.clone().filter(|id| !id.trim().is_empty()),
            client_secret: config.client_secret.clone().filter(|s| !s.is_empty()),
            http: OAuthHttp::new(FETCH_TIMEOUT)?,
            cache: tokio::sync::Mutex::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The scopes every access token must carry.
    pub fn required_scopes(&self) -> &[String] {
        &self.scopes
    }

    pub fn user_claim(&self) -> &str {
        &self.user_claim
    }

    /// keyward's own client at the provider (browser sign-in), if configured.
    pub fn client(&self) -> Option<(&str, Option<&SecretString>)> {
        self.client_id
            .as_deref()
            .map(|id| (id, self.client_secret.as_ref()))
    }

    pub fn http(&self) -> &OAuthHttp {
        &self.http
    }

    /// Check an access token an MCP client sent: signature, issuer, audience, lifetime, user and
    /// the required scopes.
    pub async fn validate_access_token(
        &self,
        token: &str,
    ) -> std::result::Result<Claims, TokenError> {
        let claims = self.verify(token, &self.audience).await?;
        let scopes = token_scopes(&claims);
        let missing: Vec<String> = self
            .scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .cloned()
            .collect();
        let claims = self.claims(&claims, scopes)?;
        if !missing.is_empty() {
            return Err(TokenError::InsufficientScope(missing));
        }
        Ok(claims)
    }

    /// Check an ID token of browser sign-in: as an access token, but for keyward's own client
    /// (`aud` holds the client id) and carrying the `nonce` keyward sent.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> std::result::Result<Claims, TokenError> {
        let client_id = self
            .client_id
            .as_deref()
            .ok_or_else(|| invalid("no client_id is configured in [server.auth]"))?;
        let claims = self.verify(token, client_id).await?;
        let sent = claims.get("nonce").and_then(Value::as_str);
        if !sent.is_some_and(|n| crate::vault::users::ct_eq(n.as_bytes(), nonce.as_bytes())) {
            return Err(invalid("the ID token's nonce is not the one keyward sent"));
        }
        self.claims(&claims, token_scopes(&claims))
    }

    /// The user and lifetime from verified claims.
    fn claims(
        &self,
        claims: &Map<String, Value>,
        scopes: Vec<String>,
    ) -> std::result::Result<Claims, TokenError> {
        let claim = &self.user_claim;
        let user = claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("the token has no string claim `{claim}`")))?;
        crate::vault::users::check_user_name(user).map_err(|_| {
            invalid(format!(
                "the token's `{claim}` is not a valid keyward user name (1-128 characters from \
                 A-Z a-z 0-9 . _ @ + -); choose another `user_claim` in [server.auth]"
            ))
        })?;
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Claims {
            user: user.to_string(),
            scopes,
            expires_at,
        })
    }

    /// Verify the signature and the registered claims, for `audience`.
    async fn verify(
        &self,
        token: &str,
        audience: &str,
    ) -> std::result::Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("the token is not a JWT keyward accepts (malformed, or alg `none`)")
        })?;
        if !ALLOWED.contains(&header.alg) {
            return Err(invalid(format!(
                "the token's algorithm {:?} is not accepted: only asymmetric signatures (RS256, \
                 ES256, EdDSA and the like) are",
                header.alg
            )));
        }
        let jwk = self.key_for(header.kid.as_deref()).await?;
        let key = decoding_key(&jwk, header.alg)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| invalid(describe(&e)))?;
        Ok(data.claims)
    }

    /// The JWK for `kid`, fetching the set again when it is not known (rate-limited) or the
    /// cached set is old.
    async fn key_for(&self, kid: Option<&str>) -> std::result::Result<Jwk, TokenError> {
        let mut cache = self.cache.lock().await;
        let stale = cache
            .keys
            .as_ref()
            .is_none_or(|k| k.fetched.elapsed() >= JWKS_MAX_AGE);
        if stale {
            match self.fetch_keys(&mut cache).await {
                Ok(()) => {}
                // An old set still serves while the provider is briefly unreachable.
                Err(e) if cache.keys.is_none() => return Err(e),
                Err(e) => tracing::warn!("could not refresh the identity provider's keys: {e}"),
            }
        }
        if let Some(jwk) = cache.keys.as_ref().and_then(|k| pick(&k.set, kid)) {
            return Ok(jwk);
        }
        let cooling = cache
            .unknown_kid_fetch
            .is_some_and(|at| at.elapsed() < UNKNOWN_KID_COOLDOWN);
        if !cooling && !stale {
            cache.unknown_kid_fetch = Some(Instant::now());
            self.fetch_keys(&mut cache).await?;
            if let Some(jwk) = cache.keys.as_ref().and_then(|k| pick(&k.set, kid)) {
                return Ok(jwk);
            }
        }
        Err(invalid(match kid {
            Some(_) => "the token is signed with a key the identity provider does not publish",
            None => "the token names no key (`kid`) and the identity provider publishes several",
        }))
    }

    async fn fetch_keys(&self, cache: &mut Cache) -> std::result::Result<(), TokenError> {
        let discovery = self.discovered(cache).await?;
        let set: JwkSet = self
            .fetch_json(&discovery.jwks_uri)
            .await
            .map_err(|e| TokenError::Unavailable(format!("the identity provider's keys: {e}")))?;
        tracing::debug!(
            keys = set.keys.len(),
            "fetched the identity provider's JWKS"
        );
        cache.keys = Some(Arc::new(Keys {
            set,
            fetched: Instant::now(),
        }));
        Ok(())
    }

    /// The discovery document, fetched once (a failure is retried after a pause).
    pub async fn discovery(&self) -> std::result::Result<Arc<Discovery>, TokenError> {
        let mut cache = self.cache.lock().await;
        self.discovered(&mut cache).await
    }

    async fn discovered(
        &self,
        cache: &mut Cache,
    ) -> std::result::Result<Arc<Discovery>, TokenError> {
        if let Some(discovery) = &cache.discovery {
            return Ok(discovery.clone());
        }
        if cache
            .discovery_failed
            .is_some_and(|at| at.elapsed() < DISCOVERY_RETRY)
        {
            return Err(TokenError::Unavailable(
                "the identity provider's discovery document could not be read a moment ago".into(),
            ));
        }
        match self.discover().await {
            Ok(discovery) => {
                let discovery = Arc::new(discovery);
                cache.discovery = Some(discovery.clone());
                Ok(discovery)
            }
            Err(e) => {
                cache.discovery_failed = Some(Instant::now());
                tracing::warn!("identity provider discovery failed: {e}");
                Err(TokenError::Unavailable(e.to_string()))
            }
        }
    }

    async fn discover(&self) -> Result<Discovery> {
        let mut last = None;
        for url in discovery_urls(&self.issuer)? {
            match self.fetch_json::<Discovery>(&url).await {
                Ok(discovery) if discovery.issuer == self.issuer => return Ok(discovery),
                Ok(discovery) => {
                    return Err(Error::config(format!(
                        "the identity provider's discovery document at {url} names the issuer \
                         {:?}, not {:?}: set `issuer` in [server.auth] to exactly what it says",
                        discovery.issuer, self.issuer
                    )))
                }
                Err(e) => last = Some(format!("{url}: {e}")),
            }
        }
        Err(Error::other(format!(
            "could not read the identity provider's discovery document ({}); check `issuer` in \
             [server.auth]",
            last.unwrap_or_default()
        )))
    }

    /// GET a JSON document from the identity provider (no redirects, bounded size and time).
    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let request = async {
            let mut response = self
                .http
                .client()
                .get(url)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| Error::other(format!("could not fetch it ({})", e.without_url())))?;
            if !response.status().is_success() {
                return Err(Error::other(format!("HTTP {}", response.status().as_u16())));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| Error::other(format!("reading it failed ({})", e.without_url())))?
            {
                if body.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(Error::other(format!("larger than {MAX_DOCUMENT} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&body)
                .map_err(|e| Error::other(format!("not the JSON expected ({e})")))
        };
        tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| Error::other("no answer in time"))?
    }
}

/// Where the discovery document may be: OpenID Connect's form, then RFC 8414's.
fn discovery_urls(issuer: &str) -> Result<Vec<String>> {
    let url = url::Url::parse(issuer)
        .map_err(|_| Error::config("`issuer` in [server.auth] is not a URL"))?;
    let path = url.path().trim_end_matches('/');
    let origin = url.origin().ascii_serialization();
    Ok(vec![
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
    ])
}

/// The signing key named `kid`, or the only signing key when the token names none.
fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    let signing = |jwk: &&Jwk| {
        !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        )
    };
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(signing)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut keys = set.keys.iter().filter(signing);
            match (keys.next(), keys.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// The verification key of `jwk` for `alg`, when the key is of the kind `alg` needs.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> std::result::Result<DecodingKey, TokenError> {
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        // A symmetric key in a JWKS is never a signing key keyward trusts.
        _ => false,
    };
    let stated = jwk
        .common
        .key_algorithm
        .is_none_or(|stated| KeyAlgorithm::from(alg) == stated);
    if !fits || !stated {
        return Err(invalid(format!(
            "the token's algorithm {alg:?} does not fit the identity provider's key it names"
        )));
    }
    DecodingKey::from_jwk(jwk)
        .map_err(|_| invalid("the identity provider's key for this token could not be read"))
}

/// The scopes a token carries: `scope` (space-separated) or `scp` (string or array).
fn token_scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut scopes = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(String::from)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(String::from))
            }
            _ => {}
        }
    }
    scopes
}

/// A validation failure in words for `error_description` (never the token itself).
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".into(),
        _ => "the token is malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_oidc_then_rfc8414() {
        assert_eq!(
            discovery_urls("https://idp.example.com/").unwrap(),
            [
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server"
            ]
        );
        assert_eq!(
            discovery_urls("https://idp.example.com/realms/team").unwrap(),
            [
                "https://idp.example.com/realms/team/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/team"
            ]
        );
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let claims = serde_json::json!({"scope": "a b", "scp": ["c"]});
        assert_eq!(token_scopes(claims.as_object().unwrap()), ["a", "b", "c"]);
        let claims = serde_json::json!({"scp": "d e"});
        assert_eq!(token_scopes(claims.as_object().unwrap()), ["d", "e"]);
    }
}
