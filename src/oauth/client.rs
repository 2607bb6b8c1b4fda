//! The client side of the atproto OAuth profile: discovery (handle -> DID -> PDS ->
//! protected-resource metadata -> authorization-server metadata), pushed authorization
//! requests with PKCE S256, and token requests authenticated with `private_key_jwt` and
//! bound with DPoP, retrying once when a server asks for a nonce.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::FlowError;
use crate::config::{ConfigError, OAuthClientConfig};
use crate::identity::{IdentityError, Resolver};
use crate::jose::sign::{KeySet, SigningKey, random_id, random_secret};
use crate::jose::{b64url, sha256_b64url};
use crate::net::{NetError, Outbound, Reply};
use crate::respond::Reject;
use crate::tools::dpop_proof;

/// An authorization server, as its metadata describes it (only what the client uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthServer {
    /// `issuer`.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: String,
    /// `pushed_authorization_request_endpoint`.
    pub par_endpoint: String,
    /// `token_endpoint`.
    pub token_endpoint: String,
    /// `revocation_endpoint`.
    pub revocation_endpoint: Option<String>,
}

/// An account found by [`OAuthClient::discover`].
#[derive(Debug, Clone)]
pub struct Account {
    /// Its DID.
    pub did: String,
    /// Its handle, if verified both ways.
    pub handle: Option<String>,
    /// Its PDS.
    pub pds: url::Url,
    /// The authorization server its PDS names.
    pub server: AuthServer,
}

/// What a token endpoint granted.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The DPoP-bound access token.
    pub access_token: String,
    /// The (single-use) refresh token.
    pub refresh_token: Option<String>,
    /// When the access token expires, Unix seconds.
    pub expires_at: u64,
    /// Granted scope.
    pub scope: String,
    /// The account (`sub`).
    pub sub: String,
}

/// An authorization server's OAuth error answer (RFC 6749 §5.2), cleaned for logs and
/// pages: printable ASCII, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `error`, e.g. `invalid_grant`, `invalid_client_metadata`.
    pub error: String,
    /// `error_description`, empty when absent.
    pub description: String,
}

impl Refusal {
    fn from_body(body: &Value) -> Refusal {
        let clean = |name: &str, max: usize| -> String {
            let text = body.get(name).and_then(Value::as_str).unwrap_or("");
            text.chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).take(max).collect()
        };
        let error = clean("error", 64);
        Refusal {
            error: if error.is_empty() { "no error code".into() } else { error },
            description: clean("error_description", 512),
        }
    }

    /// Whether the server refused atgate itself as a client (its metadata document, its
    /// keys, its client assertion or registration: RFC 6749 §5.2 `invalid_client`,
    /// `unauthorized_client`; RFC 7591 §3.2.2 `invalid_client_metadata`,
    /// `invalid_redirect_uri`; the reference provider's `invalid_client_id`), rather than
    /// the user's request or grant. The operator has to act, not the user.
    pub fn is_about_client(&self) -> bool {
        matches!(
            self.error.as_str(),
            "invalid_client"
                | "unauthorized_client"
                | "invalid_client_metadata"
                | "invalid_client_id"
                | "invalid_redirect_uri"
        )
    }

    /// Logs the refusal with the outcome it leads to (a `FlowError` reason), and
    /// returns that outcome.
    pub fn log(&self, issuer: &str, endpoint: &'static str, outcome: FlowError) -> FlowError {
        tracing::warn!(
            issuer = %issuer,
            endpoint,
            error = %self.error,
            error_description = %self.description,
            outcome = outcome.reason(),
            "authorization server refused atgate's request"
        );
        outcome
    }

    /// The outcome of a refused sign-in request (PAR or code exchange).
    pub fn sign_in_outcome(&self, endpoint: &'static str) -> FlowError {
        if self.is_about_client() {
            FlowError::ClientRejected(self.error.clone())
        } else if endpoint == "par" {
            FlowError::AuthorizationFailed(self.error.clone())
        } else {
            FlowError::TokenRefused(self.error.clone())
        }
    }
}

