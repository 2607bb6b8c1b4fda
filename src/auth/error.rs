//! Authentication failures, with the exact descriptions of ATPROTO-AUTH.md §3-5, and how
//! each is answered: status, `WWW-Authenticate` challenge, XRPC JSON body, metric reason.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::app_password::LoginError;
use super::dpop::replay::ReplayError;
use super::service::ServiceError;
use crate::net::NetError;
use crate::respond::Reject;

/// The algorithms atgate accepts for DPoP proofs, as advertised in challenges.
pub const DPOP_ALGS: &str = "ES256 ES256K";

/// Why a DPoP proof was refused (`invalid_dpop_proof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ProofError {
    Required,
    Empty,
    Multiple,
    TooLarge,
    Malformed,
    Typ,
    JwkInvalid,
    JwkPrivate,
    Alg,
    Crit,
    Signature,
    IatType,
    IatPast,
    IatFuture,
    Exp,
    Nbf,
    NonceType,
    JtiMissing,
    HtmMismatch,
    HtuType,
    HtuInvalid,
    HtuCredentials,
    HtuScheme,
    HtuMismatch,
    AthMismatch,
    Replayed,
}

impl ProofError {
    /// The description, as the reference implementation words it.
    pub fn message(self) -> &'static str {
        use ProofError::*;
        match self {
            Required => "DPoP proof required",
            Empty => "DPoP header cannot be empty",
            Multiple => "DPoP header must contain a single proof",
            TooLarge => "DPoP proof too large",
            Malformed => "Failed to verify DPoP proof: Invalid Compact JWS",
            Typ => r#"Failed to verify DPoP proof: unexpected "typ" JWT header value"#,
            JwkInvalid => r#"Failed to verify DPoP proof: Invalid "jwk" (JSON Web Key) Header Parameter"#,
            JwkPrivate => r#"Failed to verify DPoP proof: "jwk" (JSON Web Key) Header Parameter must be a public key"#,
            Alg => r#"Failed to verify DPoP proof: "alg" (Algorithm) Header Parameter value not allowed"#,
            Crit => r#"Failed to verify DPoP proof: unsupported "crit" Header Parameter"#,
            Signature => "Failed to verify DPoP proof: signature verification failed",
            IatType => r#"Failed to verify DPoP proof: "iat" claim must be a number"#,
            IatPast => r#"Failed to verify DPoP proof: "iat" claim timestamp check failed (too far in the past)"#,
            IatFuture => {
                r#"Failed to verify DPoP proof: "iat" claim timestamp check failed (it should be in the past)"#
            }
            Exp => r#"Failed to verify DPoP proof: "exp" claim timestamp check failed"#,
            Nbf => r#"Failed to verify DPoP proof: "nbf" claim timestamp check failed"#,
            NonceType => r#"Invalid DPoP "nonce" type"#,
            JtiMissing => r#"DPoP "jti" missing"#,
            HtmMismatch => r#"DPoP "htm" mismatch"#,
            HtuType => r#"Invalid DPoP "htu" type"#,
            HtuInvalid => r#"DPoP "htu" is not a valid URL"#,
            HtuCredentials => r#"DPoP "htu" must not contain credentials"#,
            HtuScheme => r#"DPoP "htu" must be http or https"#,
            HtuMismatch => r#"DPoP "htu" mismatch"#,
            AthMismatch => r#"DPoP "ath" mismatch"#,
            Replayed => "DPoP proof replayed",
        }
    }

    /// The metric label.
    pub fn reason(self) -> &'static str {
        use ProofError::*;
        match self {
            Required => "dpop_proof_required",
            Empty | Multiple | TooLarge | Malformed => "dpop_proof_malformed",
            Typ => "dpop_typ",
            JwkInvalid | JwkPrivate => "dpop_jwk",
            Alg | Crit => "dpop_alg",
            Signature => "dpop_signature",
            IatType | IatPast | IatFuture | Exp | Nbf => "dpop_time",
            NonceType => "dpop_nonce_type",
            JtiMissing => "dpop_jti",
            HtmMismatch => "dpop_htm",
            HtuType | HtuInvalid | HtuCredentials | HtuScheme | HtuMismatch => "dpop_htu",
            AthMismatch => "dpop_ath",
            Replayed => "dpop_replayed",
        }
    }
}

