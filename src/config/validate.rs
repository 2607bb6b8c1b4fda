//! Raw config -> typed `Config`, collecting every error with its place.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{MessageFormatter, Spanned};

use super::raw::{RawConfig, RawLimits, RawRoute, RawUpstream};
use super::{
    AuthMethods, Config, ConfigError, ConfigErrors, FileRef, Limits, LogConfig, Place, ReloadConfig, Requirement,
    Rewrite, RouteConfig, TlsFiles, UpstreamConfig,
};
use crate::router::pattern::{HostPattern, MatchKey, PathPattern};

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let raw = deserialize(text, origin)?;
    let mut v = Validator { origin, errors: Vec::new() };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        v.errors.sort_by_key(|e| (e.place.line, e.place.column));
        Err(ConfigErrors(v.errors))
    }
}

/// YAML -> `RawConfig`. Serde stops at the first error, so this reports one.
fn deserialize(text: &str, origin: &str) -> Result<RawConfig, ConfigErrors> {
    if text.trim().is_empty() {
        return Err(ConfigErrors(vec![ConfigError {
            origin: origin.to_owned(),
            place: Place { line: 1, column: 1 },
            field: String::new(),
            message: "config is empty (expected at least listen, upstreams and routes)".into(),
        }]));
    }
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let err = match result {
        Ok(raw) => return Ok(raw),
        Err(err) => err,
    };
    // `Spanned` adds a `value` level that is not in the file.
    let mut field = path.replace(".value.", ".");
    if let Some(stripped) = field.strip_suffix(".value") {
        field = stripped.to_owned();
    }
    if field == "." || field == "?" {
        field.clear();
    }
    let err = err.without_snippet();
    let join = |field: &str, name: &str| {
        if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") }
    };
    let (field, message) = match err {
        serde_saphyr::Error::SerdeUnknownField { field: name, expected, .. } => (
            // The recorded path already ends in the unknown key.
            match field.strip_suffix(name.as_str()) {
                Some(parent) => join(parent.trim_end_matches('.'), name),
                None => join(&field, name),
            },
            format!("unknown field {name:?} (expected one of: {})", expected.join(", ")),
        ),
        serde_saphyr::Error::SerdeMissingField { field: name, .. } => {
            (join(&field, name), format!("missing required field {name:?}"))
        }
        other => (field, serde_saphyr::UserMessageFormatter.format_message(other).into_owned()),
    };
    Err(ConfigErrors(vec![ConfigError {
        origin: origin.to_owned(),
        place: err.location().map(Place::from).unwrap_or_default(),
        field,
        message,
    }]))
}

