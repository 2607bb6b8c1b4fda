//! The serde mirror of `atgate.yaml`: what the file may say, before any check.
//!
//! Every struct denies unknown fields: a typo in an auth gateway's config must fail
//! loudly, never silently open a route. Values that are checked after parsing are
//! `Spanned<T>` so that `validate.rs` can point at their line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value written either as one item or as a list of items.
#[derive(Debug, Clone)]
pub(super) struct OneOrMany<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let item = T::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(OneOrMany(vec![item]))
            }
        }
        de.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A YAML mapping kept in file order, each key with its place.
#[derive(Debug)]
pub(super) struct NamedMap<T>(pub(super) Vec<(Spanned<String>, T)>);

impl<T> Default for NamedMap<T> {
    fn default() -> Self {
        NamedMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = NamedMap<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    items.push(entry);
                }
                Ok(NamedMap(items))
            }
        }
        de.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<OneOrMany<String>>>,
    pub(super) admin_listen: Option<Spanned<String>>,
    pub(super) public_url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
    pub(super) trusted_proxy_headers: Option<Vec<Spanned<String>>>,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) via: bool,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) upstreams: NamedMap<RawUpstream>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
    pub(super) dpop: Option<RawDpop>,
    #[serde(default)]
    pub(super) issuers: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    pub(super) outbound: RawOutbound,
    #[serde(default)]
    pub(super) identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    pub(super) service_auth: Option<RawServiceAuth>,
    pub(super) permission_sets: Option<RawPermissionSets>,
    #[serde(default)]
    pub(super) app_password: RawAppPassword,
    pub(super) replay: Option<RawReplay>,
    #[serde(default)]
    pub(super) reload: RawReload,
    #[serde(default)]
    pub(super) assertion: RawAssertion,
    pub(super) oauth_client: Option<Spanned<RawOAuthClient>>,
}

/// `oauth_client:`, atgate as the atproto OAuth client of browser routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuthClient {
    pub(super) client_name: Option<Spanned<String>>,
    pub(super) keys_env: Option<Spanned<String>>,
    pub(super) keys_file: Option<Spanned<String>>,
    pub(super) scope: Option<Spanned<String>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    pub(super) client_uri: Option<Spanned<String>>,
    pub(super) logo_uri: Option<Spanned<String>>,
    pub(super) tos_uri: Option<Spanned<String>>,
    pub(super) policy_uri: Option<Spanned<String>>,
    pub(super) cookie_name: Option<Spanned<String>>,
    pub(super) cookie_secret_env: Option<Spanned<String>>,
    pub(super) cookie_secret_file: Option<Spanned<String>>,
    pub(super) session_ttl: Option<Spanned<String>>,
    pub(super) refresh_before: Option<Spanned<String>>,
    pub(super) pds_proxy: Option<Spanned<String>>,
    pub(super) sign_in_rate: Option<Spanned<String>>,
}

/// `assertion:`, the signed identity assertion.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssertion {
    pub(super) keys_env: Option<Spanned<String>>,
    pub(super) keys_file: Option<Spanned<String>>,
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) ttl: Option<Spanned<String>>,
    pub(super) header: Option<Spanned<String>>,
}

/// `reload:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) watch: Option<bool>,
    pub(super) interval: Option<Spanned<String>>,
}

/// `replay:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplay {
    pub(super) store: Spanned<String>,
    pub(super) redis: Option<RawRedis>,
    pub(super) failure: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) key_prefix: Option<Spanned<String>>,
}

/// `replay.redis:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
}

/// `app_password:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAppPassword {
    pub(super) handle_header: Option<Spanned<String>>,
    pub(super) password_header: Option<Spanned<String>>,
    pub(super) require_format: Option<bool>,
    #[serde(default)]
    pub(super) allow_main_password: bool,
    #[serde(default)]
    pub(super) allow_takendown: bool,
    pub(super) failure_ttl: Option<Spanned<String>>,
    pub(super) cache_capacity: Option<Spanned<u64>>,
}

/// `permission_sets:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPermissionSets {
    pub(super) pinned_dir: Spanned<String>,
}

/// `identity:`, DID and handle resolution.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) plc_url: Option<Spanned<String>>,
    pub(super) dns_servers: Option<Vec<Spanned<String>>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) fresh: Option<Spanned<String>>,
    pub(super) max_stale: Option<Spanned<String>>,
    pub(super) not_found_ttl: Option<Spanned<String>>,
    pub(super) error_ttl: Option<Spanned<String>>,
    pub(super) refresh_interval: Option<Spanned<String>>,
    pub(super) cache_capacity: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) allow_test_handles: bool,
}

/// `service_auth:`, atgate's service identity and the service-JWT rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceAuth {
    pub(super) did: Option<Spanned<String>>,
    pub(super) service_id: Option<Spanned<String>>,
    pub(super) service_type: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) serve_did_document: Option<Spanned<bool>>,
    pub(super) accept_bare_did_audience: Option<bool>,
    #[serde(default)]
    pub(super) strict_low_s: bool,
    pub(super) max_lifetime: Option<Spanned<String>>,
    pub(super) max_lifetime_without_lxm: Option<Spanned<String>>,
    pub(super) iat_skew: Option<Spanned<String>>,
    pub(super) key_ids: Option<Vec<Spanned<String>>>,
}

