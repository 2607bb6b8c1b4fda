//! Validation of `dpop:`, `issuers:` and `outbound:`.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{RawAppPassword, RawDpop, RawIdentityHeaders, RawIssuer, RawOutbound, RawPublicKey, RawReplay};
use super::validate::Validator;
use super::{
    AppPasswordConfig, DpopConfig, IdentityHeaders, IssuerConfig, KeySource, OutboundConfig, Place, ReplayConfig,
    SecretRef,
};
use crate::jose::Jwk;

const TOKEN_ALGS: [&str; 3] = ["ES256", "ES256K", "HS256"];

impl Validator<'_> {
    fn secret(
        &mut self,
        env: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        field: &str,
    ) -> Option<SecretRef> {
        match (env, file) {
            (Some(e), None) => {
                Some(SecretRef::Env { name: e.value.clone(), at: self.file(e, &format!("{field}_env")) })
            }
            (None, Some(f)) => Some(SecretRef::File(self.file(f, &format!("{field}_file")))),
            (Some(_), Some(f)) => {
                self.error(Place::of(f), format!("{field}_file"), format!("set {field}_env or {field}_file, not both"));
                None
            }
            (None, None) => None,
        }
    }

    pub(super) fn assertion(&mut self, raw: &super::raw::RawAssertion) -> super::AssertionConfig {
        let d = super::AssertionConfig::default();
        let why = "so that a client can never send its own";
        super::AssertionConfig {
            keys: self.secret(&raw.keys_env, &raw.keys_file, "assertion.keys"),
            issuer: raw.issuer.as_ref().and_then(|i| {
                self.check(i, "assertion.issuer", |s| {
                    if s.is_empty() || s.len() > 2048 || s.chars().any(char::is_control) {
                        Err("must be a DID or URL".to_owned())
                    } else {
                        Ok(s.clone())
                    }
                })
            }),
            ttl: self.duration(&raw.ttl, "assertion.ttl", d.ttl),
            header: self.stripped_header_name(&raw.header, "assertion.header", d.header, why),
        }
    }

    pub(super) fn oauth_client(
        &mut self,
        raw: &Spanned<super::raw::RawOAuthClient>,
        public_url: Option<&url::Url>,
    ) -> super::OAuthClientConfig {
        let place = Place::of(raw);
        let raw = &raw.value;
        let d = super::OAuthClientConfig::with_scope("atproto");
        if public_url.is_none() {
            self.error(place, "oauth_client", "needs public_url: the client_id and redirect URI are URLs under it");
        }
        let text = |v: &mut Self, value: &Option<Spanned<String>>, field: &str, max: usize| {
            value.as_ref().and_then(|s| {
                v.check(s, format!("oauth_client.{field}"), |t| {
                    if t.is_empty() || t.len() > max || t.chars().any(char::is_control) {
                        Err(format!("must be 1-{max} characters without control characters"))
                    } else {
                        Ok(t.clone())
                    }
                })
            })
        };
        let uri = |v: &mut Self, value: &Option<Spanned<String>>, field: &str| {
            value.as_ref().and_then(|s| {
                v.check(s, format!("oauth_client.{field}"), |t| match url::Url::parse(t) {
                    Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(u.to_string()),
                    _ => Err(format!("invalid URL {t:?} (expected https://...)")),
                })
            })
        };
        let path = |v: &mut Self, value: &Option<Spanned<String>>, field: &str| {
            value.as_ref().and_then(|s| {
                v.check(s, format!("oauth_client.{field}"), |p| {
                    let safe = p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
                    if p.len() < 2 || !p.starts_with('/') || p.ends_with('/') || p.contains("//") || !safe {
                        Err(format!("invalid path prefix {p:?} (like /oauth: starts with /, no trailing /)"))
                    } else {
                        Ok(p.clone())
                    }
                })
            })
        };
        let scope = raw.scope.as_ref().and_then(|s| {
            self.check(s, "oauth_client.scope", |t| {
                let tokens: Vec<&str> = t.split(' ').collect();
                if tokens.iter().any(|t| t.is_empty() || t.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'"')) {
                    Err("scopes are separated by single spaces and printable ASCII without quotes".to_owned())
                } else if !tokens.contains(&"atproto") {
                    Err("must include atproto".to_owned())
                } else {
                    Ok(t.clone())
                }
            })
        });
        let cookie_name = raw.cookie_name.as_ref().and_then(|s| {
            self.check(s, "oauth_client.cookie_name", |n| {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if ok { Ok(n.clone()) } else { Err(format!("invalid cookie name {n:?} (letters, digits, - and _)")) }
            })
        });
        let path_prefix = path(self, &raw.path_prefix, "path_prefix").unwrap_or(d.path_prefix);
        let client_uri = raw
            .client_uri
            .as_ref()
            .and_then(|s| self.check(s, "oauth_client.client_uri", |t| client_uri_of(t, public_url, &path_prefix)));
        super::OAuthClientConfig {
            client_name: text(self, &raw.client_name, "client_name", 100).unwrap_or(d.client_name),
            keys: self.secret(&raw.keys_env, &raw.keys_file, "oauth_client.keys"),
            scope: scope.unwrap_or(d.scope),
            path_prefix,
            client_uri,
            logo_uri: uri(self, &raw.logo_uri, "logo_uri"),
            tos_uri: uri(self, &raw.tos_uri, "tos_uri"),
            policy_uri: uri(self, &raw.policy_uri, "policy_uri"),
            cookie_name: cookie_name.unwrap_or(d.cookie_name),
            cookie_secret: self.secret(&raw.cookie_secret_env, &raw.cookie_secret_file, "oauth_client.cookie_secret"),
            session_ttl: self.duration(&raw.session_ttl, "oauth_client.session_ttl", d.session_ttl),
            refresh_before: self.duration_or_zero(&raw.refresh_before, "oauth_client.refresh_before", d.refresh_before),
            pds_proxy: path(self, &raw.pds_proxy, "pds_proxy"),
            sign_in_rate: raw
                .sign_in_rate
                .as_ref()
                .and_then(|r| self.check(r, "oauth_client.sign_in_rate", |t| super::rate::parse_rate(t)))
                .map_or(d.sign_in_rate, |(requests, period)| super::RateLimit {
                    by: super::LimitBy::Ip,
                    requests,
                    period,
                    burst: requests,
                }),
        }
    }

    fn size(&mut self, value: &Option<Spanned<String>>, field: &str, default: u64) -> u64 {
        match value {
            Some(s) => self.check(s, field, |t| super::units::parse_size(t)).unwrap_or(default),
            None => default,
        }
    }

    pub(super) fn dpop(&mut self, raw: Option<&RawDpop>) -> DpopConfig {
        let d = DpopConfig::default();
        let Some(raw) = raw else { return d };
        let rotation = self.duration(&raw.nonce_rotation, "dpop.nonce_rotation", d.nonce_rotation);
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&rotation)
            && let Some(r) = &raw.nonce_rotation
        {
            self.error(Place::of(r), "dpop.nonce_rotation", "must be between 1s and 60s");
        }
        DpopConfig {
            nonce_secret: self.secret(&raw.nonce_secret_env, &raw.nonce_secret_file, "dpop.nonce_secret"),
            nonce_rotation: rotation,
            max_proof_bytes: self.size(&raw.max_proof_bytes, "dpop.max_proof_bytes", d.max_proof_bytes as u64) as usize,
            replay_capacity: self.count(&raw.replay_capacity, "dpop.replay_capacity", d.replay_capacity),
            token_cache_capacity: self.count(
                &raw.token_cache_capacity,
                "dpop.token_cache_capacity",
                d.token_cache_capacity,
            ),
        }
    }

    pub(super) fn issuers(&mut self, raw: &[Spanned<RawIssuer>]) -> Vec<IssuerConfig> {
        let mut out: Vec<IssuerConfig> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let field = format!("issuers[{i}]");
            if let Some(issuer) = self.issuer(&r.value, &field, Place::of(r)) {
                if out.iter().any(|o| o.issuer == issuer.issuer) {
                    self.error(Place::of(&r.value.issuer), format!("{field}.issuer"), "duplicate issuer");
                    continue;
                }
                out.push(issuer);
            }
        }
        out
    }

    fn issuer(&mut self, raw: &RawIssuer, field: &str, place: Place) -> Option<IssuerConfig> {
        let issuer = self.check(&raw.issuer, format!("{field}.issuer"), |s| {
            let u = url::Url::parse(s).map_err(|e| format!("invalid issuer URL {s:?}: {e}"))?;
            let origin_only = u.path() == "/" && !s.ends_with('/');
            if !matches!(u.scheme(), "https" | "http") || u.query().is_some() || u.fragment().is_some() || !origin_only
            {
                return Err(format!(
                    "invalid issuer {s:?} (expected an origin like https://auth.example.com, no trailing slash)"
                ));
            }
            Ok(s.clone())
        });
        let mut sources: Vec<(KeySource, Place)> = Vec::new();
        if let Some(d) = &raw.discovery
            && d.value
        {
            sources.push((KeySource::Discovery, Place::of(d)));
        }
        if let Some(u) = &raw.jwks_uri
            && let Some(url) = self.check(u, format!("{field}.jwks_uri"), |s| {
                url::Url::parse(s)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http"))
                    .ok_or_else(|| format!("invalid JWKS URL {s:?}"))
            })
        {
            sources.push((KeySource::JwksUri(url), Place::of(u)));
        }
        if let Some(f) = &raw.jwks_file {
            sources.push((KeySource::JwksFile(self.file(f, &format!("{field}.jwks_file"))), Place::of(f)));
        }
        if let Some(secret) =
            self.secret(&raw.hs256_secret_env, &raw.hs256_secret_file, &format!("{field}.hs256_secret"))
        {
            let p = secret.origin().place;
            sources.push((KeySource::Hs256(secret), p));
        }
        if let Some(k) = &raw.public_key
            && let Some(jwk) = self.public_key(&k.value, &format!("{field}.public_key"), Place::of(k))
        {
            sources.push((KeySource::PublicKey(jwk), Place::of(k)));
        }
        let keys = match sources.len() {
            1 => sources.pop().map(|(k, _)| k),
            0 => {
                self.error(
                    place,
                    field,
                    "no key source (set one of: discovery: true, jwks_uri, jwks_file, hs256_secret_env, hs256_secret_file, public_key)",
                );
                None
            }
            _ => {
                self.error(sources[1].1, field, "more than one key source; keep exactly one");
                None
            }
        };
        let hs256 = matches!(keys, Some(KeySource::Hs256(_)));
        let algs = match &raw.algs {
            Some(list) => {
                let mut algs = Vec::new();
                for (j, a) in list.iter().enumerate() {
                    if let Some(alg) = self.check(a, format!("{field}.algs[{j}]"), |s| {
                        if !TOKEN_ALGS.contains(&s.as_str()) {
                            Err(format!("unsupported alg {s:?} (expected ES256, ES256K or HS256)"))
                        } else if (s == "HS256") != hs256 {
                            Err("HS256 goes with an hs256_secret, and only HS256 does".to_owned())
                        } else {
                            Ok(s.clone())
                        }
                    }) {
                        algs.push(alg);
                    }
                }
                algs
            }
            None if hs256 => vec!["HS256".to_owned()],
            None => vec!["ES256".to_owned(), "ES256K".to_owned()],
        };
        let audiences: Vec<String> = raw.audiences.iter().map(|a| a.value.clone()).collect();
        if audiences.is_empty() {
            // Without it any `aud` would do: a token the issuer minted for another
            // resource server would be accepted here (RFC 9068 §4, RFC 8707).
            self.error(
                place,
                format!("{field}.audiences"),
                "required: the aud values this gateway accepts (its service DID or URL), so that a token minted for another resource is refused",
            );
        }
        Some(IssuerConfig {
            issuer: issuer?,
            keys: keys?,
            audiences,
            algs,
            clock_skew: self.duration_or_zero(&raw.clock_skew, &format!("{field}.clock_skew"), Duration::ZERO),
            jwks_refresh: self.duration(&raw.jwks_refresh, &format!("{field}.jwks_refresh"), Duration::from_secs(300)),
            max_stale: self.duration(&raw.max_stale, &format!("{field}.max_stale"), Duration::from_secs(86_400)),
            expand_include: raw.expand_include,
        })
    }

    fn public_key(&mut self, raw: &RawPublicKey, field: &str, place: Place) -> Option<Jwk> {
        let jwk = match (&raw.jwk, &raw.hex, &raw.alg) {
            (Some(map), None, None) => {
                let value = serde_json::to_value(map).ok()?;
                Jwk::from_value(&value).ok()
            }
            (None, Some(hex), Some(alg)) => self.check(hex, format!("{field}.hex"), |h| {
                let crv = match alg.value.as_str() {
                    "ES256" => "P-256",
                    "ES256K" => "secp256k1",
                    other => {
                        return Err(format!("unsupported alg {other:?} (expected ES256 or ES256K)"));
                    }
                };
                crate::jose::jwk::from_sec1(crv, &decode_hex(h).ok_or("invalid hex")?).map_err(|e| e.to_string())
            }),
            _ => {
                self.error(place, field, "expected either jwk: {...} or alg + hex");
                return None;
            }
        };
        match jwk {
            Some(jwk) if jwk.public_key().is_ok() => Some(jwk),
            Some(_) | None => {
                self.error(place, field, "not a usable P-256 or secp256k1 public key");
                None
            }
        }
    }

    pub(super) fn replay(&mut self, raw: Option<&RawReplay>) -> ReplayConfig {
        let Some(raw) = raw else { return ReplayConfig::default() };
        let redis = match raw.store.value.as_str() {
            "memory" => false,
            "redis" => true,
            other => {
                self.error(
                    Place::of(&raw.store),
                    "replay.store",
                    format!("unknown store {other:?} (expected memory or redis)"),
                );
                false
            }
        };
        let redis_url = match (&raw.redis, redis) {
            (Some(r), true) => {
                let url = self.secret(&r.url_env, &r.url_file, "replay.redis.url");
                if r.url_env.is_none() && r.url_file.is_none() {
                    self.error(Place::of(&raw.store), "replay.redis", "set url_env or url_file");
                }
                url
            }
            (None, true) => {
                let message = "store redis needs redis: { url_env: NAME } or { url_file: PATH }";
                self.error(Place::of(&raw.store), "replay.redis", message);
                None
            }
            (Some(_), false) => {
                self.error(Place::of(&raw.store), "replay.redis", "redis settings with store memory");
                None
            }
            (None, false) => None,
        };
        let fail_open_local = match &raw.failure {
            None => false,
            Some(f) => self
                .check(f, "replay.failure", |s| match s.as_str() {
                    "fail_closed" => Ok(false),
                    "fail_open_local" => Ok(true),
                    other => Err(format!("unknown failure policy {other:?} (expected fail_closed or fail_open_local)")),
                })
                .unwrap_or(false),
        };
        ReplayConfig {
            redis_url,
            fail_open_local,
            timeout: raw
                .timeout
                .as_ref()
                .map(|_| self.duration(&raw.timeout, "replay.timeout", Duration::from_millis(250))),
            key_prefix: raw.key_prefix.as_ref().map(|p| p.value.clone()),
        }
    }

    pub(super) fn app_password(&mut self, raw: &RawAppPassword) -> AppPasswordConfig {
        let d = AppPasswordConfig::default();
        let why = "so that it is always stripped before forwarding";
        let name = |v: &mut Self, value: &Option<Spanned<String>>, field: &str, default| {
            v.stripped_header_name(value, &format!("app_password.{field}"), default, why)
        };
        AppPasswordConfig {
            handle_header: name(self, &raw.handle_header, "handle_header", d.handle_header),
            password_header: name(self, &raw.password_header, "password_header", d.password_header),
            require_format: raw.require_format.unwrap_or(d.require_format),
            allow_main_password: raw.allow_main_password,
            allow_takendown: raw.allow_takendown,
            failure_ttl: self.duration(&raw.failure_ttl, "app_password.failure_ttl", d.failure_ttl),
            cache_capacity: self.count(&raw.cache_capacity, "app_password.cache_capacity", d.cache_capacity),
        }
    }

    /// A header name atgate strips from every request (`x-atproto-` or `x-atgate-`), so
    /// that a client can never supply it; `why` says what that protects.
    fn stripped_header_name(
        &mut self,
        value: &Option<Spanned<String>>,
        field: &str,
        default: http::HeaderName,
        why: &str,
    ) -> http::HeaderName {
        let Some(value) = value else { return default };
        self.check(value, field, |s| {
            let lower = s.to_ascii_lowercase();
            match http::HeaderName::from_bytes(lower.as_bytes()) {
                Ok(h) if crate::proxy::headers::is_identity_header(&lower) => Ok(h),
                _ => Err(format!("invalid header name {s:?} (must start with x-atproto- or x-atgate-, {why})")),
            }
        })
        .unwrap_or(default)
    }

    pub(super) fn identity_headers(&mut self, raw: &RawIdentityHeaders) -> IdentityHeaders {
        let d = IdentityHeaders::default();
        let name = |v: &mut Self, value: &Option<Spanned<String>>, field: &str, default| {
            v.stripped_header_name(
                value,
                &format!("identity_headers.{field}"),
                default,
                "so that clients cannot send it",
            )
        };
        IdentityHeaders {
            did: name(self, &raw.did, "did", d.did),
            auth: name(self, &raw.auth, "auth", d.auth),
            client_id: name(self, &raw.client_id, "client_id", d.client_id),
            scope: name(self, &raw.scope, "scope", d.scope),
            jkt: name(self, &raw.jkt, "jkt", d.jkt),
            lxm: name(self, &raw.lxm, "lxm", d.lxm),
            aud: name(self, &raw.aud, "aud", d.aud),
            handle: name(self, &raw.handle, "handle", d.handle),
            pds: name(self, &raw.pds, "pds", d.pds),
        }
    }

    pub(super) fn outbound(&mut self, raw: &RawOutbound) -> OutboundConfig {
        let d = OutboundConfig::default();
        OutboundConfig {
            allow_private_addresses: raw.allow_private_addresses,
            allow_http: raw.allow_http,
            timeout: self.duration(&raw.timeout, "outbound.timeout", d.timeout),
            max_response_bytes: self.size(&raw.max_response_bytes, "outbound.max_response_bytes", d.max_response_bytes),
        }
    }
}

/// Lower- or upper-case hex to bytes.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// `oauth_client.client_uri` as the reference authorization server accepts it
/// (`@atproto/oauth-provider`'s client manager): on the `client_id`'s origin
/// (`public_url`) and a parent path of the client metadata URL. Any other value makes
/// every reference-based server refuse atgate's client metadata at sign-in.
fn client_uri_of(text: &str, public_url: Option<&url::Url>, path_prefix: &str) -> Result<String, String> {
    let uri = match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "https" | "http") => u,
        _ => return Err(format!("invalid URL {text:?} (expected https://...)")),
    };
    let Some(public) = public_url else { return Ok(uri.to_string()) };
    if uri.origin() != public.origin() {
        return Err(format!("{text:?} must be on public_url's origin, as authorization servers require"));
    }
    let metadata = format!("{path_prefix}/client-metadata.json");
    let parent = if uri.path().ends_with('/') { uri.path().to_owned() } else { format!("{}/", uri.path()) };
    if uri.path() != metadata && !metadata.starts_with(&parent) {
        return Err(format!(
            "{text:?} must be a parent of the client metadata URL {metadata:?}, as authorization servers require"
        ));
    }
    Ok(uri.to_string())
}
