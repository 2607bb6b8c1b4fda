//! Validation of `identity:`, `service_auth:` and the routes' service-auth fields.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{RawIdentity, RawRoute, RawServiceAuth};
use super::validate::Validator;
use super::{IdentityConfig, Lxm, Place, PrincipalPolicy, ServiceAuthConfig};
use crate::identity::did::DidError;
use crate::identity::is_did;

/// Whether `s` is an NSID: a reversed domain of at least two segments and a name
/// (`com.example.getThing`), at most 317 characters. Allocation-free: the router checks
/// every `/xrpc/` path with it.
pub fn is_nsid(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let Some((authority, name)) = s.rsplit_once('.') else { return false };
    s.len() <= 317
        && authority.contains('.')
        && authority.split('.').all(label_ok)
        && authority.as_bytes()[0].is_ascii_alphabetic()
        && !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn fragment_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Validator<'_> {
    pub(super) fn identity(&mut self, raw: &RawIdentity) -> IdentityConfig {
        let d = IdentityConfig::default();
        let plc_url = match &raw.plc_url {
            Some(u) => self
                .check(u, "identity.plc_url", |s| {
                    url::Url::parse(s)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "https" | "http") && u.query().is_none())
                        .ok_or_else(|| format!("invalid PLC directory URL {s:?}"))
                })
                .unwrap_or(d.plc_url.clone()),
            None => d.plc_url.clone(),
        };
        let dns_servers = raw
            .dns_servers
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| {
                self.check(s, format!("identity.dns_servers[{i}]"), |t| {
                    t.parse::<std::net::SocketAddr>()
                        .or_else(|_| t.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                        .map_err(|_| format!("invalid DNS server {t:?} (expected IP or IP:PORT)"))
                })
            })
            .collect();
        let fresh = self.duration(&raw.fresh, "identity.fresh", d.fresh);
        let max_stale = self.duration(&raw.max_stale, "identity.max_stale", d.max_stale);
        if max_stale < fresh
            && let Some(m) = raw.max_stale.as_ref().or(raw.fresh.as_ref())
        {
            self.error(Place::of(m), "identity.max_stale", "must be at least identity.fresh");
        }
        IdentityConfig {
            plc_url,
            dns_servers,
            timeout: self.duration(&raw.timeout, "identity.timeout", d.timeout),
            fresh,
            max_stale,
            not_found_ttl: self.duration_or_zero(&raw.not_found_ttl, "identity.not_found_ttl", d.not_found_ttl),
            error_ttl: self.duration_or_zero(&raw.error_ttl, "identity.error_ttl", d.error_ttl),
            refresh_interval: self.duration(&raw.refresh_interval, "identity.refresh_interval", d.refresh_interval),
            cache_capacity: self.count(&raw.cache_capacity, "identity.cache_capacity", d.cache_capacity),
            allow_test_handles: raw.allow_test_handles,
        }
    }

    pub(super) fn service_auth(&mut self, raw: Option<&RawServiceAuth>) -> ServiceAuthConfig {
        let d = ServiceAuthConfig::default();
        let Some(raw) = raw else { return d };
        let did = raw.did.as_ref().and_then(|s| {
            self.check(s, "service_auth.did", |t| {
                if is_did(t) && !t.contains('#') {
                    Ok(t.clone())
                } else {
                    Err(format!("invalid DID {t:?} (expected e.g. did:web:api.example.com)"))
                }
            })
        });
        let service_id = match &raw.service_id {
            Some(s) => self
                .check(s, "service_auth.service_id", |t| {
                    let t = t.strip_prefix('#').unwrap_or(t);
                    if fragment_ok(t) {
                        Ok(t.to_owned())
                    } else {
                        Err(format!("invalid service id {t:?} (letters, digits, _ and -)"))
                    }
                })
                .unwrap_or(d.service_id.clone()),
            None => d.service_id.clone(),
        };
        let service_type = match &raw.service_type {
            Some(s) => self
                .check(s, "service_auth.service_type", |t| {
                    if fragment_ok(t) { Ok(t.clone()) } else { Err(format!("invalid service type {t:?}")) }
                })
                .unwrap_or(d.service_type.clone()),
            None => d.service_type.clone(),
        };
        let serve = raw.serve_did_document.as_ref().is_some_and(|s| s.value);
        if serve
            && let Some(s) = &raw.serve_did_document
            && !did.as_deref().is_some_and(|d| d.starts_with("did:web:"))
        {
            self.error(Place::of(s), "service_auth.serve_did_document", "needs service_auth.did to be a did:web");
        }
        let max_lifetime = self.duration(&raw.max_lifetime, "service_auth.max_lifetime", d.max_lifetime);
        let without = self.duration(
            &raw.max_lifetime_without_lxm,
            "service_auth.max_lifetime_without_lxm",
            d.max_lifetime_without_lxm,
        );
        for (value, v, field) in [
            (&raw.max_lifetime, max_lifetime, "service_auth.max_lifetime"),
            (&raw.max_lifetime_without_lxm, without, "service_auth.max_lifetime_without_lxm"),
        ] {
            if let Some(s) = value
                && v < Duration::from_secs(60)
            {
                self.error(Place::of(s), field, "must be at least 60s (PDSes mint 60-second tokens)");
            }
        }
        let key_ids = match &raw.key_ids {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    self.check(k, format!("service_auth.key_ids[{i}]"), |t| {
                        let t = t.strip_prefix('#').unwrap_or(t);
                        if fragment_ok(t) { Ok(t.to_owned()) } else { Err(format!("invalid key id {t:?}")) }
                    })
                })
                .collect(),
            None => d.key_ids.clone(),
        };
        ServiceAuthConfig {
            did,
            service_id,
            service_type,
            serve_did_document: serve,
            accept_bare_did_audience: raw.accept_bare_did_audience.unwrap_or(d.accept_bare_did_audience),
            strict_low_s: raw.strict_low_s,
            max_lifetime,
            max_lifetime_without_lxm: without,
            iat_skew: self.duration_or_zero(&raw.iat_skew, "service_auth.iat_skew", d.iat_skew),
            key_ids,
        }
    }

    /// `lxm`, `allow_token_reuse`, `allow_dids`, `deny_dids`, `allow_pds` of a route.
    pub(super) fn route_service(
        &mut self,
        raw: &RawRoute,
        field: &str,
        service_auth: bool,
        dpop: bool,
        oauth_session: bool,
    ) -> (Lxm, bool, PrincipalPolicy) {
        let needs_service = |v: &mut Self, place: Place, name: &str| {
            if !service_auth {
                v.error(
                    place,
                    format!("{field}.{name}"),
                    format!("{name} applies only to routes with auth service_auth"),
                );
            }
        };
        let lxm = match &raw.lxm {
            None => Lxm::FromPath,
            Some(l) => {
                needs_service(self, Place::of(l), "lxm");
                self.check(l, format!("{field}.lxm"), |s| match s.as_str() {
                    "from_path" => Ok(Lxm::FromPath),
                    nsid if is_nsid(nsid) => Ok(Lxm::Fixed(nsid.to_owned())),
                    other => {
                        Err(format!("invalid lxm {other:?} (expected from_path or an NSID like com.example.getThing)"))
                    }
                })
                .unwrap_or(Lxm::FromPath)
            }
        };
        let reuse = match &raw.allow_token_reuse {
            Some(r) => {
                needs_service(self, Place::of(r), "allow_token_reuse");
                r.value
            }
            None => false,
        };
        let dids = |v: &mut Self, list: &[Spanned<String>], name: &str| -> Vec<String> {
            list.iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    v.check(d, format!("{field}.{name}[{i}]"), |t| {
                        // Compared with the canonical DIDs principals carry.
                        crate::identity::canonical(t).map(|c| c.into_owned()).map_err(|e| match e {
                            DidError::NotCanonical => format!("invalid DID {t:?} (did:plc identifiers are lower case)"),
                            _ => format!("invalid DID {t:?}"),
                        })
                    })
                })
                .collect()
        };
        let allow_dids = raw.allow_dids.as_ref().map(|l| dids(self, l, "allow_dids"));
        let deny_dids = dids(self, &raw.deny_dids, "deny_dids");
        let allow_pds = raw.allow_pds.as_ref().map(|list| {
            if let Some(first) = list.first()
                && (dpop || !service_auth)
            {
                self.error(
                    Place::of(first),
                    format!("{field}.allow_pds"),
                    "allow_pds applies only to routes whose auth is service_auth alone (it needs the DID document)",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    self.check(p, format!("{field}.allow_pds[{i}]"), |t| {
                        url::Url::parse(t)
                            .ok()
                            .filter(|u| matches!(u.scheme(), "https" | "http") && u.path() == "/")
                            .map(|u| u.origin().ascii_serialization())
                            .ok_or_else(|| format!("invalid PDS origin {t:?} (expected e.g. https://pds.example.com)"))
                    })
                })
                .collect()
        });
        if (allow_dids.is_some() || !deny_dids.is_empty()) && !service_auth && !dpop && !oauth_session {
            self.error(
                Place::of(&raw.name),
                format!("{field}.allow_dids"),
                "DID lists apply only to authenticated routes",
            );
        }
        (lxm, reuse, PrincipalPolicy { allow_dids, deny_dids, allow_pds })
    }
}

#[cfg(test)]
mod tests {
    use super::is_nsid;

    #[test]
    fn nsids() {
        for ok in ["com.example.getThing", "app.bsky.feed.getFeedSkeleton", "com.atproto.repo.createRecord", "a.b.c"] {
            assert!(is_nsid(ok), "{ok}");
        }
        for bad in [
            "",
            "com.example",
            "com..get",
            "com.example.get-thing",
            "1com.example.x",
            "com.example.1x",
            "com.example.get/x",
        ] {
            assert!(!is_nsid(bad), "{bad}");
        }
    }
}
