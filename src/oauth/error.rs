//! What can go wrong in a browser sign-in or session, and how each answers: an HTML page
//! for browsers, XRPC JSON for `Accept: application/json`.

use http::StatusCode;

use super::store::StoreError;
use crate::net::NetError;
use crate::respond::Reject;

/// A sign-in, session or proxy failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    /// The input is neither a handle nor a DID.
    #[error("not a handle")]
    BadHandle,
    /// The handle does not resolve to a DID, or the DID to a document.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// The DID document names no PDS.
    #[error("the account has no PDS")]
    NoPds,
    /// A server the flow needs did not answer properly.
    #[error("{what} unreachable: {cause}")]
    Unreachable {
        /// Which: "identity", "pds", "authorization server".
        what: &'static str,
        /// Why.
        cause: NetError,
    },
    /// The PDS or authorization server does not follow the atproto OAuth profile.
    #[error("authorization server refused: {0}")]
    BadServer(String),
    /// The user declined at the authorization server.
    #[error("access denied by the user")]
    Denied,
    /// The authorization server answered the callback with another error.
    #[error("authorization failed: {0}")]
    AuthorizationFailed(String),
    /// The callback's `state` is unknown, expired or used.
    #[error("unknown or expired sign-in state")]
    StateUnknown,
    /// The callback's `state` is not the one this browser started.
    #[error("sign-in state does not belong to this browser")]
    StateMismatch,
    /// The callback's `iss` is not the authorization server the flow went to.
    #[error("issuer mismatch")]
    IssuerMismatch,
    /// The token's `sub` is not the account that signed in, or that account's PDS does
    /// not name this authorization server.
    #[error("account mismatch: {0}")]
    AccountMismatch(&'static str),
    /// The authorization server refused a token request.
    #[error("token request refused: {0}")]
    TokenRefused(String),
    /// The authorization server refused atgate itself as a client (its metadata, keys or
    /// client authentication): `invalid_client_metadata`, `invalid_client`, ... The
    /// operator's problem; the user's server does support OAuth.
    #[error("the authorization server refused this client: {0}")]
    ClientRejected(String),
    /// A state-changing request from another origin.
    #[error("cross-site request refused")]
    Csrf,
    /// The session store did not answer.
    #[error("{0}")]
    Store(StoreError),
    /// No session, or it ended.
    #[error("session expired")]
    SessionExpired,
    /// An unknown path under the client's prefix.
    #[error("not found")]
    NotFound,
    /// A form or proxied body larger than allowed, or unreadable.
    #[error("request body too large")]
    TooLarge,
    /// Too many sign-ins from this address.
    #[error("too many sign-ins; retry in {0}s")]
    RateLimited(u64),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        FlowError::Store(e)
    }
}

impl FlowError {
    /// The page's heading.
    pub fn title(&self) -> &'static str {
        match self {
            FlowError::BadHandle | FlowError::UnknownAccount(_) | FlowError::NoPds => "We could not find that account",
            FlowError::Unreachable { .. } | FlowError::BadServer(_) | FlowError::TokenRefused(_) => {
                "Your account's server could not sign you in"
            }
            FlowError::ClientRejected(_) => "Your account's server refused this site",
            FlowError::Denied => "Sign-in was cancelled",
            FlowError::AuthorizationFailed(_) => "Sign-in failed",
            FlowError::StateUnknown | FlowError::StateMismatch | FlowError::IssuerMismatch => {
                "This sign-in link is no longer valid"
            }
            FlowError::AccountMismatch(_) => "The account did not match",
            FlowError::Csrf => "Request refused",
            FlowError::Store(_) => "Sign-in is temporarily unavailable",
            FlowError::SessionExpired => "Your session has ended",
            FlowError::NotFound => "Not found",
            FlowError::TooLarge => "Request too large",
            FlowError::RateLimited(_) => "Too many sign-in attempts",
        }
    }
}