/// Why an access token was refused (`invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a compact JWS.
    Malformed,
    /// `typ` is not `at+jwt`.
    Typ,
    /// `iss` is missing or not a configured issuer.
    UnknownIssuer,
    /// `alg` not allowed for the issuer.
    Alg,
    /// No key of the issuer matches `kid` and `alg`.
    NoKey,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// A required claim is missing or malformed.
    Claim(&'static str),
    /// `aud` is not accepted.
    Audience {
        /// What the token says.
        got: String,
        /// What the issuer's config accepts.
        expected: String,
    },
    /// `scope` lacks `atproto`.
    Scope(String),
    /// No `scope` claim (stateful-mode tokens cannot be checked here).
    NoScope,
    /// `scope` is a `ref:` reference.
    ScopeReference,
    /// A DPoP-bound token sent with the `Bearer` scheme.
    BoundAsBearer,
    /// A token without `cnf.jkt` on a DPoP route.
    Unbound,
    /// The proof key is not the key the token is bound to.
    Binding,
}

impl TokenError {
    /// The description.
    pub fn message(&self) -> Cow<'static, str> {
        use TokenError::*;
        Cow::Borrowed(match self {
            Malformed => "Malformed token",
            Typ => r#"unexpected "typ" JWT header value"#,
            UnknownIssuer => "Token issuer is not trusted",
            Alg => r#""alg" (Algorithm) Header Parameter value not allowed"#,
            NoKey => "No key matched",
            Signature => "signature verification failed",
            Expired => r#""exp" claim timestamp check failed"#,
            NotYetValid => r#""nbf" claim timestamp check failed"#,
            Claim(m) => m,
            Audience { got, expected } => {
                return Cow::Owned(format!("Invalid audience (got: {got}, expected one of: {expected})"));
            }
            Scope(got) => {
                return Cow::Owned(format!("Invalid scope (got: {got}, expected one of: atproto)"));
            }
            NoScope => "Access token has no scope",
            ScopeReference => "Scope references are not supported",
            BoundAsBearer => "Access token is bound to a DPoP proof, but token type is Bearer",
            Unbound => "Access token must be DPoP-bound",
            Binding => "Invalid DPoP key binding",
        })
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        use TokenError::*;
        match self {
            Malformed | Typ | Claim(_) => "token_malformed",
            UnknownIssuer => "token_issuer",
            Alg | NoKey | Signature => "token_signature",
            Expired | NotYetValid => "token_expired",
            Audience { .. } => "token_audience",
            Scope(_) | NoScope | ScopeReference => "token_scope",
            BoundAsBearer | Unbound | Binding => "token_binding",
        }
    }
}

/// The scheme of the `Authorization` header, which decides the challenge's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `DPoP`.
    Dpop,
    /// `Bearer`.
    Bearer,
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("authorization header required")]
    Missing,
    /// Unparseable, repeated or unsupported `Authorization`.
    #[error("invalid authorization header")]
    BadHeader,
    /// The DPoP proof failed a check.
    #[error("invalid DPoP proof: {}", .0.message())]
    Proof(ProofError),
    /// The proof lacks a current server nonce.
    #[error("DPoP nonce required")]
    UseNonce {
        /// A nonce was sent but is not (or no longer) valid.
        mismatch: bool,
    },
    /// The access token failed a check.
    #[error("invalid token: {}", .reason.message())]
    Token {
        /// The scheme the client used.
        scheme: Scheme,
        /// What failed.
        reason: TokenError,
    },
    /// The issuer's keys are not available (never fetched, or stale past `max_stale`).
    #[error("token keys unavailable for {issuer}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// The last fetch error, for logs.
        cause: Option<NetError>,
    },
    /// The replay store did not answer.
    #[error("replay store unavailable")]
    ReplayUnavailable,
    /// The in-memory replay store holds its capacity of live keys; recording one more
    /// would mean forgetting one that could still be replayed.
    #[error("replay store full")]
    ReplayFull,
    /// No `Authorization` on a route that takes service JWTs only.
    #[error("authentication required")]
    ServiceMissing,
    /// The service JWT failed a check.
    #[error("invalid service JWT: {}", .0.message())]
    Service(ServiceError),
    /// The issuer's DID could not be resolved for infrastructure reasons.
    #[error("identity resolution unavailable: {0}")]
    IdentityUnavailable(NetError),
    /// Authenticated, but the route's DID or PDS lists exclude the principal.
    #[error("principal not allowed on this route")]
    Denied,
    /// A route taking `lxm` from the path, on a path that is not `/xrpc/<nsid>`.
    #[error("not an XRPC method path")]
    NotXrpc,
    /// App-password credentials were refused, or the PDS could not say.
    #[error("app-password login: {0}")]
    AppPassword(super::app_password::LoginError),
    /// Both `Authorization` and app-password headers.
    #[error("ambiguous credentials")]
    Ambiguous,
    /// The request reached the auth stage without a route (a pipeline bug).
    #[error("request was not routed")]
    NotRouted,
    /// No usable browser session (`oauth_session` routes).
    #[error("session: {0}")]
    Session(crate::oauth::FlowError),
}