/// A refused token request.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenFailure {
    /// The server answered with this OAuth error (`invalid_grant`: the grant is gone).
    Refused(Refusal),
    /// The server could not be reached or answered nonsense.
    Unavailable(String),
}

/// Session events, for `atgate_oauth_events_total`; carried across reloads.
#[derive(Debug, Default)]
pub struct Events {
    /// Browsers signed in.
    pub sign_ins: std::sync::atomic::AtomicU64,
    /// Browsers signed out.
    pub sign_outs: std::sync::atomic::AtomicU64,
    /// Access tokens refreshed.
    pub refreshes: std::sync::atomic::AtomicU64,
    /// Refreshes that failed for now (the current token kept while it lasts).
    pub refresh_failures: std::sync::atomic::AtomicU64,
    /// Sessions ended by the authorization server (`invalid_grant` on refresh).
    pub ended: std::sync::atomic::AtomicU64,
}

impl Events {
    /// `(event label, count)` pairs.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        [
            ("sign_in", n(&self.sign_ins)),
            ("sign_out", n(&self.sign_outs)),
            ("refresh", n(&self.refreshes)),
            ("refresh_failure", n(&self.refresh_failures)),
            ("session_ended", n(&self.ended)),
        ]
    }
}

/// The names of atgate's cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    /// The session cookie.
    pub session: String,
    /// The sign-in flow cookie (state binding).
    pub flow: String,
}

impl CookieNames {
    /// `cookie_name` and `<cookie_name>_flow`, both with the `__Host-` prefix when the
    /// cookies are `Secure` (https `public_url`): both are then set with `Path=/`.
    pub fn new(cookie_name: &str, secure: bool) -> CookieNames {
        let base = cookie_name.strip_prefix(super::HOST_PREFIX).unwrap_or(cookie_name);
        let prefix = if secure && !base.starts_with("__Secure-") { super::HOST_PREFIX } else { "" };
        CookieNames { session: format!("{prefix}{base}"), flow: format!("{prefix}{base}_flow") }
    }
}

