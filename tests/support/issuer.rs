//! A test identity provider: OpenID Connect discovery, a JWKS with key rotation, an
//! authorization endpoint (authorization code with PKCE S256, signing in whoever the test says
//! the browser is) and a token endpoint that issues JWT access tokens (for the `resource` asked
//! for, RFC 8707) and ID tokens — all signed with real keys (RSA, P-256, Ed25519) through the
//! `jsonwebtoken` crate keyward verifies with.
//!
//! Tests also mint tokens directly ([`Issuer::token`], [`Issuer::sign`]) to probe every way a
//! token can be wrong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Digest;

/// keyward's client at the test issuer.
pub const CLIENT_ID: &str = "keyward-web";
pub const CLIENT_SECRET: &str = "kwcanary_idp_client_secret";
/// An MCP client registered at the test issuer (a public client).
pub const MCP_CLIENT_ID: &str = "mcp-client";

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: Arc<EncodingKey>,
    pub jwk: Jwk,
    /// The public key's DER (for the "HMAC with the public key" attack).
    pub public_der: Vec<u8>,
}

impl SigningKey {
    fn new(kid: &str, alg: Algorithm) -> SigningKey {
        let (encoding, public_der) = match alg {
            Algorithm::RS256 => {
                let (private, public) = rsa_key();
                (EncodingKey::from_rsa_der(private), public.clone())
            }
            Algorithm::ES256 => {
                use ring::signature::KeyPair;
                let rng = ring::rand::SystemRandom::new();
                let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
                let pair =
                    ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
                (
                    EncodingKey::from_ec_der(pkcs8.as_ref()),
                    pair.public_key().as_ref().to_vec(),
                )
            }
            Algorithm::EdDSA => {
                use ring::signature::KeyPair;
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                (
                    EncodingKey::from_ed_der(pkcs8.as_ref()),
                    pair.public_key().as_ref().to_vec(),
                )
            }
            other => panic!("the test issuer does not sign with {other:?}"),
        };
        let public = match alg {
            // ring's public key: the uncompressed point 0x04 ‖ x ‖ y.
            Algorithm::ES256 => json!({
                "kty": "EC", "crv": "P-256",
                "x": B64.encode(&public_der[1..33]), "y": B64.encode(&public_der[33..65]),
            }),
            Algorithm::EdDSA => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(&public_der)})
            }
            _ => serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap(),
        };
        let mut jwk: Jwk = serde_json::from_value(public).expect("a JWK of the key");
        jwk.common.key_id = Some(kid.to_string());
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding: Arc::new(encoding),
            jwk,
            public_der,
        }
    }
}

/// One RSA key per test process (generating one takes a while in a debug build): PKCS#1 DER of
/// the private key and of the public key.
fn rsa_key() -> &'static (Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::Generate;
        let private = rsa::PrivateKey::generate();
        let public = private.to_public_key();
        (
            private.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        )
    })
}

/// An authorization code waiting for its exchange.
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    user: String,
    nonce: Option<String>,
    scope: String,
    resource: Option<String>,
}

pub struct IssuerState {
    pub url: String,
    /// Published keys; the first signs.
    keys: Mutex<Vec<SigningKey>>,
    /// Who the browser is signed in as at the issuer.
    browser_user: Mutex<String>,
    codes: Mutex<HashMap<String, Code>>,
    /// The audience of access tokens issued without a `resource`.
    pub default_audience: Mutex<String>,
    /// How often the JWKS was fetched.
    pub jwks_fetches: std::sync::atomic::AtomicUsize,
    /// Every authorization request, as query pairs.
    pub authorize_requests: Mutex<Vec<HashMap<String, String>>>,
    /// keyward's client authenticates with HTTP basic auth only (`client_secret_basic`, as
    /// Okta's web apps do), not in the form.
    pub basic_only: std::sync::atomic::AtomicBool,
    /// Every token the token endpoint issued (access and ID tokens): secrets for canary greps.
    pub issued: Mutex<Vec<String>>,
}

/// A running test issuer; dropping it stops the server.
pub struct Issuer {
    pub state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for Issuer {
    type Target = IssuerState;
    fn deref(&self) -> &IssuerState {
        &self.state
    }
}

impl Issuer {
    /// Serve on 127.0.0.1 with one key of `alg`.
    pub async fn start(alg: Algorithm) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IssuerState {
            url: url.clone(),
            keys: Mutex::new(vec![SigningKey::new("key-1", alg)]),
            browser_user: Mutex::new("alice".into()),
            codes: Mutex::default(),
            default_audience: Mutex::new(String::new()),
            jwks_fetches: Default::default(),
            authorize_requests: Mutex::default(),
            issued: Mutex::default(),
            basic_only: Default::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/oauth-authorization-server", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { state, task }
    }
}

impl IssuerState {
    /// The issuer identifier (`iss`).
    pub fn issuer(&self) -> String {
        self.url.clone()
    }

    /// The key that signs now.
    pub fn current_key(&self) -> SigningKey {
        self.keys.lock().unwrap()[0].clone()
    }

    /// Publish a new key of `alg` and sign with it from now on; the old ones stay published
    /// unless `retire`.
    pub fn rotate(&self, kid: &str, alg: Algorithm, retire: bool) -> SigningKey {
        let key = SigningKey::new(kid, alg);
        let mut keys = self.keys.lock().unwrap();
        if retire {
            keys.clear();
        }
        keys.insert(0, key.clone());
        key
    }