/// Formats a challenge; parameters whose value holds a `"` are dropped, as the
/// reference does (ATPROTO-AUTH.md §5).
pub fn challenge(scheme: Scheme, error: Option<&str>, description: Option<&str>) -> String {
    let mut out = match scheme {
        Scheme::Dpop => format!(r#"DPoP algs="{DPOP_ALGS}""#),
        Scheme::Bearer => "Bearer".to_owned(),
    };
    let mut first = scheme == Scheme::Bearer;
    for (name, value) in [("error", error), ("error_description", description)] {
        let Some(value) = value.filter(|v| !v.is_empty() && !v.contains('"') && !v.contains('\\')) else {
            continue;
        };
        out.push_str(if first { " " } else { ", " });
        first = false;
        out.push_str(&format!(r#"{name}="{value}""#));
    }
    out
}

impl AuthError {
    /// The answer when the replay store cannot record a key: 503 either way, logged.
    pub fn replay(e: ReplayError) -> AuthError {
        match e {
            ReplayError::Full => {
                tracing::warn!(
                    "replay store full of live keys; refusing until some expire (raise dpop.replay_capacity)"
                );
                AuthError::ReplayFull
            }
            ReplayError::Unavailable(_) => {
                tracing::error!(error = %e, "replay store unavailable");
                AuthError::ReplayUnavailable
            }
        }
    }

    fn oauth_error(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::BadHeader => "invalid_request",
            AuthError::Proof(_) => "invalid_dpop_proof",
            AuthError::UseNonce { .. } => "use_dpop_nonce",
            AuthError::Token { .. } => "invalid_token",
            AuthError::KeysUnavailable { .. }
            | AuthError::ReplayUnavailable
            | AuthError::ReplayFull
            | AuthError::IdentityUnavailable(_) => "TemporarilyUnavailable",
            AuthError::NotRouted => "InternalServerError",
            AuthError::ServiceMissing => "AuthMissing",
            AuthError::Service(e) => e.name(),
            AuthError::Denied => "Forbidden",
            AuthError::NotXrpc | AuthError::Ambiguous => "InvalidRequest",
            AuthError::AppPassword(LoginError::Invalid(_)) => "AuthenticationRequired",
            AuthError::AppPassword(LoginError::RateLimited { .. }) => "RateLimitExceeded",
            AuthError::AppPassword(LoginError::Upstream(_)) => "UpstreamFailure",
            AuthError::Session(e) => e.error_name(),
        }
    }
}

impl Reject for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::BadHeader | AuthError::NotXrpc | AuthError::Ambiguous => StatusCode::BAD_REQUEST,
            AuthError::AppPassword(LoginError::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            AuthError::AppPassword(LoginError::Upstream(_)) => StatusCode::BAD_GATEWAY,
            AuthError::KeysUnavailable { .. }
            | AuthError::ReplayUnavailable
            | AuthError::ReplayFull
            | AuthError::IdentityUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Denied => StatusCode::FORBIDDEN,
            AuthError::NotRouted => StatusCode::INTERNAL_SERVER_ERROR,
            AuthError::Session(e) => e.status(),
            _ => StatusCode::UNAUTHORIZED,
        }
    }
    fn error_name(&self) -> &'static str {
        self.oauth_error()
    }
    fn message(&self) -> String {
        match self {
            AuthError::Missing => "Authorization header required".into(),
            AuthError::BadHeader => "Invalid authorization header".into(),
            AuthError::Proof(p) => p.message().into(),
            AuthError::UseNonce { mismatch: false } => "Authorization server requires nonce in DPoP proof".into(),
            AuthError::UseNonce { mismatch: true } => r#"DPoP "nonce" mismatch"#.into(),
            AuthError::Token { reason, .. } => reason.message().into_owned(),
            AuthError::KeysUnavailable { .. } => "Token verification keys are temporarily unavailable".into(),
            AuthError::ReplayUnavailable => "Replay protection is temporarily unavailable".into(),
            AuthError::ReplayFull => "Replay protection is at capacity; retry later".into(),
            AuthError::NotRouted => "request was not routed".into(),
            AuthError::ServiceMissing => "Authentication Required".into(),
            AuthError::Service(e) => e.message(),
            AuthError::IdentityUnavailable(_) => "Identity resolution is temporarily unavailable".into(),
            AuthError::Denied => "This account may not use this route".into(),
            AuthError::NotXrpc => "Expected an XRPC method path /xrpc/<nsid>".into(),
            AuthError::AppPassword(LoginError::Invalid(m)) => (*m).into(),
            AuthError::AppPassword(LoginError::RateLimited { .. }) => {
                "The PDS is rate limiting logins; retry later".into()
            }
            AuthError::AppPassword(LoginError::Upstream(_)) => "The account's PDS could not be reached".into(),
            AuthError::Ambiguous => {
                "Ambiguous credentials: send Authorization or app-password headers, not both".into()
            }
            AuthError::Session(e) => e.message(),
        }
    }
    fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "auth_missing",
            AuthError::BadHeader => "auth_header_invalid",
            AuthError::Proof(p) => p.reason(),
            AuthError::UseNonce { mismatch: false } => "dpop_nonce_missing",
            AuthError::UseNonce { mismatch: true } => "dpop_nonce_mismatch",
            AuthError::Token { reason, .. } => reason.reason(),
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::ReplayUnavailable => "replay_unavailable",
            AuthError::ReplayFull => "replay_full",
            AuthError::NotRouted => "not_routed",
            AuthError::ServiceMissing => "auth_missing",
            AuthError::Service(e) => e.reason(),
            AuthError::IdentityUnavailable(_) => "identity_unavailable",
            AuthError::Denied => "denied",
            AuthError::NotXrpc => "not_xrpc",
            AuthError::AppPassword(LoginError::Invalid(_)) => "app_password_invalid",
            AuthError::AppPassword(LoginError::RateLimited { .. }) => "app_password_rate_limited",
            AuthError::AppPassword(LoginError::Upstream(_)) => "app_password_upstream",
            AuthError::Ambiguous => "ambiguous_credentials",
            AuthError::Session(e) => e.reason(),
        }
    }
    fn headers(&self, headers: &mut HeaderMap) {
        let value = match self {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            AuthError::Missing => challenge(Scheme::Dpop, None, None),
            AuthError::Proof(_) | AuthError::UseNonce { .. } => {
                challenge(Scheme::Dpop, Some(self.oauth_error()), Some(&self.message()))
            }
            AuthError::Token { scheme, reason } => {
                // A bound token presented as Bearer is told to use DPoP.
                let scheme = if *reason == TokenError::BoundAsBearer { Scheme::Dpop } else { *scheme };
                challenge(scheme, Some("invalid_token"), Some(&reason.message()))
            }
            AuthError::ServiceMissing => challenge(Scheme::Bearer, None, None),
            AuthError::Service(e) => challenge(Scheme::Bearer, Some("invalid_token"), Some(&e.message())),
            AuthError::AppPassword(LoginError::RateLimited { retry_after }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                return;
            }
            _ => return,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_drop_quoted_params() {
        assert_eq!(
            challenge(Scheme::Dpop, Some("use_dpop_nonce"), Some("Authorization server requires nonce in DPoP proof")),
            r#"DPoP algs="ES256 ES256K", error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP proof""#
        );
        assert_eq!(
            challenge(Scheme::Dpop, Some("use_dpop_nonce"), Some(r#"DPoP "nonce" mismatch"#)),
            r#"DPoP algs="ES256 ES256K", error="use_dpop_nonce""#
        );
        assert_eq!(challenge(Scheme::Dpop, None, None), r#"DPoP algs="ES256 ES256K""#);
        assert_eq!(
            challenge(Scheme::Bearer, Some("invalid_token"), Some("Malformed token")),
            r#"Bearer error="invalid_token", error_description="Malformed token""#
        );
    }
}
