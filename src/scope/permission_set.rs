//! Permission sets (ATPROTO-AUTH.md §9): a lexicon document of `type: permission-set`,
//! and its expansion into granular scopes for an `include:NSID[?aud=...]` (§9.3).
//!
//! Two levels of rejection, as in the reference: a document that fails the lexicon schema
//! (`lexicon.rs`: a non-`permission` entry, an object-valued parameter, a bad `title:lang`,
//! a second `permission-set` def, ...) is no set at all and grants nothing; a valid
//! document's permission with an unknown parameter or a bad value is dropped alone at
//! expansion.
//!
//! Sets come from a directory of pinned lexicon JSON files (`permission_sets.pinned_dir`)
//! or are resolved over the network (`resolve.rs`); both go through `from_lexicon`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::Scope;
use super::lexicon::{LexiconError, validate_document};
use super::parse::build;

/// A parsed permission set: its NSID and its `permissions` entries, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionSet {
    /// The lexicon `id`.
    pub nsid: String,
    /// `defs.main.permissions`, as written.
    pub permissions: Vec<Value>,
    /// `defs.main.title`, if any.
    pub title: Option<String>,
}

/// Why a lexicon document is not a usable permission set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The document fails the lexicon schema; the reference rejects it whole.
    #[error("invalid lexicon document: {0}")]
    Invalid(LexiconError),
    /// `defs.main.type` is not `permission-set` (or there is no `defs.main`).
    #[error("Lexicon document is not a permission set")]
    NotPermissionSet,
}

impl PermissionSet {
    /// Reads a lexicon document (the record's value, or the bare lexicon JSON), validated
    /// whole first (§9.2 step 3), then `defs.main` must be the set (step 4).
    pub fn from_lexicon(doc: &Value) -> Result<PermissionSet, SetError> {
        validate_document(doc).map_err(SetError::Invalid)?;
        let main = doc.pointer("/defs/main").filter(|m| m["type"] == "permission-set");
        let (Some(main), Some(Value::String(nsid))) = (main, doc.get("id")) else {
            return Err(SetError::NotPermissionSet);
        };
        // Validated: `permissions` is an array of permission objects.
        let permissions = main["permissions"].as_array().cloned().unwrap_or_default();
        let title = main.get("title").and_then(Value::as_str).map(str::to_owned);
        Ok(PermissionSet { nsid: nsid.clone(), permissions, title })
    }

    /// The scopes `include:<nsid>[?aud=<aud>]` grants (§9.3), in the set's order. Entries
    /// that break a rule are dropped one by one, never the whole set.
    pub fn expand(&self, aud: Option<&str>) -> Vec<Scope> {
        // The namespace the set may grant: its NSID up to and including the last `.`.
        let group = &self.nsid[..=self.nsid.rfind('.').unwrap_or(0)];
        let in_group = |v: &String| v.len() > group.len() && v.starts_with(group);
        self.permissions.iter().filter_map(|p| expand_one(p, aud, &in_group)).collect()
    }
}

fn expand_one(p: &Value, include_aud: Option<&str>, in_group: &dyn Fn(&String) -> bool) -> Option<Scope> {
    let obj = p.as_object()?;
    if obj.get("type").and_then(Value::as_str) != Some("permission") {
        return None;
    }
    let resource = obj.get("resource").and_then(Value::as_str)?;
    let params: Vec<(&str, &Value)> =
        obj.iter().filter(|(k, _)| *k != "type" && *k != "resource").map(|(k, v)| (k.as_str(), v)).collect();
    // A list parameter (`collection`, `action`, `lxm`) is a non-empty array, never a bare
    // string: the reference parser's `getMulti` refuses a scalar and an empty list
    // (`@atproto/oauth-scopes` `dist/lib/parser.js`), which drops the permission.
    let strings = |v: &Value| -> Option<Vec<String>> {
        let list = v.as_array().filter(|a| !a.is_empty())?;
        list.iter().map(|x| x.as_str().map(str::to_owned)).collect()
    };
    match resource {
        "repo" => {
            let (mut collections, mut actions) = (None, Vec::new());
            for (k, v) in params {
                match k {
                    "collection" => collections = Some(strings(v)?),
                    "action" => actions = strings(v)?,
                    _ => return None,
                }
            }
            let collections = collections?;
            if !collections.iter().all(in_group) {
                return None;
            }
            build("repo", collections, actions)
        }
        "rpc" => {
            let (mut lxm, mut aud, mut inherit) = (None, None, None);
            for (k, v) in params {
                match k {
                    "lxm" => lxm = Some(strings(v)?),
                    "aud" => aud = Some(v.as_str()?.to_owned()),
                    "inheritAud" => inherit = Some(v.as_bool()?),
                    _ => return None,
                }
            }
            let lxm = lxm?;
            if !lxm.iter().all(in_group) {
                return None;
            }
            let aud = match (aud.as_deref(), inherit, include_aud) {
                (Some("*"), None, _) => "*".to_owned(),
                (None, Some(true), Some(parent)) => parent.to_owned(),
                _ => return None,
            };
            build("rpc", lxm, vec![aud])
        }
        // blob, account, identity and anything else are not granted through sets.
        _ => None,
    }
}

