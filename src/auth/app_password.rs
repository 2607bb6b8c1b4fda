//! Per-request app-password credentials (ATPROTO-AUTH.md §12): a handle (or DID) and an app
//! password in headers become a verified DID by opening a session with the user's PDS,
//! cached so that the PDS sees one login per password per access-token lifetime.
//!
//! The password never leaves this module except toward the user's own PDS: it is held in
//! the request extension the strip stage made, compared by HMAC, and never logged.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::AuthError;
use crate::config::AppPasswordConfig;
use crate::identity::{IdentityError, Resolver, is_did};
use crate::jose::b64url_decode;
use crate::proxy::headers::AppPasswordHeaders;
use crate::ratelimit::Key as ClientKey;
use crate::scope::Granted;

/// What an app password may do (§12.3), from the session's access-token `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `com.atproto.appPass`.
    AppPass,
    /// `com.atproto.appPassPrivileged` (adds `chat.bsky.*`).
    Privileged,
    /// `com.atproto.access`: a main password (refused unless allowed).
    Main,
}

impl SessionKind {
    /// The scopes the session counts as (§12.3).
    pub fn granted(self) -> Granted {
        Granted::parse(match self {
            SessionKind::AppPass => "atproto transition:generic transition:email",
            SessionKind::Privileged => "atproto transition:generic transition:email transition:chat.bsky",
            SessionKind::Main => {
                "atproto transition:generic transition:email transition:chat.bsky account:email?action=manage \
                 account:repo?action=manage account:status?action=manage identity:*"
            }
        })
    }
}

/// A verified app-password session. `Debug` leaves the access token out.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSession {
    /// The account DID.
    pub did: String,
    /// The handle, only when verified both ways (a DID logs in without one).
    pub handle: Option<String>,
    /// The PDS that opened the session.
    pub pds: url::Url,
    /// The session's access JWT (sent upstream only with `forward_pds_session`).
    pub access_jwt: String,
    /// What the session may do.
    pub kind: SessionKind,
    /// `exp` of the access JWT, Unix seconds.
    pub exp: u64,
    /// The permissions of `kind`.
    pub granted: Granted,
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession")
            .field("did", &self.did)
            .field("handle", &self.handle)
            .field("pds", &self.pds.as_str())
            .field("kind", &self.kind)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Why a login did not yield a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Missing, malformed, or rejected credentials: 401.
    #[error("{0}")]
    Invalid(&'static str),
    /// The PDS rate-limits logins: 429 with `Retry-After`.
    #[error("the PDS is rate limiting logins")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The PDS or identity resolution failed: 502.
    #[error("the PDS could not be reached: {0}")]
    Upstream(String),
}

#[derive(Clone)]
struct Entry {
    result: Result<Arc<AppSession>, LoginError>,
    /// HMAC of the password, compared again in constant time on every hit.
    mac: [u8; 32],
    until: Instant,
}

struct EntryExpiry;

impl moka::Expiry<(String, [u8; 32]), Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &(String, [u8; 32]), e: &Entry, now: Instant) -> Option<Duration> {
        Some(e.until.saturating_duration_since(now))
    }
    fn expire_after_update(
        &self,
        k: &(String, [u8; 32]),
        e: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, e, now)
    }
}

/// Sessions by `(DID, HMAC(process key, password))`, and refresh tokens to renew them.
pub struct Sessions {
    config: AppPasswordConfig,
    resolver: Arc<Resolver>,
    key: aws_lc_rs::hmac::Key,
    cache: moka::future::Cache<(String, [u8; 32]), Entry>,
    /// Refresh tokens of expired sessions, kept for their 90-day life (bounded).
    refresh: moka::sync::Cache<(String, [u8; 32]), String>,
    /// Passwords that opened a session (bounded, 90 days): their logins skip the failure
    /// cap, so strangers' wrong guesses never refuse a password that already worked.
    known_good: moka::sync::Cache<(String, [u8; 32]), ()>,
    /// DIDs whose PDS said 429, until when. Checked only before a `createSession`.
    backoff: moka::sync::Cache<String, Instant>,
    /// Logins per (DID, client address) in the current window (`FAILURE_WINDOW` from the
    /// first): the failed ones plus those in flight, reserved before the PDS is asked.
    failures: moka::sync::Cache<(String, ClientKey), Arc<AtomicU32>>,
    /// Session lookups.
    pub stats: crate::metrics::CacheStats,
}