    /// A key the issuer never publishes.
    pub fn unpublished_key(&self, alg: Algorithm) -> SigningKey {
        SigningKey::new("not-published", alg)
    }

    /// The browser is signed in at the issuer as `user` from now on.
    pub fn sign_in_browser_as(&self, user: &str) {
        *self.browser_user.lock().unwrap() = user.to_string();
    }

    /// Standard claims for `user`, valid for an hour, for `audience`, with `scope`.
    pub fn claims(&self, user: &str, audience: &str, scope: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer(), "sub": user, "aud": audience, "scope": scope,
            "iat": now, "nbf": now - 5, "exp": now + 3600,
            "email": format!("{user}@example.com"),
        })
    }

    /// `claims` signed with `key`.
    pub fn sign(&self, key: &SigningKey, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    /// An access token for `user`, signed with the current key.
    pub fn token(&self, user: &str, audience: &str, scope: &str) -> String {
        self.sign(&self.current_key(), &self.claims(user, audience, scope))
    }
}

/// A JWT whose header says `alg: none` (no signature).
pub fn unsigned(claims: &Value, kid: &str) -> String {
    let header = B64.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let payload = B64.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// A JWT "signed" with HS256 using `secret` (the classic confusion: the public key as an HMAC
/// secret), naming `kid`.
pub fn hmac_signed(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

async fn discovery(State(st): State<Arc<IssuerState>>) -> Json<Value> {
    let url = &st.url;
    let client_auth = if st.basic_only.load(std::sync::atomic::Ordering::SeqCst) {
        "client_secret_basic"
    } else {
        "client_secret_post"
    };
    Json(json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
        "jwks_uri": format!("{url}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [client_auth, "none"],
        "scopes_supported": ["openid", "email", "profile", "keyward"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
}

async fn jwks(State(st): State<Arc<IssuerState>>) -> Json<JwkSet> {
    st.jwks_fetches
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let keys = st
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    Json(JwkSet { keys })
}

fn error_page(status: u16, text: &str) -> Response {
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        text.to_string(),
    )
        .into_response()
}

async fn authorize(
    State(st): State<Arc<IssuerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.authorize_requests.lock().unwrap().push(q.clone());
    let client_id = q.get("client_id").cloned().unwrap_or_default();
    if client_id != CLIENT_ID && client_id != MCP_CLIENT_ID {
        return error_page(400, "unknown client_id");
    }
    let Some(redirect_uri) = q.get("redirect_uri").cloned() else {
        return error_page(400, "missing redirect_uri");
    };
    if q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return error_page(400, "response_type=code with PKCE S256 is required");
    }
    let Some(challenge) = q.get("code_challenge").cloned() else {
        return error_page(400, "missing code_challenge");
    };
    let code = format!("code-{}", rand::random::<u64>());
    st.codes.lock().unwrap().insert(
        code.clone(),
        Code {
            client_id,
            redirect_uri: redirect_uri.clone(),
            challenge,
            user: st.browser_user.lock().unwrap().clone(),
            nonce: q.get("nonce").cloned(),
            scope: q.get("scope").cloned().unwrap_or_default(),
            resource: q.get("resource").cloned(),
        },
    );
    let mut target = url::Url::parse(&redirect_uri).unwrap();
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = q.get("state") {
        target.query_pairs_mut().append_pair("state", state);
    }
    axum::response::Redirect::to(target.as_str()).into_response()
}

async fn token(
    State(st): State<Arc<IssuerState>>,
    headers: axum::http::HeaderMap,
    Form(mut form): Form<HashMap<String, String>>,
) -> Response {
    // client_secret_basic: the client id and secret come in the Authorization header.
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| {
            b.split_once(':')
                .map(|(i, s)| (i.to_string(), s.to_string()))
        });
    let basic_only = st.basic_only.load(std::sync::atomic::Ordering::SeqCst);
    match basic {
        Some((id, secret)) => {
            form.insert("client_id".into(), id);
            form.insert("client_secret".into(), secret);
        }
        None if basic_only && form.contains_key("client_secret") => {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_client"})),
            )
                .into_response()
        }
        None => {}
    }
    let oauth_error = |code: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"error": code})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error("unsupported_grant_type");
    }
    let Some(code) = form
        .get("code")
        .and_then(|c| st.codes.lock().unwrap().remove(c))
    else {
        return oauth_error("invalid_grant");
    };
    if form.get("client_id") != Some(&code.client_id)
        || form.get("redirect_uri") != Some(&code.redirect_uri)
    {
        return oauth_error("invalid_grant");
    }
    if code.client_id == CLIENT_ID
        && form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return oauth_error("invalid_client");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if B64.encode(sha2::Sha256::digest(verifier.as_bytes())) != code.challenge {
        return oauth_error("invalid_grant");
    }
    let audience = code
        .resource
        .clone()
        .unwrap_or_else(|| st.default_audience.lock().unwrap().clone());
    let scope: Vec<&str> = code
        .scope
        .split_whitespace()
        .filter(|s| *s != "openid")
        .collect();
    let access = st.token(&code.user, &audience, &scope.join(" "));
    let mut id_claims = st.claims(&code.user, &code.client_id, "");
    if let Some(nonce) = &code.nonce {
        id_claims["nonce"] = json!(nonce);
    }
    let id_token = st.sign(&st.current_key(), &id_claims);
    st.issued
        .lock()
        .unwrap()
        .extend([access.clone(), id_token.clone()]);
    Json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 3600,
        "id_token": id_token, "scope": code.scope,
    }))
    .into_response()
}