/// atgate as a confidential atproto OAuth client.
pub struct OAuthClient {
    /// Session events.
    pub events: Arc<Events>,
    /// The settings.
    pub config: OAuthClientConfig,
    /// `client_id`: the URL of the metadata document.
    pub client_id: String,
    /// The one redirect URI.
    pub redirect_uri: String,
    /// atgate's public origin.
    pub origin: String,
    /// Whether cookies get `Secure` (https origin).
    pub secure: bool,
    /// The metadata document, ready to serve.
    pub metadata: Bytes,
    /// The cookie names in use.
    pub cookie_names: CookieNames,
    /// The keys: the first signs client assertions; their JWKS is served.
    pub keys: KeySet,
    /// Signs cookies.
    pub(super) cookie_key: aws_lc_rs::hmac::Key,
    cookie_secret: [u8; 32],
    cookie_generated: bool,
    /// The last DPoP nonce each server (origin) gave.
    nonces: moka::sync::Cache<String, String>,
    /// Sign-ins started per client address.
    pub(super) sign_ins: Arc<crate::ratelimit::Limiter>,
    /// Sessions whose life this replica extended lately, and when (store clock, ms).
    pub(super) touched: moka::sync::Cache<String, u64>,
    /// How often a session's life is extended (see `TOUCH_EVERY`).
    pub(super) touch_every: Duration,
    /// One refresh at a time per session in this replica.
    pub(super) refreshing: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    pub(super) resolver: Arc<Resolver>,
    pub(super) net: Outbound,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// Builds the client of `config`; generated keys are carried over from `previous`.
    pub fn build(
        config: &OAuthClientConfig,
        public_url: &url::Url,
        resolver: Arc<Resolver>,
        net: Outbound,
        previous: Option<&OAuthClient>,
    ) -> Result<OAuthClient, ConfigError> {
        let origin = public_url.origin().ascii_serialization();
        let prefix = &config.path_prefix;
        let client_id = format!("{origin}{prefix}/client-metadata.json");
        let redirect_uri = format!("{origin}{prefix}/callback");
        let keys = KeySet::load(
            config.keys.as_ref(),
            previous.map(|p| &p.keys),
            "oauth_client.keys_env/_file not set: using a random per-process client key; replicas will publish different keys",
        )?;
        let (cookie_secret, cookie_generated) = match &config.cookie_secret {
            Some(secret) => {
                let bytes = secret.read()?;
                if bytes.len() < 32 {
                    return Err(secret.origin().error("the cookie secret must be at least 32 bytes".into()));
                }
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                let mut key = [0u8; 32];
                key.copy_from_slice(digest.as_ref());
                (key, false)
            }
            None => match previous.filter(|p| p.cookie_generated) {
                Some(p) => (p.cookie_secret, true),
                None => {
                    tracing::warn!(
                        "oauth_client.cookie_secret_env/_file not set: signing cookies with a random per-process key; sessions end at restart and replicas reject each other's cookies"
                    );
                    (random_secret(), true)
                }
            },
        };
        let mut metadata = json!({
            "client_id": client_id,
            "client_name": config.client_name,
            "client_uri": config.client_uri.clone().unwrap_or_else(|| origin.clone()),
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": config.scope,
            "application_type": "web",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": format!("{origin}{prefix}/jwks.json"),
            "dpop_bound_access_tokens": true,
        });
        for (name, value) in
            [("logo_uri", &config.logo_uri), ("tos_uri", &config.tos_uri), ("policy_uri", &config.policy_uri)]
        {
            if let Some(v) = value {
                metadata[name] = Value::String(v.clone());
            }
        }
        let (nonces, refreshing, events) = match previous {
            Some(p) => (p.nonces.clone(), p.refreshing.clone(), p.events.clone()),
            None => (
                moka::sync::Cache::builder().max_capacity(10_000).time_to_idle(Duration::from_secs(600)).build(),
                moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(60)).build(),
                Arc::default(),
            ),
        };
        let sign_ins = previous
            .map(|p| p.sign_ins.clone())
            .filter(|l| l.config == config.sign_in_rate)
            .unwrap_or_else(|| Arc::new(crate::ratelimit::Limiter::new(config.sign_in_rate)));
        let touch_every = super::TOUCH_EVERY.min(config.session_ttl / 2).max(Duration::from_millis(100));
        let touched = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(touch_every).build();
        let secure = public_url.scheme() == "https";
        Ok(OAuthClient {
            cookie_names: CookieNames::new(&config.cookie_name, secure),
            touched,
            touch_every,
            sign_ins,
            events,
            config: config.clone(),
            client_id,
            redirect_uri,
            secure,
            origin,
            metadata: metadata.to_string().into(),
            keys,
            cookie_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &cookie_secret),
            cookie_secret,
            cookie_generated,
            nonces,
            refreshing,
            resolver,
            net,
        })
    }

    /// Finds the account and its authorization server from a handle or DID.
    pub async fn discover(&self, input: &str) -> Result<Account, FlowError> {
        let input = input.trim().trim_start_matches('@').to_ascii_lowercase();
        let (did, claimed) = if input.starts_with("did:plc:") || input.starts_with("did:web:") {
            (input.clone(), None)
        } else {
            if !crate::identity::handle::is_valid(&input, true) {
                return Err(FlowError::BadHandle);
            }
            let did = self.resolver.resolve_handle(&input).await.ok_or(FlowError::UnknownAccount(input.clone()))?;
            (did, Some(input.clone()))
        };
        let doc = self.resolver.resolve(&did).await.map_err(|e| match e {
            IdentityError::Unavailable(cause) => FlowError::Unreachable { what: "identity directory", cause },
            _ => FlowError::UnknownAccount(input.clone()),
        })?;
        let handle = match claimed {
            // The handle resolved to the DID; the document must claim it back.
            Some(h) => (doc.handle.as_deref() == Some(h.as_str())).then_some(h),
            None => self.resolver.verified_handle(&did).await,
        };
        let pds = doc.pds.clone().ok_or(FlowError::NoPds)?;
        let server = self.authorization_server(&pds).await?;
        Ok(Account { did, handle, pds, server })
    }

    /// The authorization server a PDS names in its protected-resource metadata.
    pub async fn authorization_server(&self, pds: &url::Url) -> Result<AuthServer, FlowError> {
        let origin = pds.origin().ascii_serialization();
        let url = join(&origin, "/.well-known/oauth-protected-resource")?;
        let unreachable = |cause| FlowError::Unreachable { what: "PDS", cause };
        let resource = self.net.get_json(&url).await.map_err(unreachable)?;
        if resource.get("resource").and_then(Value::as_str).map(|r| r.trim_end_matches('/')) != Some(&origin) {
            return Err(FlowError::BadServer("the protected-resource metadata names another resource".into()));
        }
        let issuer = match resource.get("authorization_servers").and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(s)]) => s.clone(),
            _ => return Err(FlowError::BadServer("the PDS must name exactly one authorization server".into())),
        };
        self.server_metadata(&issuer).await
    }

    /// Fetches and checks an authorization server's metadata (atproto OAuth profile).
    pub async fn server_metadata(&self, issuer: &str) -> Result<AuthServer, FlowError> {
        let parsed = url::Url::parse(issuer).map_err(|_| FlowError::BadServer("invalid issuer URL".into()))?;
        if parsed.origin().ascii_serialization() != issuer {
            return Err(FlowError::BadServer("the issuer must be an origin".into()));
        }
        let url = join(issuer, "/.well-known/oauth-authorization-server")?;
        let meta = self
            .net
            .get_json(&url)
            .await
            .map_err(|cause| FlowError::Unreachable { what: "authorization server", cause })?;
        let text = |name: &str| meta.get(name).and_then(Value::as_str).map(str::to_owned);
        let has = |name: &str, value: &str| {
            meta.get(name).and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v.as_str() == Some(value)))
        };
        let bad = |m: &str| FlowError::BadServer(m.to_owned());
        if text("issuer").as_deref() != Some(issuer) {
            return Err(bad("the metadata's issuer is not the server it was fetched from"));
        }
        if !has("dpop_signing_alg_values_supported", "ES256") {
            return Err(bad("DPoP with ES256 is not supported"));
        }
        if !has("token_endpoint_auth_methods_supported", "private_key_jwt") {
            return Err(bad("private_key_jwt client authentication is not supported"));
        }
        if !has("scopes_supported", "atproto") {
            return Err(bad("the atproto scope is not supported"));
        }
        if meta.get("authorization_response_iss_parameter_supported") != Some(&Value::Bool(true)) {
            return Err(bad("the iss response parameter is not supported"));
        }
        // Endpoints obey the outbound policy (https, public addresses) like every fetch,
        // the authorization endpoint too: atgate sends browsers there.
        let endpoint = |name: &str| {
            text(name)
                .filter(|e| url::Url::parse(e).is_ok_and(|u| self.net.check_url(&u).is_ok()))
                .ok_or_else(|| FlowError::BadServer(format!("no usable {name}")))
        };
        Ok(AuthServer {
            issuer: issuer.to_owned(),
            authorization_endpoint: endpoint("authorization_endpoint")?,
            par_endpoint: endpoint("pushed_authorization_request_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            revocation_endpoint: endpoint("revocation_endpoint").ok(),
        })
    }

    /// Pushes the authorization request (PAR, PKCE S256, DPoP, `private_key_jwt`) and
    /// returns the URL to send the browser to.
    pub async fn push_request(
        &self,
        account: &Account,
        hint: &str,
        state: &str,
        verifier: &str,
        dpop: &SigningKey,
    ) -> Result<String, FlowError> {
        let challenge = sha256_b64url(verifier.as_bytes());
        let form = [
            ("response_type", "code"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", state),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.config.scope),
            ("login_hint", hint),
        ];
        let reply = self
            .post_form(&account.server, &account.server.par_endpoint, &form, dpop)
            .await
            .map_err(|cause| FlowError::Unreachable { what: "authorization server", cause })?;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if !reply.status.is_success() {
            let refusal = Refusal::from_body(&body);
            return Err(refusal.log(&account.server.issuer, "par", refusal.sign_in_outcome("par")));
        }
        let request_uri = body
            .get("request_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FlowError::BadServer("no request_uri".into()))?;
        let mut url = url::Url::parse(&account.server.authorization_endpoint)
            .map_err(|_| FlowError::BadServer("invalid authorization_endpoint".into()))?;
        url.query_pairs_mut().append_pair("client_id", &self.client_id).append_pair("request_uri", request_uri);
        Ok(url.into())
    }

    /// Exchanges an authorization code.
    pub async fn exchange_code(
        &self,
        server: &AuthServer,
        code: &str,
        verifier: &str,
        dpop: &SigningKey,
    ) -> Result<Tokens, TokenFailure> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ];
        self.token_request(server, &form, dpop).await
    }

    /// Uses a refresh token (once: the server rotates it).
    pub async fn refresh(
        &self,
        server: &AuthServer,
        refresh_token: &str,
        dpop: &SigningKey,
    ) -> Result<Tokens, TokenFailure> {
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        self.token_request(server, &form, dpop).await
    }

    /// Revokes a token at the server (best effort; RFC 7009 answers 200 either way).
    pub async fn revoke(&self, server: &AuthServer, token: &str, dpop: &SigningKey) -> Result<(), String> {
        let endpoint = server.revocation_endpoint.as_deref().ok_or("no revocation endpoint")?;
        let reply = self.post_form(server, endpoint, &[("token", token)], dpop).await.map_err(|e| e.to_string())?;
        if reply.status.is_success() { Ok(()) } else { Err(format!("status {}", reply.status)) }
    }

    async fn token_request(
        &self,
        server: &AuthServer,
        form: &[(&str, &str)],
        dpop: &SigningKey,
    ) -> Result<Tokens, TokenFailure> {
        let reply = self
            .post_form(server, &server.token_endpoint, form, dpop)
            .await
            .map_err(|e| TokenFailure::Unavailable(e.to_string()))?;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if !reply.status.is_success() {
            return match body.get("error").and_then(Value::as_str) {
                Some(_) if reply.status.is_client_error() => Err(TokenFailure::Refused(Refusal::from_body(&body))),
                _ => Err(TokenFailure::Unavailable(format!("status {}", reply.status))),
            };
        }
        parse_tokens(&body).map_err(|m| TokenFailure::Unavailable(m.into()))
    }

    /// POSTs a form with client authentication and a DPoP proof, retrying once with the
    /// server's nonce when it asks for one.
    async fn post_form(
        &self,
        server: &AuthServer,
        endpoint: &str,
        form: &[(&str, &str)],
        dpop: &SigningKey,
    ) -> Result<Reply, NetError> {
        let url = url::Url::parse(endpoint).map_err(|_| NetError::Url("invalid endpoint".into()))?;
        let origin = url.origin().ascii_serialization();
        let mut retried = false;
        loop {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().copied())
                .append_pair("client_id", &self.client_id)
                .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                .append_pair("client_assertion", &self.client_assertion(&server.issuer))
                .finish();
            let nonce = self.nonces.get(&origin);
            let proof = dpop_proof(dpop, "POST", url.as_str(), None, nonce.as_deref(), crate::auth::now_ms() / 1000);
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if let Ok(v) = HeaderValue::from_str(&proof) {
                headers.insert("dpop", v);
            }
            let reply = self.net.exchange(Method::POST, &url, headers, Bytes::from(body)).await?;
            let fresh = self.remember_nonce(&origin, &reply.headers);
            if !retried && fresh && is_nonce_error(&reply) {
                retried = true;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Forgets full sign-in buckets (the rate-limit sweeper calls this every minute).
    pub fn forget_idle(&self) {
        self.sign_ins.forget_idle();
    }

    /// Records a server's `DPoP-Nonce`; true if it sent one.
    pub(super) fn remember_nonce(&self, origin: &str, headers: &HeaderMap) -> bool {
        match headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            Some(n) if !n.is_empty() && n.len() <= 512 => {
                self.nonces.insert(origin.to_owned(), n.to_owned());
                true
            }
            _ => false,
        }
    }

    /// The nonce last seen from `origin`.
    pub(super) fn nonce(&self, origin: &str) -> Option<String> {
        self.nonces.get(origin)
    }

    /// A `private_key_jwt` client assertion for `audience` (the issuer).
    fn client_assertion(&self, audience: &str) -> String {
        let (kid, key) = self.keys.signer();
        let now = crate::auth::now_ms() / 1000;
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": random_id(),
            "iat": now,
            "exp": now + 60,
        });
        key.sign_jwt(json!({"typ": "JWT", "kid": kid}), &claims)
    }
}

