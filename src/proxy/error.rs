//! What can go wrong between atgate and an upstream (or the client's body).

use http::StatusCode;

use crate::respond::Reject;

/// A forwarding failure. Never a 401/403: these are the upstream's or the transport's fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Could not connect (refused, DNS, TLS handshake).
    #[error("upstream unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// Connected, but the exchange failed (reset, malformed answer).
    #[error("upstream failure")]
    Failure(#[source] hyper_util::client::legacy::Error),
    /// No response head within the upstream's timeout.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream broke the protocol (e.g. 101 to a request that asked for no upgrade).
    #[error("upstream protocol error")]
    Protocol,
    /// The client's body went past `limits.max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request could not be turned into an upstream request.
    #[error("invalid request for upstream")]
    BadRequest,
}

impl Reject for ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unreachable(_) | ProxyError::Failure(_) | ProxyError::Protocol => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            ProxyError::Unreachable(_) | ProxyError::Failure(_) | ProxyError::Protocol => "UpstreamFailure",
            ProxyError::Timeout => "UpstreamTimeout",
            ProxyError::BodyTooLarge => "PayloadTooLarge",
            ProxyError::BadRequest => "InvalidRequest",
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
    fn reason(&self) -> &'static str {
        match self {
            ProxyError::Unreachable(_) => "upstream_unreachable",
            ProxyError::Failure(_) => "upstream_failure",
            ProxyError::Protocol => "upstream_protocol",
            ProxyError::Timeout => "upstream_timeout",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::BadRequest => "bad_request",
        }
    }
}

impl ProxyError {
    /// Classifies a client error, looking for a body-limit error in its causes.
    pub fn from_client(e: hyper_util::client::legacy::Error) -> ProxyError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ProxyError::BodyTooLarge;
            }
            source = err.source();
        }
        if e.is_connect() { ProxyError::Unreachable(e) } else { ProxyError::Failure(e) }
    }
}