impl Reject for FlowError {
    fn status(&self) -> StatusCode {
        match self {
            FlowError::BadHandle
            | FlowError::UnknownAccount(_)
            | FlowError::NoPds
            | FlowError::AuthorizationFailed(_)
            | FlowError::StateUnknown
            | FlowError::StateMismatch
            | FlowError::IssuerMismatch => StatusCode::BAD_REQUEST,
            FlowError::Unreachable { .. }
            | FlowError::BadServer(_)
            | FlowError::TokenRefused(_)
            | FlowError::ClientRejected(_) => StatusCode::BAD_GATEWAY,
            FlowError::Denied | FlowError::AccountMismatch(_) | FlowError::Csrf => StatusCode::FORBIDDEN,
            FlowError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            FlowError::SessionExpired => StatusCode::UNAUTHORIZED,
            FlowError::NotFound => StatusCode::NOT_FOUND,
            FlowError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FlowError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            FlowError::BadHandle => "InvalidHandle",
            FlowError::UnknownAccount(_) | FlowError::NoPds => "AccountNotFound",
            FlowError::Unreachable { .. } | FlowError::BadServer(_) | FlowError::TokenRefused(_) => "UpstreamFailure",
            FlowError::ClientRejected(_) => "ClientRejected",
            FlowError::Denied => "AccessDenied",
            FlowError::AuthorizationFailed(_) => "AuthorizationFailed",
            FlowError::StateUnknown | FlowError::StateMismatch => "InvalidState",
            FlowError::IssuerMismatch => "InvalidIssuer",
            FlowError::AccountMismatch(_) => "AccountMismatch",
            FlowError::Csrf => "CsrfFailed",
            FlowError::Store(_) => "TemporarilyUnavailable",
            FlowError::SessionExpired => "AuthenticationRequired",
            FlowError::NotFound => "NotFound",
            FlowError::TooLarge => "PayloadTooLarge",
            FlowError::RateLimited(_) => "RateLimitExceeded",
        }
    }
    fn message(&self) -> String {
        match self {
            FlowError::BadHandle => "Enter a handle like alice.bsky.social, or a DID".into(),
            FlowError::UnknownAccount(h) => format!("No account was found for {h}"),
            FlowError::NoPds => "The account's DID document names no PDS".into(),
            FlowError::Unreachable { what, .. } => format!("The {what} could not be reached; try again shortly"),
            FlowError::BadServer(m) => format!("The account's server does not support atproto OAuth: {m}"),
            FlowError::Denied => "Access was not granted at your account's server".into(),
            FlowError::AuthorizationFailed(code) => format!("The authorization server answered {code}"),
            FlowError::StateUnknown => "This sign-in expired or was already completed; sign in again".into(),
            FlowError::StateMismatch => "This sign-in was started in another browser; sign in again".into(),
            FlowError::IssuerMismatch => "The answer came from another authorization server than expected".into(),
            FlowError::AccountMismatch(m) => format!("The authorization server signed in another account: {m}"),
            FlowError::TokenRefused(m) => format!("The authorization server refused the token request: {m}"),
            FlowError::ClientRejected(code) => format!(
                "Your account's server refused this gateway's client registration ({code}). Your account is fine; \
the site's operator has to correct the gateway's OAuth client setup (the refusal is in the gateway's log)."
            ),
            FlowError::Csrf => "Cross-site request refused".into(),
            FlowError::Store(_) => "Sessions are temporarily unavailable; try again shortly".into(),
            FlowError::SessionExpired => "Sign in to continue".into(),
            FlowError::NotFound => "No such page".into(),
            FlowError::TooLarge => "The request body is too large".into(),
            FlowError::RateLimited(s) => format!("Too many sign-ins from this address; try again in {s} seconds"),
        }
    }
    fn reason(&self) -> &'static str {
        match self {
            FlowError::BadHandle => "oauth_bad_handle",
            FlowError::UnknownAccount(_) => "oauth_unknown_account",
            FlowError::NoPds => "oauth_no_pds",
            FlowError::Unreachable { .. } => "oauth_unreachable",
            FlowError::BadServer(_) => "oauth_bad_server",
            FlowError::Denied => "oauth_denied",
            FlowError::AuthorizationFailed(_) => "oauth_authorization_failed",
            FlowError::StateUnknown => "oauth_state_unknown",
            FlowError::StateMismatch => "oauth_state_mismatch",
            FlowError::IssuerMismatch => "oauth_issuer_mismatch",
            FlowError::AccountMismatch(_) => "oauth_account_mismatch",
            FlowError::TokenRefused(_) => "oauth_token_refused",
            FlowError::ClientRejected(_) => "oauth_client_rejected",
            FlowError::Csrf => "csrf",
            FlowError::Store(_) => "session_store_unavailable",
            FlowError::SessionExpired => "session_expired",
            FlowError::NotFound => "not_found",
            FlowError::TooLarge => "body_too_large",
            FlowError::RateLimited(_) => "rate_limited_sign_in",
        }
    }
    fn headers(&self, headers: &mut http::HeaderMap) {
        if let FlowError::RateLimited(s) = self {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(*s));
        }
    }
}