/// Whether a server answered "use a DPoP nonce" (400 from an authorization server, 401
/// with a challenge from a resource server).
pub(super) fn is_nonce_error(reply: &Reply) -> bool {
    if reply.status == http::StatusCode::UNAUTHORIZED {
        let challenge = reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
        return challenge.contains("use_dpop_nonce");
    }
    reply.status == http::StatusCode::BAD_REQUEST
        && serde_json::from_slice::<Value>(&reply.body)
            .is_ok_and(|b| b.get("error").and_then(Value::as_str) == Some("use_dpop_nonce"))
}

fn join(origin: &str, path: &str) -> Result<url::Url, FlowError> {
    url::Url::parse(&format!("{origin}{path}")).map_err(|_| FlowError::BadServer("invalid URL".into()))
}

/// Reads a token response: a DPoP token type, a DID `sub`, the `atproto` scope.
fn parse_tokens(body: &Value) -> Result<Tokens, &'static str> {
    let text = |name: &str| body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 16_384);
    if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("dpop")) {
        return Err("the token is not DPoP-bound");
    }
    let sub = text("sub").filter(|s| s.starts_with("did:")).ok_or("no sub")?;
    let scope = text("scope").ok_or("no scope")?;
    if !scope.split(' ').any(|s| s == "atproto") {
        return Err("the atproto scope was not granted");
    }
    let expires_in = body.get("expires_in").and_then(Value::as_u64).unwrap_or(300).min(86_400);
    Ok(Tokens {
        access_token: text("access_token").ok_or("no access_token")?.to_owned(),
        refresh_token: text("refresh_token").map(str::to_owned),
        expires_at: crate::auth::now_ms() / 1000 + expires_in,
        scope: scope.to_owned(),
        sub: sub.to_owned(),
    })
}

/// A fresh PKCE verifier: 32 random bytes, base64url (43 characters).
pub fn pkce_verifier() -> String {
    b64url(&random_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses_must_be_dpop_bound_atproto_grants() {
        let ok = json!({"access_token": "a", "token_type": "DPoP", "sub": "did:plc:x", "scope": "atproto", "expires_in": 60});
        let t = parse_tokens(&ok).unwrap();
        assert_eq!((t.sub.as_str(), t.refresh_token), ("did:plc:x", None));
        for (field, value) in
            [("token_type", json!("Bearer")), ("sub", json!("alice")), ("scope", json!("transition:generic"))]
        {
            let mut bad = ok.clone();
            bad[field] = value;
            assert!(parse_tokens(&bad).is_err(), "{field}");
        }
        assert!(parse_tokens(&json!({})).is_err());
    }

    #[test]
    fn pkce_verifiers_are_long_and_random() {
        let v = pkce_verifier();
        assert_eq!(v.len(), 43);
        assert_ne!(v, pkce_verifier());
    }
}
