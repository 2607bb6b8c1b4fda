//! Per-route rate limits: GCRA buckets (governor) kept in memory by each replica.
//!
//! A route lists limits keyed `by: ip`, `did` or `client_id`. Client-address limits run
//! before authentication, so a flood costs no signature checks; principal limits run
//! right after it. A request must pass every limit. Answers carry the draft
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`
//! headers of the limit closest to running out; a refusal is 429 with `Retry-After`.
//!
//! Buckets live in the route and survive config reloads while the limit is unchanged.
//! Idle buckets (full again) are dropped every minute, so memory follows active keys.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::auth::Principal;
use crate::body::{Body, HttpFuture};
use crate::config::{LimitBy, RateLimit};
use crate::layers::{Next, Stage, StageLayer};
use crate::proxy::forwarded::ClientInfo;
use crate::respond::{Reject, reject};
use crate::router::Route;
use crate::state::Shared;

/// What a bucket is keyed by: a client address (IPv6 by its /64) or a DID / `client_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A client address.
    Ip(IpAddr),
    /// A principal's DID or OAuth client.
    Text(Box<str>),
}

impl Key {
    /// The bucket key of a client address: IPv4 as is, IPv6 by its /64 (one end site).
    pub fn ip(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(_) => Key::Ip(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Ip(IpAddr::V4(v4)),
                None => Key::Ip(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

/// One configured limit with its buckets.
pub struct Limiter {
    /// The limit.
    pub config: RateLimit,
    buckets: DefaultKeyedRateLimiter<Key, StateInformationMiddleware>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("config", &self.config).field("keys", &self.buckets.len()).finish()
    }
}

/// A passed check: what the response headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    config: RateLimit,
    remaining: u32,
    /// Seconds until the bucket is full again.
    reset: u64,
}

impl Limiter {
    /// Empty buckets for a limit.
    pub fn new(config: RateLimit) -> Limiter {
        // Validation guarantees requests >= 1, burst >= 1 and period / requests >= 1 ns.
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(config.period / config.requests)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let buckets = governor::RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>();
        Limiter { config, buckets }
    }

    /// Takes one request from `key`'s bucket.
    pub fn check(&self, key: &Key) -> Result<Allowance, RateLimited> {
        let per_request = self.config.period / self.config.requests;
        match self.buckets.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let empty = self.config.burst.saturating_sub(remaining);
                let refill = per_request.checked_mul(empty).unwrap_or(Duration::MAX);
                Ok(Allowance { config: self.config, remaining, reset: ceil_secs(refill) })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.buckets.clock().now());
                Err(RateLimited { config: self.config, retry_after: ceil_secs(wait).max(1) })
            }
        }
    }

    /// Drops buckets that are full again; called every minute.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// Keys with a bucket now.
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A refused request: 429 `RateLimitExceeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit by {} exceeded; retry in {retry_after}s", config.by.as_str())]
pub struct RateLimited {
    config: RateLimit,
    /// Seconds until one more request would pass.
    pub retry_after: u64,
}

impl Reject for RateLimited {
    fn status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }
    fn error_name(&self) -> &'static str {
        "RateLimitExceeded"
    }
    fn message(&self) -> String {
        self.to_string()
    }
    fn reason(&self) -> &'static str {
        match self.config.by {
            LimitBy::Ip => "rate_limited_ip",
            LimitBy::Did => "rate_limited_did",
            LimitBy::ClientId => "rate_limited_client_id",
        }
    }
    fn headers(&self, headers: &mut HeaderMap) {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        write_headers(headers, &Allowance { config: self.config, remaining: 0, reset: self.retry_after });
    }
}

/// `RateLimit-Policy: <quota>;w=<window>[;burst=<n>]`, the window in whole seconds.
fn policy(config: &RateLimit) -> String {
    let window = ceil_secs(config.period).max(1);
    let quota = (u128::from(config.requests) * u128::from(window) * 1_000_000_000 / config.period.as_nanos().max(1))
        .min(u128::from(u32::MAX));
    if config.burst == config.requests {
        format!("{quota};w={window}")
    } else {
        format!("{quota};w={window};burst={}", config.burst)
    }
}

const LIMIT: &str = "ratelimit-limit";
const REMAINING: &str = "ratelimit-remaining";
const RESET: &str = "ratelimit-reset";
const POLICY: &str = "ratelimit-policy";

fn write_headers(headers: &mut HeaderMap, a: &Allowance) {
    headers.insert(LIMIT, HeaderValue::from(a.config.burst));
    headers.insert(REMAINING, HeaderValue::from(a.remaining));
    headers.insert(RESET, HeaderValue::from(a.reset));
    if let Ok(v) = HeaderValue::from_str(&policy(&a.config)) {
        headers.insert(POLICY, v);
    }
}

/// Reports `a` unless the response already reports a limit closer to running out.
fn report(res: &mut Response<Body>, a: &Allowance) {
    let shown = res.headers().get(REMAINING).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
    if shown.is_none_or(|r| a.remaining < r) {
        write_headers(res.headers_mut(), a);
    }
}

/// Which limits a stage checks.
trait Phase {
    fn applies(by: LimitBy) -> bool;
    fn key(by: LimitBy, req: &Request<Body>) -> Option<Key>;
}

/// Client-address limits, before authentication.
pub struct ByClient;

/// DID and `client_id` limits, after authentication.
pub struct ByPrincipal;

impl Phase for ByClient {
    fn applies(by: LimitBy) -> bool {
        by == LimitBy::Ip
    }
    fn key(_: LimitBy, req: &Request<Body>) -> Option<Key> {
        req.extensions().get::<ClientInfo>().map(|c| Key::ip(c.ip))
    }
}

impl Phase for ByPrincipal {
    fn applies(by: LimitBy) -> bool {
        by != LimitBy::Ip
    }
    fn key(by: LimitBy, req: &Request<Body>) -> Option<Key> {
        let principal = req.extensions().get::<Principal>()?;
        let text = match (by, principal) {
            (LimitBy::ClientId, Principal::OAuth { token, .. }) => token.client_id.as_deref()?,
            (LimitBy::Did, p) => p.did()?,
            _ => return None,
        };
        Some(Key::Text(text.into()))
    }
}

/// Checks the route's limits of phase `P`: the tightest allowance, or the first refusal.
fn check<P: Phase>(route: &Route, req: &Request<Body>) -> Result<Option<Allowance>, RateLimited> {
    let mut tightest: Option<Allowance> = None;
    for limiter in route.rate_limits.iter().filter(|l| P::applies(l.config.by)) {
        // A request without the key (no principal of that kind) is not counted by it.
        let Some(key) = P::key(limiter.config.by, req) else { continue };
        let a = limiter.check(&key)?;
        if tightest.is_none_or(|t| a.remaining < t.remaining) {
            tightest = Some(a);
        }
    }
    Ok(tightest)
}

fn call<P: Phase, S: Next>(req: Request<Body>, mut next: S) -> HttpFuture {
    let route = req.extensions().get::<Arc<Route>>().filter(|r| !r.rate_limits.is_empty()).cloned();
    let Some(route) = route else { return next.call(req) };
    match check::<P>(&route, &req) {
        Ok(None) => next.call(req),
        Ok(Some(allowance)) => Box::pin(async move {
            let mut res = next.call(req).await?;
            report(&mut res, &allowance);
            Ok(res)
        }),
        Err(limited) => {
            tracing::debug!(route = %route.name.0, error = %limited, "rate limited");
            let mut res = reject(&limited);
            // Refused before the auth stage: still a DPoP-path answer, so it carries a nonce.
            if route.auth.dpop
                && let Some(runtime) = req.extensions().get::<crate::state::Pinned>()
                && let Some(dpop) = runtime.0.dpop.as_ref()
            {
                crate::auth::decorate_dpop_response(&mut res, dpop);
            }
            Box::pin(async move { Ok(res) })
        }
    }
}

impl Stage for ByClient {
    fn call<S: Next>(_: &Arc<Shared>, req: Request<Body>, next: S) -> HttpFuture {
        call::<ByClient, S>(req, next)
    }
}

impl Stage for ByPrincipal {
    fn call<S: Next>(_: &Arc<Shared>, req: Request<Body>, next: S) -> HttpFuture {
        call::<ByPrincipal, S>(req, next)
    }
}

/// Builds the client-address stage (between routing and authentication).
pub fn by_client_layer(shared: &Arc<Shared>) -> StageLayer<ByClient> {
    StageLayer::new(shared)
}

/// Builds the principal stage (right after authentication).
pub fn by_principal_layer(shared: &Arc<Shared>) -> StageLayer<ByPrincipal> {
    StageLayer::new(shared)
}

/// The limiters of a route: carried over from `old` where the limit is unchanged.
pub fn limiters(configs: &[RateLimit], old: Option<&Route>) -> Vec<Arc<Limiter>> {
    configs
        .iter()
        .map(|c| {
            let kept = old.and_then(|o| o.rate_limits.iter().find(|l| l.config == *c));
            kept.cloned().unwrap_or_else(|| Arc::new(Limiter::new(*c)))
        })
        .collect()
}

/// Drops idle buckets of the current routes every minute, until `shared` is gone.
pub fn spawn_sweeper(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let runtime = shared.runtime.load();
            for route in runtime.routes.iter() {
                route.rate_limits.iter().for_each(|l| l.forget_idle());
            }
            if let Some(client) = &runtime.oauth {
                client.forget_idle();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(by: LimitBy, requests: u32, period: Duration, burst: u32) -> RateLimit {
        RateLimit { by, requests, period, burst }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let l = Limiter::new(limit(LimitBy::Ip, 1, Duration::from_secs(10), 3));
        let key = Key::ip("192.0.2.1".parse().unwrap());
        let remaining: Vec<u32> = (0..3).map(|_| l.check(&key).unwrap().remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = l.check(&key).unwrap_err();
        assert!((9..=10).contains(&refused.retry_after), "{refused:?}");
        // Another key has its own bucket.
        assert_eq!(l.check(&Key::ip("192.0.2.2".parse().unwrap())).unwrap().remaining, 2);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a = Key::ip("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Key::ip("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Key::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(Key::ip("::ffff:192.0.2.1".parse().unwrap()), Key::ip("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn reset_counts_the_time_to_refill() {
        let l = Limiter::new(limit(LimitBy::Did, 2, Duration::from_secs(2), 2));
        let key = Key::Text("did:plc:abc".into());
        assert_eq!(l.check(&key).unwrap(), Allowance { config: l.config, remaining: 1, reset: 1 });
        assert_eq!(l.check(&key).unwrap(), Allowance { config: l.config, remaining: 0, reset: 2 });
    }

    #[test]
    fn the_largest_limits_validation_admits_work() {
        // A day's period with a year's refill, and u32::MAX per day.
        let day = Duration::from_secs(24 * 3600);
        let slow = Limiter::new(limit(LimitBy::Ip, 1, day, 365));
        let a = slow.check(&Key::ip("192.0.2.1".parse().unwrap())).unwrap();
        assert_eq!((a.remaining, a.reset), (364, 86_400));
        assert_eq!(policy(&a.config), "1;w=86400;burst=365");
        let fast = Limiter::new(limit(LimitBy::Ip, u32::MAX, day, u32::MAX));
        assert_eq!(fast.check(&Key::ip("192.0.2.1".parse().unwrap())).unwrap().remaining, u32::MAX - 1);
    }

    #[test]
    fn policy_header_states_quota_window_and_burst() {
        assert_eq!(policy(&limit(LimitBy::Ip, 100, Duration::from_secs(1), 100)), "100;w=1");
        assert_eq!(policy(&limit(LimitBy::Ip, 6000, Duration::from_secs(60), 50)), "6000;w=60;burst=50");
        assert_eq!(policy(&limit(LimitBy::Ip, 10, Duration::from_millis(500), 10)), "20;w=1");
    }

    #[test]
    fn refusal_is_429_with_retry_after_and_zero_remaining() {
        let res =
            reject(&RateLimited { config: limit(LimitBy::ClientId, 5, Duration::from_secs(1), 5), retry_after: 1 });
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = res.headers();
        assert_eq!(h["retry-after"], "1");
        assert_eq!(h[LIMIT], "5");
        assert_eq!(h[REMAINING], "0");
        assert_eq!(h[POLICY], "5;w=1");
        assert_eq!(res.extensions().get::<crate::respond::Outcome>().unwrap().0, "rate_limited_client_id");
    }
}