pub(super) struct Validator<'a> {
    pub(super) origin: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn error(&mut self, place: Place, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            place,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Runs `check` on a spanned value, recording its error at the value's place.
    pub(super) fn check<T, U>(
        &mut self,
        value: &Spanned<T>,
        field: impl Into<String>,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match check(&value.value) {
            Ok(u) => Some(u),
            Err(message) => {
                // An empty message means "already reported elsewhere".
                if !message.is_empty() {
                    self.error(Place::of(value), field, message);
                }
                None
            }
        }
    }

    pub(super) fn file(&self, value: &Spanned<String>, field: &str) -> FileRef {
        FileRef {
            path: PathBuf::from(&value.value),
            origin: self.origin.to_owned(),
            place: Place::of(value),
            field: field.to_owned(),
        }
    }

    /// A duration that may be zero (tolerances).
    pub(super) fn duration_or_zero(
        &mut self,
        value: &Option<Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        self.check(v, field, |s| super::units::parse_duration(s)).unwrap_or(default)
    }

    /// A count that must be at least 1 (capacities).
    pub(super) fn count(&mut self, value: &Option<Spanned<u64>>, field: &str, default: u64) -> u64 {
        match value {
            Some(n) => self
                .check(n, field, |&n| if n == 0 { Err("must be at least 1".to_owned()) } else { Ok(n) })
                .unwrap_or(default),
            None => default,
        }
    }

    /// A duration that must be positive (timeouts, intervals).
    pub(super) fn duration(&mut self, value: &Option<Spanned<String>>, field: &str, default: Duration) -> Duration {
        let d = self.duration_or_zero(value, field, default);
        match value {
            Some(v) if d.is_zero() => {
                self.error(Place::of(v), field, "must be greater than zero");
                default
            }
            _ => d,
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = match &raw.listen {
            Some(list) if !list.value.0.is_empty() => {
                let place = Place::of(list);
                let mut addrs = Vec::new();
                for (i, a) in list.value.0.iter().enumerate() {
                    match socket_addr(a) {
                        Ok(addr) => addrs.push(addr),
                        Err(message) => self.error(place, format!("listen[{i}]"), message),
                    }
                }
                addrs
            }
            Some(list) => {
                self.error(Place::of(list), "listen", "empty list (omit it for the default 0.0.0.0:8080)");
                Vec::new()
            }
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        };
        let admin_listen = match &raw.admin_listen {
            Some(a) if a.value == "off" => None,
            Some(a) => self.check(a, "admin_listen", |s| socket_addr(s)),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        };
        let public_url = raw.public_url.as_ref().and_then(|u| self.check(u, "public_url", |s| public_url(s)));
        let trusted_proxies: Vec<ipnet::IpNet> = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, c)| self.check(c, format!("trusted_proxies[{i}]"), |s| cidr(s)))
            .collect();
        let trusted_proxy_headers = self.trusted_proxy_headers(raw.trusted_proxy_headers.as_deref());
        let tls = raw
            .tls
            .as_ref()
            .map(|t| TlsFiles { cert: self.file(&t.cert, "tls.cert"), key: self.file(&t.key, "tls.key") });
        let limits = self.limits(&raw.limits);
        let log = LogConfig {
            level: raw.log.level.as_ref().map_or_else(|| "info".to_owned(), |l| l.value.clone()),
            json: match &raw.log.format {
                None => true,
                Some(f) => self
                    .check(f, "log.format", |s| match s.as_str() {
                        "json" => Ok(true),
                        "text" => Ok(false),
                        other => Err(format!("unknown log format {other:?} (expected json or text)")),
                    })
                    .unwrap_or(true),
            },
            otlp: raw.log.otlp.as_ref().and_then(|o| self.otlp(o)),
        };

        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for (name, up) in &raw.upstreams.0 {
            let field = format!("upstreams.{}", name.value);
            if upstreams.iter().any(|u| u.name == name.value) {
                self.error(Place::of(name), &field, format!("duplicate upstream name {:?}", name.value));
            }
            if let Some(u) = self.upstream(&name.value, up, &field) {
                upstreams.push(u);
            }
        }

        let mut routes: Vec<RouteConfig> = Vec::new();
        // Each validated route's place and index in the file (failed routes leave gaps).
        let mut places: Vec<(Place, usize)> = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            if let Some(route) = self.route(&r.value, &field, &upstreams, &raw) {
                if let Some(j) = routes.iter().position(|o| o.name == route.name) {
                    self.error(
                        Place::of(&r.value.name),
                        format!("{field}.name"),
                        format!("duplicate route name {:?} (also routes[{}])", route.name, places[j].1),
                    );
                }
                if let Some(j) = routes.iter().position(|o| o.key.is_ambiguous_with(&route.key)) {
                    self.error(
                        Place::of(&r.value.matches.path),
                        format!("{field}.match"),
                        format!(
                            "route {:?} overlaps route {:?} (line {}) with equal specificity: \
                             give one a host, a more specific path, or disjoint methods",
                            route.name, routes[j].name, places[j].0.line
                        ),
                    );
                }
                routes.push(route);
                places.push((Place::of(r), i));
            }
        }
        if raw.routes.is_empty() {
            self.error(Place { line: 1, column: 1 }, "routes", "no routes (every request would get 404)");
        }

        let dpop = self.dpop(raw.dpop.as_ref());
        let issuers = self.issuers(&raw.issuers);
        let outbound = self.outbound(&raw.outbound);
        let identity_headers = self.identity_headers(&raw.identity_headers);
        let identity = self.identity(&raw.identity);
        let service_auth = self.service_auth(raw.service_auth.as_ref());
        let service_did_written = raw.service_auth.as_ref().is_some_and(|s| s.did.is_some());
        if !service_did_written && let Some((i, r)) = routes.iter().enumerate().find(|(_, r)| r.auth.service_auth) {
            self.error(
                places[i].0,
                format!("routes[{}].auth", places[i].1),
                format!(
                    "route {:?} uses service_auth, which needs service_auth.did (the aud service JWTs name)",
                    r.name
                ),
            );
        }
        let needs_self = |r: &RouteConfig| r.require.iter().any(|q| matches!(q, Requirement::Rpc { aud: None, .. }));
        if !service_did_written && let Some((i, r)) = routes.iter().enumerate().find(|(_, r)| needs_self(r)) {
            self.error(
                places[i].0,
                format!("routes[{}].require.rpc.aud", places[i].1),
                format!("route {:?} requires rpc aud self, which needs service_auth.did", r.name),
            );
        }
        if service_auth.serve_did_document
            && public_url.is_none()
            && let Some(serve) = raw.service_auth.as_ref().and_then(|s| s.serve_did_document.as_ref())
        {
            self.error(
                Place::of(serve),
                "service_auth.serve_did_document",
                "needs public_url (the service endpoint of the DID document)",
            );
        }
        if issuers.is_empty()
            && let Some((i, r)) = routes.iter().enumerate().find(|(_, r)| r.auth.dpop)
        {
            self.error(
                places[i].0,
                format!("routes[{}].auth", places[i].1),
                format!("route {:?} uses dpop but no issuers are configured", r.name),
            );
        }

        let oauth_client = raw.oauth_client.as_ref().map(|o| self.oauth_client(o, public_url.as_ref()));
        if let Some(o) = &oauth_client {
            // atgate answers these paths itself, before the route table.
            let owned = [Some(o.path_prefix.as_str()), o.pds_proxy.as_deref()];
            for (i, r) in routes.iter().enumerate() {
                let literal = r.key.path.literal_prefix();
                let shadowed = owned
                    .iter()
                    .flatten()
                    .find(|p| literal.strip_prefix(**p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')));
                if let Some(p) = shadowed {
                    self.error(
                        places[i].0,
                        format!("routes[{}].match.path", places[i].1),
                        format!("route {:?} is under {p:?}, which the oauth_client serves itself", r.name),
                    );
                }
            }
        }
        if oauth_client.is_none()
            && let Some((i, r)) = routes.iter().enumerate().find(|(_, r)| r.auth.oauth_session)
        {
            self.error(
                places[i].0,
                format!("routes[{}].auth", places[i].1),
                format!("route {:?} uses oauth_session, which needs an oauth_client: section", r.name),
            );
        }

        if public_url.is_none()
            && trusted_proxies.is_empty()
            && let Some((i, r)) = routes.iter().enumerate().find(|(_, r)| r.auth.dpop)
        {
            self.error(
                places[i].0,
                format!("routes[{}].auth", places[i].1),
                format!(
                    "route {:?} uses dpop, which needs the external URL for DPoP htu checks: set public_url (or trusted_proxies that send X-Forwarded-Host)",
                    r.name
                ),
            );
        }

        Config {
            listen,
            admin_listen,
            public_url,
            trusted_proxies,
            trusted_proxy_headers,
            tls,
            limits,
            via: raw.via,
            log,
            upstreams,
            routes,
            dpop,
            issuers,
            outbound,
            identity_headers,
            identity,
            service_auth,
            permission_sets: raw
                .permission_sets
                .as_ref()
                .map(|p| self.file(&p.pinned_dir, "permission_sets.pinned_dir")),
            app_password: self.app_password(&raw.app_password),
            replay: self.replay(raw.replay.as_ref()),
            reload: ReloadConfig {
                watch: raw.reload.watch.unwrap_or(true),
                interval: self.duration(&raw.reload.interval, "reload.interval", Duration::from_secs(2)),
            },
            assertion: self.assertion(&raw.assertion),
            oauth_client,
        }
    }

    fn otlp(&mut self, raw: &Spanned<super::raw::RawOtlp>) -> Option<super::OtlpConfig> {
        if !cfg!(feature = "otlp") {
            self.error(
                Place::of(raw),
                "log.otlp",
                "this atgate was built without OpenTelemetry export (cargo build --features otlp)",
            );
            return None;
        }
        let o = &raw.value;
        let endpoint = self.check(&o.endpoint, "log.otlp.endpoint", |s| match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
            _ => Err(format!("invalid endpoint {s:?} (expected http(s)://host:4318/v1/traces)")),
        });
        let sample_ratio = match &o.sample_ratio {
            Some(r) => self.check(r, "log.otlp.sample_ratio", |&r| {
                if (0.0..=1.0).contains(&r) { Ok(r) } else { Err("must be between 0 and 1".to_owned()) }
            })?,
            None => 1.0,
        };
        Some(super::OtlpConfig {
            endpoint: endpoint?,
            service_name: o.service_name.as_ref().map_or_else(|| "atgate".to_owned(), |s| s.value.clone()),
            sample_ratio,
        })
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let d = Limits::default();
        let size = |v: &mut Self, value: &Option<Spanned<String>>, field: &str, default: u64| match value {
            Some(s) => v.check(s, field, |t| super::units::parse_size(t)).unwrap_or(default),
            None => default,
        };
        Limits {
            max_body: size(self, &raw.max_body, "limits.max_body", d.max_body),
            max_header_bytes: size(self, &raw.max_header_bytes, "limits.max_header_bytes", d.max_header_bytes),
            header_timeout: self.duration(&raw.header_timeout, "limits.header_timeout", d.header_timeout),
            request_timeout: self.duration(&raw.request_timeout, "limits.request_timeout", d.request_timeout),
            max_concurrent_requests: match &raw.max_concurrent_requests {
                Some(n) => self
                    .check(n, "limits.max_concurrent_requests", |&n| match n {
                        1..=1_000_000 => Ok(n as usize),
                        _ => Err(format!("{n} is out of range (1 to 1000000)")),
                    })
                    .unwrap_or(d.max_concurrent_requests),
                None => d.max_concurrent_requests,
            },
            shutdown_timeout: self.duration(&raw.shutdown_timeout, "limits.shutdown_timeout", d.shutdown_timeout),
        }
    }

    fn upstream(&mut self, name: &str, raw: &RawUpstream, field: &str) -> Option<UpstreamConfig> {
        let url = self.check(&raw.url, format!("{field}.url"), |s| upstream_url(s))?;
        Some(UpstreamConfig {
            name: name.to_owned(),
            scheme: url.0,
            authority: url.1,
            base_path: url.2,
            timeout: self.duration(&raw.timeout, &format!("{field}.timeout"), Duration::from_secs(30)),
            connect_timeout: self.duration(
                &raw.connect_timeout,
                &format!("{field}.connect_timeout"),
                Duration::from_secs(5),
            ),
            preserve_host: raw.preserve_host,
            ca_file: raw
                .tls
                .as_ref()
                .and_then(|t| t.ca_file.as_ref())
                .map(|f| self.file(f, &format!("{field}.tls.ca_file"))),
        })
    }

    fn route(
        &mut self,
        raw: &RawRoute,
        field: &str,
        upstreams: &[UpstreamConfig],
        all: &RawConfig,
    ) -> Option<RouteConfig> {
        let name = self.check(&raw.name, format!("{field}.name"), |s| route_name(s));
        let host = match &raw.matches.host {
            Some(h) => Some(self.check(h, format!("{field}.match.host"), |s| HostPattern::parse(s))?),
            None => None,
        };
        let path = self.check(&raw.matches.path, format!("{field}.match.path"), |s| PathPattern::parse(s));
        let methods = raw.matches.methods.as_ref().map(|ms| {
            ms.iter()
                .enumerate()
                .filter_map(|(i, m)| self.check(m, format!("{field}.match.methods[{i}]"), |s| method(s)))
                .collect::<Vec<_>>()
        });
        if let Some(ms) = &raw.matches.methods
            && ms.is_empty()
        {
            self.error(
                Place::of(&raw.name),
                format!("{field}.match.methods"),
                "empty list (omit it to allow every method)",
            );
        }
        let upstream = self.check(&raw.upstream, format!("{field}.upstream"), |s| {
            upstreams.iter().position(|u| &u.name == s).ok_or_else(|| {
                if all.upstreams.0.iter().any(|(n, _)| &n.value == s) {
                    // Defined but invalid: its own error says why.
                    return String::new();
                }
                let known: Vec<&str> = all.upstreams.0.iter().map(|(n, _)| n.value.as_str()).collect();
                format!(
                    "unknown upstream {s:?} (defined: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                )
            })
        });
        let auth = self.check(&raw.auth, format!("{field}.auth"), |list| {
            let mut methods = AuthMethods::default();
            let public = list.0.iter().any(|m| m == "none");
            for m in &list.0 {
                match m.as_str() {
                    "none" => {}
                    "dpop" => methods.dpop = true,
                    "service_auth" => methods.service_auth = true,
                    "app_password" => methods.app_password = true,
                    "oauth_session" => methods.oauth_session = true,
                    other => {
                        return Err(format!(
                            "unknown auth method {other:?} (expected: none, dpop, service_auth, app_password or oauth_session)"
                        ));
                    }
                }
            }
            if list.0.is_empty() || (public && !methods.is_public()) {
                return Err("auth is none, or a list of dpop, service_auth, app_password and oauth_session".to_owned());
            }
            Ok(methods)
        });
        let kinds = auth.unwrap_or_default();
        let (lxm, allow_token_reuse, policy) =
            self.route_service(raw, field, kinds.service_auth, kinds.dpop, kinds.oauth_session);
        let inject_handle = match &raw.inject_handle {
            Some(h) if h.value && kinds.is_public() => {
                self.error(Place::of(h), format!("{field}.inject_handle"), "a public route has no principal");
                false
            }
            Some(h) => h.value,
            None => false,
        };
        let require = self.require(raw.require.as_ref(), field, kinds, &lxm);
        let forward_pds_session = match &raw.forward_pds_session {
            Some(f) if f.value && !kinds.app_password => {
                self.error(Place::of(f), format!("{field}.forward_pds_session"), "applies only to app_password routes");
                false
            }
            Some(f) => f.value,
            None => false,
        };
        let rate_limits = self.rate_limits(&raw.rate_limits, field, kinds);
        let assertion = match &raw.assertion {
            Some(a) if a.value && kinds.is_public() => {
                self.error(Place::of(a), format!("{field}.assertion"), "a public route has no principal to assert");
                false
            }
            Some(a) => a.value,
            None => false,
        };
        let upgrades = self.upgrades(raw.upgrades.as_deref(), field);
        let path = path?;
        let rewrite = self.rewrite(raw, field, &path);
        Some(RouteConfig {
            name: name?,
            key: MatchKey { host, path, methods },
            upstream: upstream?,
            auth: auth?,
            forward_credentials: raw.forward_credentials,
            lxm,
            allow_token_reuse,
            inject_handle,
            policy,
            require,
            forward_pds_session,
            rewrite: rewrite.ok()?,
            rate_limits,
            assertion,
            upgrades,
        })
    }

    /// `trusted_proxy_headers`: header names, replacing the default list when given.
    fn trusted_proxy_headers(&mut self, raw: Option<&[Spanned<String>]>) -> Vec<http::HeaderName> {
        let Some(list) = raw else {
            return super::DEFAULT_TRUSTED_PROXY_HEADERS.iter().map(|n| http::HeaderName::from_static(n)).collect();
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, n)| {
                self.check(n, format!("trusted_proxy_headers[{i}]"), |s| {
                    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name {s:?}"))
                })
            })
            .collect()
    }

    /// `routes[i].upgrades`: protocol names (RFC 9110 §7.8 tokens, compared in lower case).
    fn upgrades(&mut self, raw: Option<&[Spanned<String>]>, field: &str) -> Vec<String> {
        let Some(list) = raw else {
            return vec!["websocket".to_owned()];
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| {
                self.check(p, format!("{field}.upgrades[{i}]"), |s| {
                    let lower = s.to_ascii_lowercase();
                    if lower == "h2c" {
                        // atgate speaks HTTP/1.1 to upstreams and serves h2 itself; an h2c
                        // tunnel would carry requests no stage has seen.
                        Err("h2c is never tunnelled (atgate serves HTTP/2 itself and speaks HTTP/1.1 to upstreams): remove it".to_owned())
                    } else if lower.is_empty() || !lower.bytes().all(is_tchar) {
                        Err(format!("invalid protocol {s:?} (expected a name such as websocket)"))
                    } else {
                        Ok(lower)
                    }
                })
            })
            .collect()
    }

    fn rewrite(&mut self, raw: &RawRoute, field: &str, path: &PathPattern) -> Result<Option<Rewrite>, ()> {
        match (&raw.strip_prefix, &raw.rewrite) {
            (None, None) => Ok(None),
            (Some(_), Some(r)) => {
                self.error(Place::of(r), format!("{field}.rewrite"), "strip_prefix and rewrite cannot both be set");
                Err(())
            }
            (Some(s), None) => self
                .check(s, format!("{field}.strip_prefix"), |p| {
                    if !p.starts_with('/') || p.len() < 2 {
                        Err(format!("invalid prefix {p:?} (must start with / and not be / alone)"))
                    } else if !path.literal_prefix().starts_with(p.as_str()) {
                        Err(format!("{p:?} is not a prefix of the route's path {:?}", path.as_str()))
                    } else {
                        Ok(Some(Rewrite::StripPrefix(p.clone())))
                    }
                })
                .ok_or(()),
            (None, Some(r)) => self
                .check(r, format!("{field}.rewrite"), |w| {
                    if !w.starts_with('/') {
                        return Err(format!("invalid rewrite {w:?} (must start with /)"));
                    }
                    match path {
                        PathPattern::Glob(_) => Err("rewrite needs an exact or prefix path, not a glob".into()),
                        PathPattern::Prefix(_) if !w.ends_with('/') => {
                            Err(format!("rewrite {w:?} must end with / like the route's prefix"))
                        }
                        _ => Ok(Some(Rewrite::Replace { matched: path.as_str().to_owned(), with: w.clone() })),
                    }
                })
                .ok_or(()),
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("invalid address {s:?} (expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8443)"))
}

fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("invalid CIDR {s:?} (expected e.g. 10.0.0.0/8, fd00::/8 or 192.0.2.7)"))
}

fn public_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(format!("invalid public URL {s:?} (expected http(s)://host[:port])"));
    }
    if u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(format!("public_url {s:?} must be an origin: no path, query, fragment or credentials"));
    }
    Ok(u)
}

fn upstream_url(s: &str) -> Result<(http::uri::Scheme, http::uri::Authority, String), String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("invalid URL {s:?}"))?;
    let scheme = uri.scheme().cloned().filter(|sc| sc == &http::uri::Scheme::HTTP || sc == &http::uri::Scheme::HTTPS);
    let (Some(scheme), Some(authority)) = (scheme, uri.authority().cloned()) else {
        return Err(format!("invalid upstream URL {s:?} (expected http://host:port or https://host[:port][/base])"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("upstream URL {s:?} must not contain credentials"));
    }
    if uri.query().is_some() {
        return Err(format!("upstream URL {s:?} must not have a query"));
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base))
}

fn route_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid route name {s:?} (1-64 characters: letters, digits, - _ .)"))
    }
}

fn method(s: &str) -> Result<http::Method, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    match http::Method::from_bytes(s.as_bytes()) {
        Ok(m) if ok => Ok(m),
        _ => Err(format!("invalid method {s:?} (expected an upper-case HTTP method like GET or POST)")),
    }
}
