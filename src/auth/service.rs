//! Inter-service auth JWTs (ATPROTO-AUTH.md §10): the token a user's PDS mints when it
//! proxies a request (`atproto-proxy`), or that a client got from `getServiceAuth`,
//! signed by the user's DID key.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::dpop::replay::{ReplayStore, replay_key};
use super::error::AuthError;
use super::token::normalize_typ;
use crate::config::{PrincipalPolicy, ServiceAuthConfig};
use crate::identity::did::split_fragment;
use crate::identity::{DidDoc, IdentityError, Resolver};
use crate::jose::{self, Alg};

/// Why a service JWT was refused: the XRPC error name and message of the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// Not a compact JWS, or required claims missing or of the wrong type.
    Malformed,
    /// An OAuth or DPoP token type.
    Typ(String),
    /// `iat` absent.
    IatMissing,
    /// `iat` too far in the future.
    IatFuture,
    /// `exp - iat` longer than allowed.
    Lifetime,
    /// `jti` absent where replay protection needs it.
    JtiMissing,
    /// `exp` has passed.
    Expired,
    /// `aud` is not this service.
    Audience,
    /// `lxm` absent.
    LxmMissing(String),
    /// `lxm` names another method.
    Lxm(String),
    /// `iss` is not a DID.
    Iss,
    /// The issuer's DID does not resolve.
    Unresolvable,
    /// The DID document has no usable key for the token.
    NoKey,
    /// `alg` does not fit the key.
    Alg,
    /// The signature does not verify, also after refetching the document.
    Signature,
    /// The `(iss, jti)` pair was seen before.
    Replayed,
    /// `Authorization` uses another scheme than `Bearer`.
    Scheme,
}

impl ServiceError {
    /// The XRPC error name.
    pub fn name(&self) -> &'static str {
        use ServiceError::*;
        match self {
            Malformed | IatMissing | IatFuture | Lifetime | JtiMissing | Replayed | Scheme => "BadJwt",
            Typ(_) => "BadJwtType",
            Expired => "JwtExpired",
            Audience => "BadJwtAudience",
            LxmMissing(_) | Lxm(_) => "BadJwtLexiconMethod",
            Iss => "BadJwtIss",
            Unresolvable | NoKey => "AuthenticationRequired",
            Alg | Signature => "BadJwtSignature",
        }
    }

    /// The message.
    pub fn message(&self) -> String {
        use ServiceError::*;
        match self {
            Malformed => "poorly formatted jwt".into(),
            Typ(t) => format!("Invalid jwt type \"{t}\""),
            IatMissing => "jwt iat is missing".into(),
            IatFuture => "jwt iat is in the future".into(),
            Lifetime => "jwt lifetime exceeds the maximum".into(),
            JtiMissing => "jwt jti is missing".into(),
            Expired => "jwt expired".into(),
            Audience => "jwt audience does not match service did".into(),
            LxmMissing(m) => format!("missing jwt lexicon method (\"lxm\"). must match: {m}"),
            Lxm(m) => format!("bad jwt lexicon method (\"lxm\"). must match: {m}"),
            Iss => "jwt iss is not a valid did".into(),
            Unresolvable => "could not resolve iss did".into(),
            NoKey => "missing or bad key in did doc".into(),
            Alg => "could not verify jwt signature".into(),
            Signature => "jwt signature does not match jwt issuer".into(),
            Replayed => "jwt has been used before".into(),
            Scheme => "expected a Bearer service JWT".into(),
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        use ServiceError::*;
        match self {
            Malformed | Typ(_) | IatMissing | JtiMissing | Scheme => "service_malformed",
            IatFuture | Lifetime | Expired => "service_time",
            Audience => "service_audience",
            LxmMissing(_) | Lxm(_) => "service_lxm",
            Iss | Unresolvable | NoKey => "service_issuer",
            Alg | Signature => "service_signature",
            Replayed => "service_replayed",
        }
    }
}

/// Longest a `(iss, jti)` pair is remembered; a token that would need longer is refused.
const MAX_REPLAY_TTL: Duration = Duration::from_secs(366 * 86_400);