/// At most this many failed logins per (DID, client address) per `FAILURE_WINDOW` reach the
/// PDS: its limit is 30 per 5 minutes per identifier and client IP (ATPROTO-AUTH.md §12.1),
/// and all of atgate's users share one IP, so one client's wrong passwords must not exhaust
/// it. Counted per client address so that a stranger's guesses cap the stranger, not the
/// account's owner.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Longest a session is used without asking the PDS again, whatever its access token's
/// `exp` says: the reference PDS's access tokens live 2 hours (§12.1), and a revoked app
/// password must stop working within that.
const MAX_SESSION: Duration = Duration::from_secs(2 * 3600);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("cached", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

/// How long before the access JWT's `exp` a session stops being used.
const MARGIN: u64 = 60;

/// `^[a-z2-7]{4}(-[a-z2-7]{4}){3}$`.
pub fn is_app_password(p: &str) -> bool {
    p.len() == 19
        && p.split('-').count() == 4
        && p.split('-').all(|g| g.len() == 4 && g.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
}

impl Sessions {
    /// A session cache resolving identities through `resolver`.
    pub fn new(config: &AppPasswordConfig, resolver: Arc<Resolver>) -> Sessions {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("the system RNG works");
        let capacity = config.cache_capacity;
        Sessions {
            config: config.clone(),
            resolver,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            cache: moka::future::Cache::builder().max_capacity(capacity).expire_after(EntryExpiry).build(),
            refresh: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(90 * 86_400))
                .build(),
            known_good: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(90 * 86_400))
                .build(),
            backoff: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            failures: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(FAILURE_WINDOW).build(),
            stats: Default::default(),
        }
    }

    /// Sessions cached now (approximate).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Authenticates a request's app-password headers, sent from `client` (the client
    /// address the failure cap counts by).
    pub async fn authenticate(&self, creds: &AppPasswordHeaders, client: IpAddr) -> Result<Arc<AppSession>, AuthError> {
        let bad = |m| AuthError::AppPassword(LoginError::Invalid(m));
        let (Some(identifier), Some(password)) = (&creds.identifier, &creds.password) else {
            return Err(bad("both the handle and the app password headers are required"));
        };
        if password.is_empty() || password.len() > 512 {
            return Err(bad("Invalid identifier or app password"));
        }
        if self.config.require_format && !is_app_password(password) {
            return Err(bad("an app password (xxxx-xxxx-xxxx-xxxx) is required"));
        }
        let account = self.identify(identifier.trim()).await?;
        let mac: [u8; 32] =
            aws_lc_rs::hmac::sign(&self.key, password.as_bytes()).as_ref().try_into().expect("32 bytes");
        let key = (account.did.clone(), mac);
        // The cached session first: neither the PDS's back-off nor anyone's failures
        // refuse a session that is already open.
        let login = Login { account: &account, password, mac, key: &key, client };
        let entry = self.cache.entry_by_ref(&key).or_insert_with(self.login(login)).await;
        self.stats.record(!entry.is_fresh());
        if entry.is_fresh() && entry.value().result.is_err() {
            self.stats.error();
        }
        let entry = entry.into_value();
        if aws_lc_rs::constant_time::verify_slices_are_equal(&entry.mac, &mac).is_err() {
            return Err(bad("Invalid identifier or app password"));
        }
        entry.result.map_err(AuthError::AppPassword)
    }

    /// Handle (or DID) -> the account and what to log in with.
    async fn identify(&self, identifier: &str) -> Result<Account, AuthError> {
        let invalid = || AuthError::AppPassword(LoginError::Invalid("Invalid identifier or app password"));
        let identity_error = |e: IdentityError| match e {
            IdentityError::Unavailable(cause) => AuthError::AppPassword(LoginError::Upstream(cause.to_string())),
            _ => invalid(),
        };
        if is_did(identifier) {
            // The canonical DID (an upper-case did:plc is refused, not folded). The PDS
            // takes a DID as `identifier` (§12.1), so an unverified handle does not stop
            // the login; it only stays out of the upstream headers.
            let did = crate::identity::canonical(identifier).map_err(|_| invalid())?.into_owned();
            let handle = self.resolver.verified_handle(&did).await;
            return Ok(Account { identifier: did.clone(), did, handle });
        }
        let handle = identifier.to_ascii_lowercase();
        let did = self.resolver.resolve_handle(&handle).await.ok_or_else(invalid)?;
        let doc = self.resolver.resolve(&did).await.map_err(identity_error)?;
        // Bidirectional: the DID document must claim this handle back.
        if doc.handle.as_deref() != Some(handle.as_str()) {
            return Err(invalid());
        }
        Ok(Account { did, identifier: handle.clone(), handle: Some(handle) })
    }

    /// One login (or refresh) at the PDS; the result is cached either way (a refusal
    /// that is not about this password only for an instant).
    async fn login(&self, login: Login<'_>) -> Entry {
        let Login { account, password, mac, key, client } = login;
        let did = account.did.as_str();
        let failure = |e: LoginError, ttl: Duration| Entry { result: Err(e), mac, until: later(ttl) };
        let doc = match self.resolver.resolve(did).await {
            Ok(doc) => doc,
            Err(e) => return failure(LoginError::Upstream(e.to_string()), Duration::from_secs(5)),
        };
        let Some(pds) = doc.pds.clone() else {
            return failure(LoginError::Invalid("the account's DID document names no PDS"), self.config.failure_ttl);
        };
        let net = self.resolver.net();
        // A refresh token from an earlier session of the same password renews without a login.
        let mut answer = None;
        if let Some(refresh) = self.refresh.remove(key) {
            let url = pds.join("/xrpc/com.atproto.server.refreshSession").expect("a valid path");
            if let Ok((status, _, body)) = net.post_json(&url, None, Some(&refresh)).await
                && status.is_success()
            {
                answer = Some(body);
            }
        }
        let body = match answer {
            Some(body) => body,
            None => {
                // Neither refusal below is about this password: not cached beyond now.
                if let Some(until) = self.backoff.get(did)
                    && until > Instant::now()
                {
                    let retry_after = until.saturating_duration_since(Instant::now()).as_secs().max(1);
                    return failure(LoginError::RateLimited { retry_after }, Duration::ZERO);
                }
                let known_good = self.known_good.contains_key(key);
                let Some(slot) = self.reserve(did, client, known_good) else {
                    tracing::warn!(did, "too many failed app-password logins; not asking the PDS for a while");
                    let limited = LoginError::RateLimited { retry_after: FAILURE_WINDOW.as_secs() };
                    return failure(limited, Duration::ZERO);
                };
                let url = pds.join("/xrpc/com.atproto.server.createSession").expect("a valid path");
                let request = json!({"identifier": account.identifier, "password": password});
                match net.post_json(&url, Some(&request), None).await {
                    Ok((status, _, body)) if status.is_success() => body,
                    Ok((status, retry, _)) if status.as_u16() == 429 => {
                        let wait = Duration::from_secs(retry.unwrap_or(60).clamp(1, 3600));
                        self.backoff.insert(did.to_owned(), later(wait));
                        tracing::warn!(did, "PDS rate-limited an app-password login; backing off");
                        return failure(LoginError::RateLimited { retry_after: wait.as_secs() }, wait);
                    }
                    Ok((status, _, _)) if status.is_client_error() => {
                        slot.keep(); // a failure: it counts for the window
                        self.known_good.invalidate(key); // revoked, if it ever worked
                        return failure(
                            LoginError::Invalid("Invalid identifier or app password"),
                            self.config.failure_ttl,
                        );
                    }
                    Ok((status, _, _)) => {
                        return failure(
                            LoginError::Upstream(format!("createSession answered {status}")),
                            Duration::from_secs(5),
                        );
                    }
                    Err(e) => return failure(LoginError::Upstream(e.to_string()), Duration::from_secs(5)),
                }
            }
        };
        let now = crate::auth::now_ms() / 1000;
        match self.session_from(account, pds, &body, now) {
            Ok((session, refresh)) => {
                if let Some(refresh) = refresh {
                    self.refresh.insert(key.clone(), refresh);
                }
                self.known_good.insert(key.clone(), ());
                // Until `MARGIN` before `exp`, at most `MAX_SESSION`: `exp` is the PDS's
                // number, so nothing here may overflow (saturating, then capped).
                let left = Duration::from_secs(session.exp.saturating_sub(now.saturating_add(MARGIN)));
                Entry { result: Ok(Arc::new(session)), mac, until: later(left.min(MAX_SESSION)) }
            }
            Err(e) => failure(e, self.config.failure_ttl),
        }
    }

    /// Reserves one login at the PDS for `(did, client)` within the failure cap, or `None`
    /// when the cap is reached. The count goes up before the PDS is asked, in one atomic
    /// step, so concurrent tries cannot all pass a check made before any of them failed.
    /// A password that opened a session before is never capped.
    fn reserve(&self, did: &str, client: IpAddr, known_good: bool) -> Option<Reservation> {
        if known_good {
            return Some(Reservation { counter: None });
        }
        let counter = self.failures.get_with((did.to_owned(), ClientKey::ip(client)), Default::default);
        counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_FAILURES).then_some(n + 1)).ok()?;
        Some(Reservation { counter: Some(counter) })
    }

    /// Checks a createSession/refreshSession answer and reads the access JWT's claims
    /// (unverified: the PDS is reached over TLS and the token is not trusted for more).
    fn session_from(
        &self,
        account: &Account,
        pds: url::Url,
        body: &Value,
        now: u64,
    ) -> Result<(AppSession, Option<String>), LoginError> {
        let refused = LoginError::Invalid;
        let did = account.did.as_str();
        if body.get("did").and_then(Value::as_str) != Some(did) {
            return Err(refused("the PDS opened a session for another account"));
        }
        if body.get("active") == Some(&Value::Bool(false)) && !self.config.allow_takendown {
            return Err(refused("the account is not active"));
        }
        let access = body.get("accessJwt").and_then(Value::as_str).ok_or(refused("no access token"))?;
        let claims = access
            .split('.')
            .nth(1)
            .and_then(b64url_decode)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or(refused("unreadable access token"))?;
        let kind = match claims.get("scope").and_then(Value::as_str) {
            Some("com.atproto.appPass") => SessionKind::AppPass,
            Some("com.atproto.appPassPrivileged") => SessionKind::Privileged,
            Some("com.atproto.access") if self.config.allow_main_password => SessionKind::Main,
            Some("com.atproto.access") => return Err(refused("main passwords are refused; use an app password")),
            Some("com.atproto.takendown") if self.config.allow_takendown => SessionKind::AppPass,
            _ => return Err(refused("the session's scope is not an app-password scope")),
        };
        // Any JSON number: the float-to-integer cast saturates (1e300 -> u64::MAX, which
        // MAX_SESSION then caps); a past or negative `exp` is refused.
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or(refused("no exp in the access token"))?;
        if exp < now as f64 {
            return Err(refused("the PDS's access token has expired"));
        }
        let session = AppSession {
            did: did.to_owned(),
            handle: account.handle.clone(),
            pds,
            access_jwt: access.to_owned(),
            kind,
            exp: exp as u64,
            granted: kind.granted(),
        };
        Ok((session, body.get("refreshJwt").and_then(Value::as_str).map(str::to_owned)))
    }
}