/// `identity_headers:`, names of the headers atgate injects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeaders {
    pub(super) did: Option<Spanned<String>>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) scope: Option<Spanned<String>>,
    pub(super) jkt: Option<Spanned<String>>,
    pub(super) lxm: Option<Spanned<String>>,
    pub(super) aud: Option<Spanned<String>>,
    pub(super) handle: Option<Spanned<String>>,
    pub(super) pds: Option<Spanned<String>>,
}

/// `dpop:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpop {
    pub(super) nonce_secret_env: Option<Spanned<String>>,
    pub(super) nonce_secret_file: Option<Spanned<String>>,
    pub(super) nonce_rotation: Option<Spanned<String>>,
    pub(super) max_proof_bytes: Option<Spanned<String>>,
    pub(super) replay_capacity: Option<Spanned<u64>>,
    pub(super) token_cache_capacity: Option<Spanned<u64>>,
}

/// One entry of `issuers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) issuer: Spanned<String>,
    #[serde(default)]
    pub(super) discovery: Option<Spanned<bool>>,
    pub(super) jwks_uri: Option<Spanned<String>>,
    pub(super) jwks_file: Option<Spanned<String>>,
    pub(super) hs256_secret_env: Option<Spanned<String>>,
    pub(super) hs256_secret_file: Option<Spanned<String>>,
    pub(super) public_key: Option<Spanned<RawPublicKey>>,
    #[serde(default)]
    pub(super) audiences: Vec<Spanned<String>>,
    pub(super) algs: Option<Vec<Spanned<String>>>,
    pub(super) clock_skew: Option<Spanned<String>>,
    pub(super) jwks_refresh: Option<Spanned<String>>,
    pub(super) max_stale: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) expand_include: bool,
}

/// `issuers[i].public_key:`, one key written as a JWK or as SEC1 hex.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublicKey {
    pub(super) alg: Option<Spanned<String>>,
    pub(super) hex: Option<Spanned<String>>,
    pub(super) jwk: Option<std::collections::BTreeMap<String, String>>,
}

/// `outbound:`, the client for JWKS, metadata and (later) DID documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    #[serde(default)]
    pub(super) allow_private_addresses: bool,
    #[serde(default)]
    pub(super) allow_http: bool,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_response_bytes: Option<Spanned<String>>,
}

/// `tls:` for the public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body: Option<Spanned<String>>,
    pub(super) max_header_bytes: Option<Spanned<String>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) max_concurrent_requests: Option<Spanned<u64>>,
    pub(super) shutdown_timeout: Option<Spanned<String>>,
}

/// `log:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) otlp: Option<Spanned<RawOtlp>>,
}

/// `log.otlp:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtlp {
    pub(super) endpoint: Spanned<String>,
    pub(super) service_name: Option<Spanned<String>>,
    pub(super) sample_ratio: Option<Spanned<f64>>,
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Spanned<String>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) preserve_host: bool,
    pub(super) tls: Option<RawUpstreamTls>,
}

/// `upstreams.NAME.tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub(super) ca_file: Option<Spanned<String>>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    #[serde(rename = "match")]
    pub(super) matches: RawMatch,
    pub(super) upstream: Spanned<String>,
    pub(super) auth: Spanned<OneOrMany<String>>,
    pub(super) lxm: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_token_reuse: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) inject_handle: Option<Spanned<bool>>,
    pub(super) allow_dids: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) deny_dids: Vec<Spanned<String>>,
    pub(super) allow_pds: Option<Vec<Spanned<String>>>,
    pub(super) require: Option<Spanned<RawRequire>>,
    #[serde(default)]
    pub(super) forward_pds_session: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) forward_credentials: bool,
    pub(super) strip_prefix: Option<Spanned<String>>,
    pub(super) rewrite: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rate_limits: Vec<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub(super) assertion: Option<Spanned<bool>>,
    pub(super) upgrades: Option<Vec<Spanned<String>>>,
}

/// `routes[i].rate_limits[j]:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) by: Spanned<String>,
    pub(super) rate: Spanned<String>,
    pub(super) burst: Option<Spanned<u64>>,
}

/// `routes[i].match:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) host: Option<Spanned<String>>,
    pub(super) path: Spanned<String>,
    pub(super) methods: Option<Vec<Spanned<String>>>,
}

/// `routes[i].require:`, the permissions a request needs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequire {
    pub(super) rpc: Option<Spanned<RawRpcRequire>>,
    pub(super) repo: Option<Spanned<RawRepoRequire>>,
    pub(super) blob: Option<Spanned<RawBlobRequire>>,
    pub(super) account: Option<Spanned<RawAccountRequire>>,
    pub(super) identity: Option<Spanned<RawIdentityRequire>>,
    pub(super) include: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) scopes: Vec<Spanned<String>>,
}

/// `require.rpc`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRpcRequire {
    pub(super) lxm: Option<Spanned<String>>,
    pub(super) aud: Option<Spanned<String>>,
}

/// `require.repo`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepoRequire {
    pub(super) collection: Option<Spanned<String>>,
    pub(super) action: Option<Spanned<String>>,
}

/// `require.blob`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlobRequire {
    pub(super) mime: Option<Spanned<String>>,
}

/// `require.account`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccountRequire {
    pub(super) attr: Spanned<String>,
    pub(super) action: Option<Spanned<String>>,
}

/// `require.identity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityRequire {
    pub(super) attr: Spanned<String>,
}