/// Permission sets by NSID, from pinned files.
#[derive(Debug, Clone, Default)]
pub struct PermissionSets {
    sets: HashMap<String, PermissionSet>,
}

impl PermissionSets {
    /// Reads every `*.json` lexicon file of a directory; the error names the file.
    pub fn load_dir(dir: &Path) -> Result<PermissionSets, String> {
        let mut sets = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.iter().filter(|p| p.extension().is_some_and(|x| x == "json")) {
            let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let doc: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            let set = PermissionSet::from_lexicon(&doc).map_err(|e| format!("{}: {e}", path.display()))?;
            if sets.insert(set.nsid.clone(), set).is_some() {
                return Err(format!("{}: a second file for the same permission set", path.display()));
            }
        }
        Ok(PermissionSets { sets })
    }

    /// A set from a list (tests, embedding).
    pub fn from_sets(list: impl IntoIterator<Item = PermissionSet>) -> PermissionSets {
        PermissionSets { sets: list.into_iter().map(|s| (s.nsid.clone(), s)).collect() }
    }

    /// The set named `nsid`.
    pub fn get(&self, nsid: &str) -> Option<&PermissionSet> {
        self.sets.get(nsid)
    }

    /// How many sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// ATPROTO-AUTH.md 15.9.
    fn auth_basic() -> PermissionSet {
        let p = |v: Value| {
            let mut v = v;
            v["type"] = json!("permission");
            v
        };
        PermissionSet::from_lexicon(&json!({
            "lexicon": 1,
            "id": "app.example.authBasic",
            "defs": {"main": {"type": "permission-set", "title": "Basic", "permissions": [
                p(json!({"resource": "repo", "collection": ["app.example.post"]})),
                p(json!({"resource": "repo", "collection": ["app.example.like"], "action": ["delete"]})),
                p(json!({"resource": "repo", "collection": ["app.example.sub.thing", "app.example.post"]})),
                p(json!({"resource": "repo", "collection": ["app.other.post"]})),
                p(json!({"resource": "repo", "collection": ["*"]})),
                p(json!({"resource": "repo", "collection": ["app.example.post"], "foo": "bar"})),
                p(json!({"resource": "rpc", "inheritAud": true, "lxm": ["app.example.getFeed", "app.example.getProfile"]})),
                p(json!({"resource": "rpc", "aud": "*", "lxm": ["app.example.getFeedSkeleton"]})),
                p(json!({"resource": "rpc", "aud": "did:web:x.example.com#svc", "lxm": ["app.example.fixed"]})),
                p(json!({"resource": "rpc", "inheritAud": true, "aud": "*", "lxm": ["app.example.both"]})),
                p(json!({"resource": "rpc", "lxm": ["app.example.noAud"]})),
                p(json!({"resource": "blob", "accept": ["*/*"]})),
                p(json!({"resource": "account", "attr": "email"})),
            ]}}
        }))
        .unwrap()
    }

    #[test]
    fn spec_expansion() {
        let set = auth_basic();
        let canonical = |aud| set.expand(aud).iter().map(Scope::canonical).collect::<Vec<_>>();
        assert_eq!(
            canonical(None),
            [
                "repo:app.example.post",
                "repo:app.example.like?action=delete",
                "repo?collection=app.example.post&collection=app.example.sub.thing",
                "rpc:app.example.getFeedSkeleton?aud=*",
            ]
        );
        assert_eq!(
            canonical(Some("did:web:api.example.com#svc_appview")),
            [
                "repo:app.example.post",
                "repo:app.example.like?action=delete",
                "repo?collection=app.example.post&collection=app.example.sub.thing",
                "rpc?lxm=app.example.getFeed&lxm=app.example.getProfile&aud=did:web:api.example.com%23svc_appview",
                "rpc:app.example.getFeedSkeleton?aud=*",
            ]
        );
    }

    #[test]
    fn documents_that_are_not_sets() {
        let base = json!({"lexicon": 1, "id": "app.example.thing", "defs": {"main": {"type": "query"}}});
        assert_eq!(PermissionSet::from_lexicon(&base).unwrap_err(), SetError::NotPermissionSet);
        assert!(PermissionSet::from_lexicon(&json!({"lexicon": 2})).is_err());
        assert!(PermissionSet::from_lexicon(&json!({"lexicon": 1, "id": "app.example"})).is_err());
        let no_list = json!({"lexicon": 1, "id": "a.b.c", "defs": {"main": {"type": "permission-set"}}});
        assert!(PermissionSet::from_lexicon(&no_list).is_err());
    }
}
