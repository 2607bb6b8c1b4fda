//! Validation of `routes[i].require`: the permissions a route needs, checkable for every
//! credential kind the route accepts (ATPROTO-AUTH.md §8.6).

use serde_saphyr::Spanned;

use super::raw::RawRequire;
use super::service::is_nsid;
use super::validate::Validator;
use super::{AuthMethods, Lxm, Place, Requirement, Source};
use crate::scope::parse::{is_concrete_mime, is_did_reference};
use crate::scope::{RepoAction, Scope};

impl Validator<'_> {
    pub(super) fn require(
        &mut self,
        raw: Option<&Spanned<RawRequire>>,
        field: &str,
        auth: AuthMethods,
        route_lxm: &Lxm,
    ) -> Vec<Requirement> {
        let Some(raw) = raw else { return Vec::new() };
        let field = format!("{field}.require");
        if auth.is_public() {
            self.error(Place::of(raw), &field, "a public route has no principal to require anything of");
            return Vec::new();
        }
        let raw = &raw.value;
        let mut out = Vec::new();
        // Service JWTs carry no scopes: their `lxm` and `aud` are all there is to check
        // (the PDS enforced the user's scopes when it minted the token).
        let service_only = |v: &mut Self, place: Place, what: &str| {
            if auth.service_auth {
                v.error(
                    place,
                    format!("{field}.{what}"),
                    format!("{what} cannot be checked for service_auth (a service JWT carries no scopes; only require.rpc can be)"),
                );
            }
        };
        if let Some(rpc) = &raw.rpc {
            let lxm = match &rpc.value.lxm {
                None => Lxm::FromPath,
                Some(l) => self
                    .check(l, format!("{field}.rpc.lxm"), |s| match s.as_str() {
                        "from_path" => Ok(Lxm::FromPath),
                        n if is_nsid(n) => Ok(Lxm::Fixed(n.to_owned())),
                        other => Err(format!("invalid lxm {other:?} (expected from_path or an NSID)")),
                    })
                    .unwrap_or(Lxm::FromPath),
            };
            let aud = match &rpc.value.aud {
                None => None,
                Some(a) => self
                    .check(a, format!("{field}.rpc.aud"), |s| match s.as_str() {
                        "self" => Ok(None),
                        r if is_did_reference(r) && !r.ends_with('#') => Ok(Some(r.to_owned())),
                        other => Err(format!(
                            "invalid aud {other:?} (expected self or a DID reference like did:web:api.example.com#svc)"
                        )),
                    })
                    .unwrap_or(None),
            };
            if auth.service_auth && (aud.is_some() || lxm != *route_lxm) {
                self.error(
                    Place::of(rpc),
                    format!("{field}.rpc"),
                    "on a service_auth route, require.rpc must name the route's own lxm and aud self (that is what a service JWT proves)",
                );
            }
            out.push(Requirement::Rpc { lxm, aud });
        }
        if let Some(repo) = &raw.repo {
            service_only(self, Place::of(repo), "repo");
            let collection = match &repo.value.collection {
                None => Source::Request,
                Some(c) => self
                    .check(c, format!("{field}.repo.collection"), |s| match s.as_str() {
                        "from_request" => Ok(Source::Request),
                        n if is_nsid(n) => Ok(Source::Fixed(n.to_owned())),
                        other => Err(format!("invalid collection {other:?} (expected from_request or an NSID)")),
                    })
                    .unwrap_or(Source::Request),
            };
            let action = match &repo.value.action {
                None => Source::Request,
                Some(a) => self
                    .check(a, format!("{field}.repo.action"), |s| match s.as_str() {
                        "from_request" => Ok(Source::Request),
                        "create" => Ok(Source::Fixed(RepoAction::Create)),
                        "update" => Ok(Source::Fixed(RepoAction::Update)),
                        "delete" => Ok(Source::Fixed(RepoAction::Delete)),
                        other => {
                            Err(format!("invalid action {other:?} (expected from_request, create, update or delete)"))
                        }
                    })
                    .unwrap_or(Source::Request),
            };
            out.push(Requirement::Repo { collection, action });
        }
        if let Some(blob) = &raw.blob {
            service_only(self, Place::of(blob), "blob");
            let mime = match &blob.value.mime {
                None => Source::Request,
                Some(m) => self
                    .check(m, format!("{field}.blob.mime"), |s| match s.as_str() {
                        "from_content_type" => Ok(Source::Request),
                        m if is_concrete_mime(&m.to_ascii_lowercase()) => Ok(Source::Fixed(m.to_ascii_lowercase())),
                        other => {
                            Err(format!("invalid mime {other:?} (expected from_content_type or a type like image/png)"))
                        }
                    })
                    .unwrap_or(Source::Request),
            };
            out.push(Requirement::Blob { mime });
        }
        if let Some(account) = &raw.account {
            service_only(self, Place::of(account), "account");
            let attr = self.check(&account.value.attr, format!("{field}.account.attr"), |s| {
                if matches!(s.as_str(), "email" | "repo" | "status") {
                    Ok(s.clone())
                } else {
                    Err(format!("invalid attr {s:?} (expected email, repo or status)"))
                }
            });
            let manage = match &account.value.action {
                None => Some(false),
                Some(a) => self.check(a, format!("{field}.account.action"), |s| match s.as_str() {
                    "read" => Ok(false),
                    "manage" => Ok(true),
                    other => Err(format!("invalid action {other:?} (expected read or manage)")),
                }),
            };
            if let (Some(attr), Some(manage)) = (attr, manage) {
                out.push(Requirement::Account { attr, manage });
            }
        }
        if let Some(identity) = &raw.identity {
            service_only(self, Place::of(identity), "identity");
            if let Some(attr) = self.check(&identity.value.attr, format!("{field}.identity.attr"), |s| {
                if matches!(s.as_str(), "handle" | "*") {
                    Ok(s.clone())
                } else {
                    Err(format!("invalid attr {s:?} (expected handle or *)"))
                }
            }) {
                out.push(Requirement::Identity { attr });
            }
        }
        if let Some(include) = &raw.include {
            service_only(self, Place::of(include), "include");
            let parsed = self.check(include, format!("{field}.include"), |text| {
                let written = if text.starts_with("include:") { text.clone() } else { format!("include:{text}") };
                match Scope::parse(&written) {
                    Some(Scope::Include { nsid, aud }) => Ok(Requirement::Include { nsid, aud }),
                    _ => Err(format!("invalid permission set {text:?} (expected NSID or NSID?aud=did:web:...%23svc)")),
                }
            });
            out.extend(parsed);
        }
        for (i, s) in raw.scopes.iter().enumerate() {
            service_only(self, Place::of(s), "scopes");
            let parsed = self.check(s, format!("{field}.scopes[{i}]"), |text| match Scope::parse(text) {
                Some(Scope::Include { .. }) => Err("write permission sets as require.include".to_owned()),
                Some(scope) => Ok(scope),
                None => Err(format!("invalid scope {text:?}")),
            });
            if let Some(scope) = parsed {
                out.push(Requirement::Scope(scope));
            }
        }
        out
    }
}