/// What the service-auth path needs: the rules, the accepted audiences, the resolver.
#[derive(Debug)]
pub struct ServiceVerifier {
    /// `service_auth:` from the config.
    pub config: ServiceAuthConfig,
    /// `<did>#<service_id>`.
    audience: String,
    /// The bare DID, while accepted.
    bare: Option<String>,
    /// DID documents.
    pub resolver: Arc<Resolver>,
}

impl ServiceVerifier {
    /// A verifier for the service DID in `config` (which must be set).
    pub fn new(config: ServiceAuthConfig, resolver: Arc<Resolver>) -> ServiceVerifier {
        let did = config.did.clone().unwrap_or_default();
        let audience = format!("{did}#{}", config.service_id);
        let bare = config.accept_bare_did_audience.then_some(did);
        ServiceVerifier { config, audience, bare, resolver }
    }

    /// The `aud` atgate answers to: `<did>#<service_id>`.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// A verified service JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceToken {
    /// The issuer's DID (without any `#fragment`).
    pub did: String,
    /// `aud` as sent.
    pub aud: String,
    /// `lxm`, if any.
    pub lxm: Option<String>,
}

/// What a request asks of a service JWT.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The method NSID `lxm` must name.
    pub lxm: &'a str,
    /// Reject a `(iss, jti)` seen before.
    pub single_use: bool,
    /// Who may call.
    pub policy: &'a PrincipalPolicy,
}

/// Whether a Bearer token looks like a service JWT rather than an OAuth access token
/// (ATPROTO-AUTH.md §2): its payload has `lxm`, or its `typ` is absent or `JWT` and its
/// `iss` is a DID. Nothing is verified here.
pub fn looks_like_service_jwt(token: &str) -> bool {
    let Ok(jws) = jose::jws::parse(token) else { return false };
    jws.claims.contains_key("lxm")
        || (jws.header.typ.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("jwt"))
            && jws.claims.get("iss").and_then(Value::as_str).is_some_and(|i| split_fragment(i).is_some()))
}