/// Who logs in: the canonical DID, the handle if verified both ways, and the
/// `identifier` createSession gets (the handle as given, or the DID).
struct Account {
    did: String,
    handle: Option<String>,
    identifier: String,
}

/// What one login needs.
struct Login<'a> {
    account: &'a Account,
    password: &'a str,
    mac: [u8; 32],
    key: &'a (String, [u8; 32]),
    client: IpAddr,
}

/// A login counted against the failure cap; given back on drop (success, PDS trouble, a
/// cancelled request) unless [`Reservation::keep`] says it failed.
struct Reservation {
    counter: Option<Arc<AtomicU32>>,
}

impl Reservation {
    /// The login failed: it stays counted until the window ends.
    fn keep(mut self) {
        self.counter = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(counter) = &self.counter {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// `now + d`, or `now` (nothing cached) where that would overflow: never a panic.
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_password_format() {
        assert!(is_app_password("abcd-efgh-ijkl-mn23"));
        for bad in [
            "abcd-efgh-ijkl-mn2",
            "ABCD-efgh-ijkl-mn23",
            "abcd-efgh-ijkl-mn01",
            "abcdefghijklmnop",
            "abcd-efgh-ijkl-mn23-",
        ] {
            assert!(!is_app_password(bad), "{bad}");
        }
    }

    #[test]
    fn permission_mapping() {
        use crate::scope::{Check, RepoAction};
        let rpc = |lxm: &str| Check::Rpc { lxm: lxm.into(), aud: "did:web:x.example.com#svc".into() };
        let app = SessionKind::AppPass.granted();
        assert!(app.allows(&Check::Repo { collection: "app.bsky.feed.post".into(), action: RepoAction::Create }));
        assert!(app.allows(&rpc("app.bsky.feed.getTimeline")));
        assert!(!app.allows(&rpc("chat.bsky.convo.getLog")));
        assert!(app.allows(&Check::Account { attr: "email".into(), manage: false }));
        assert!(!app.allows(&Check::Account { attr: "email".into(), manage: true }));
        assert!(!app.allows(&Check::Identity { attr: "handle".into() }));
        assert!(SessionKind::Privileged.granted().allows(&rpc("chat.bsky.convo.getLog")));
        assert!(SessionKind::Main.granted().allows(&Check::Identity { attr: "handle".into() }));
    }
}