/// Verifies a service JWT at `now` (Unix seconds), following §10.3 in order, then the
/// policy and the replay check.
pub async fn verify(
    v: &ServiceVerifier,
    replay: &dyn ReplayStore,
    token: &str,
    expect: Expect<'_>,
    now: u64,
) -> Result<ServiceToken, AuthError> {
    let bad = |e: ServiceError| AuthError::Service(e);
    let jws = jose::jws::parse(token).map_err(|_| bad(ServiceError::Malformed))?;
    if let Some(typ) = &jws.header.typ
        && matches!(normalize_typ(typ).as_str(), "at+jwt" | "refresh+jwt" | "dpop+jwt")
    {
        return Err(bad(ServiceError::Typ(typ.clone())));
    }
    let c = &jws.claims;
    let string = |name: &str| c.get(name).and_then(Value::as_str);
    let optional_string = |name: &str| c.get(name).is_none_or(Value::is_string);
    let (Some(iss), Some(aud), Some(exp)) = (string("iss"), string("aud"), c.get("exp").and_then(Value::as_f64)) else {
        return Err(bad(ServiceError::Malformed));
    };
    if !optional_string("lxm") || !optional_string("nonce") || !optional_string("jti") {
        return Err(bad(ServiceError::Malformed));
    }
    let lxm = string("lxm");
    let jti = string("jti");
    let now_f = now as f64;
    if now_f > exp {
        return Err(bad(ServiceError::Expired));
    }
    let cfg = &v.config;
    let iat = c.get("iat").map(|i| i.as_f64().ok_or(ServiceError::Malformed)).transpose().map_err(bad)?;
    let iat = iat.ok_or(bad(ServiceError::IatMissing))?;
    if iat > now_f + cfg.iat_skew.as_secs_f64() {
        return Err(bad(ServiceError::IatFuture));
    }
    let max = if lxm.is_some() { cfg.max_lifetime } else { cfg.max_lifetime_without_lxm };
    if exp - iat > max.as_secs_f64() {
        return Err(bad(ServiceError::Lifetime));
    }
    if aud != v.audience && v.bare.as_deref() != Some(aud) {
        return Err(bad(ServiceError::Audience));
    }
    match lxm {
        None => return Err(bad(ServiceError::LxmMissing(expect.lxm.to_owned()))),
        Some(l) if l != expect.lxm => return Err(bad(ServiceError::Lxm(expect.lxm.to_owned()))),
        Some(_) => {}
    }
    let (sent_did, fragment) = split_fragment(iss).ok_or(bad(ServiceError::Iss))?;
    // One spelling per identity for the policy, the replay key, the rate limits and the
    // injected header: `did:web:EXAMPLE.com` is `did:web:example.com`, an upper-case
    // `did:plc` is no DID at all.
    let canonical = crate::identity::canonical(sent_did).map_err(|_| bad(ServiceError::Iss))?;
    let did = canonical.as_ref();
    if expect.single_use && jti.is_none() {
        return Err(bad(ServiceError::JtiMissing));
    }
    if !expect.policy.admits(did) {
        return Err(AuthError::Denied);
    }
    let key_id = match (&jws.header.kid, fragment) {
        (Some(kid), _) => {
            let kid = kid.strip_prefix(sent_did).or_else(|| kid.strip_prefix(did)).unwrap_or(kid);
            let kid = kid.strip_prefix('#').unwrap_or(kid);
            if !cfg.key_ids.iter().any(|k| k == kid) {
                return Err(bad(ServiceError::NoKey));
            }
            kid.to_owned()
        }
        (None, Some("atproto_labeler")) => "atproto_label".to_owned(),
        (None, _) => "atproto".to_owned(),
    };
    let alg = Alg::from_name(&jws.header.alg).ok_or(bad(ServiceError::Alg))?;
    let doc = v.resolver.resolve(did).await.map_err(identity_error)?;
    let check = |doc: &DidDoc| -> Result<bool, ServiceError> {
        let key = doc.key(&key_id).ok_or(ServiceError::NoKey)?;
        if key.alg() != alg {
            return Err(ServiceError::Alg);
        }
        Ok(key.verify_lenient(alg, jws.signing_input.as_bytes(), &jws.signature, cfg.strict_low_s))
    };
    let doc = match check(&doc) {
        Ok(true) => doc,
        // The key may have rotated (maybe to the other curve): refetch once, rate-limited
        // per DID, and retry; otherwise the first verdict stands.
        first => match v.resolver.refresh(did).await {
            Some(fresh) if check(&fresh) == Ok(true) => fresh,
            _ => return Err(bad(first.err().unwrap_or(ServiceError::Signature))),
        },
    };
    if !expect.policy.admits_pds(doc.pds.as_ref()) {
        return Err(AuthError::Denied);
    }
    if expect.single_use
        && let Some(jti) = jti
    {
        // Remember the pair until the token expires (and a second more for rounding). The
        // checks above bound `exp - now` by `iat_skew + max`; should the configuration
        // make that longer than a store can remember, the token is refused, and no float
        // the token chose reaches a panicking conversion (`from_secs_f64`, `Instant + ttl`).
        let ttl = Duration::try_from_secs_f64((exp - now_f).max(0.0) + 1.0)
            .ok()
            .filter(|ttl| *ttl <= MAX_REPLAY_TTL)
            .ok_or(bad(ServiceError::Lifetime))?;
        match replay.insert_if_absent(replay_key("service-jwt", &[did, jti]), ttl).await {
            Ok(true) => {}
            Ok(false) => return Err(bad(ServiceError::Replayed)),
            // A full store is 503 `replay_full`, an unreachable one `ReplayUnavailable`.
            Err(e) => return Err(AuthError::replay(e)),
        }
    }
    Ok(ServiceToken { did: did.to_owned(), aud: aud.to_owned(), lxm: lxm.map(str::to_owned) })
}

fn identity_error(e: IdentityError) -> AuthError {
    match e {
        IdentityError::Did(_) => AuthError::Service(ServiceError::Unresolvable),
        IdentityError::NotFound | IdentityError::Document(_) => AuthError::Service(ServiceError::Unresolvable),
        IdentityError::Unavailable(cause) => AuthError::IdentityUnavailable(cause),
    }
}

/// The method NSID of an XRPC request path, `/xrpc/<nsid>`.
pub fn xrpc_method(path: &str) -> Option<&str> {
    let nsid = path.strip_prefix("/xrpc/")?;
    crate::config::is_nsid(nsid).then_some(nsid)
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
