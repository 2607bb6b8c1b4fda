//! The atproto permission grammar (ATPROTO-AUTH.md §8.1-8.2, §8.5): parsing one scope
//! string into a [`Scope`], and its canonical form.
//!
//! An invalid string is `None`, never an error: it grants nothing.

use std::fmt::Write as _;

use crate::config::is_nsid;

/// `repo` actions, as bits.
pub const CREATE: u8 = 1;
/// See [`CREATE`].
pub const UPDATE: u8 = 2;
/// See [`CREATE`].
pub const DELETE: u8 = 4;
const ALL_REPO_ACTIONS: u8 = CREATE | UPDATE | DELETE;

/// A parsed scope string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `atproto`: required in every atproto token, grants nothing by itself.
    Atproto,
    /// `transition:generic`.
    TransitionGeneric,
    /// `transition:chat.bsky`.
    TransitionChat,
    /// `transition:email`.
    TransitionEmail,
    /// `repo`: collections (sorted, `["*"]` for all) and a set of actions.
    Repo {
        /// Collections, sorted and deduplicated; `*` absorbs the rest.
        collections: Vec<String>,
        /// `CREATE | UPDATE | DELETE` bits; never empty.
        actions: u8,
    },
    /// `rpc`: methods (sorted, `["*"]` for all) at one audience (`*` or `did#frag`).
    Rpc {
        /// Method NSIDs, sorted and deduplicated; `*` absorbs the rest.
        lxm: Vec<String>,
        /// `*` or an atproto DID reference with a fragment.
        aud: String,
    },
    /// `blob`: accepted MIME patterns, lowercased and normalized.
    Blob {
        /// `*/*`, `type/*` or `type/subtype`.
        accept: Vec<String>,
    },
    /// `account`.
    Account {
        /// `email`, `repo` or `status`.
        attr: String,
        /// `read` and/or `manage` (which implies `read`), deduplicated, in the order written
        /// (the reference keeps it in the canonical form); never empty.
        actions: Vec<&'static str>,
    },
    /// `identity`.
    Identity {
        /// `handle` or `*`.
        attr: String,
    },
    /// `include`: a permission set, not matchable until expanded.
    Include {
        /// The set's NSID.
        nsid: String,
        /// The audience its `rpc` permissions inherit.
        aud: Option<String>,
    },
}

/// The resources with parameters, their positional parameter, and their schema order.
struct Resource {
    name: &'static str,
    params: &'static [Param],
}

struct Param {
    name: &'static str,
    multi: bool,
    required: bool,
}

const fn p(name: &'static str, multi: bool, required: bool) -> Param {
    Param { name, multi, required }
}

const RESOURCES: [Resource; 6] = [
    Resource { name: "repo", params: &[p("collection", true, true), p("action", true, false)] },
    Resource { name: "rpc", params: &[p("lxm", true, true), p("aud", false, true)] },
    Resource { name: "blob", params: &[p("accept", true, true)] },
    Resource { name: "account", params: &[p("attr", false, true), p("action", true, false)] },
    Resource { name: "identity", params: &[p("attr", false, true)] },
    Resource { name: "include", params: &[p("nsid", false, true), p("aud", false, false)] },
];

impl Scope {
    /// Parses one scope string; `None` when it is invalid (it then grants nothing).
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "atproto" => return Some(Scope::Atproto),
            "transition:generic" => return Some(Scope::TransitionGeneric),
            "transition:chat.bsky" => return Some(Scope::TransitionChat),
            "transition:email" => return Some(Scope::TransitionEmail),
            _ => {}
        }
        let end = text.find([':', '?']).unwrap_or(text.len());
        let prefix = &text[..end];
        let resource = RESOURCES.iter().find(|r| r.name == prefix)?;
        let rest = &text[end..];
        let (positional, query) = match rest.strip_prefix(':') {
            Some(after) => match after.split_once('?') {
                Some((pos, q)) => (Some(pos), q),
                None => (Some(after), ""),
            },
            None => (None, rest.strip_prefix('?').unwrap_or("")),
        };
        // values[i] holds the values of resource.params[i].
        let mut values: Vec<Vec<String>> = vec![Vec::new(); resource.params.len()];
        if let Some(pos) = positional {
            values[0].push(decode_component(pos)?);
        }
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let i = resource.params.iter().position(|p| p.name == key)?;
            if i == 0 && positional.is_some() {
                return None; // given both positionally and by name
            }
            if !resource.params[i].multi && !values[i].is_empty() {
                return None;
            }
            values[i].push(value.into_owned());
        }
        for (param, v) in resource.params.iter().zip(&values) {
            if param.required && v.is_empty() {
                return None;
            }
        }
        let [first, second, ..] = &mut values[..] else {
            let only = values.pop()?;
            return build(resource.name, only, Vec::new());
        };
        build(resource.name, std::mem::take(first), std::mem::take(second))
    }

    /// The canonical spelling (§8.5).
    pub fn canonical(&self) -> String {
        match self {
            Scope::Atproto => "atproto".into(),
            Scope::TransitionGeneric => "transition:generic".into(),
            Scope::TransitionChat => "transition:chat.bsky".into(),
            Scope::TransitionEmail => "transition:email".into(),
            Scope::Repo { collections, actions } => {
                let actions: Vec<&str> = if *actions == ALL_REPO_ACTIONS {
                    Vec::new()
                } else {
                    [(CREATE, "create"), (UPDATE, "update"), (DELETE, "delete")]
                        .into_iter()
                        .filter(|(bit, _)| actions & bit != 0)
                        .map(|(_, n)| n)
                        .collect()
                };
                render("repo", "collection", collections, &[("action", &actions)])
            }
            Scope::Rpc { lxm, aud } => render("rpc", "lxm", lxm, &[("aud", &[aud.as_str()])]),
            Scope::Blob { accept } => render("blob", "accept", accept, &[]),
            Scope::Account { attr, actions } => {
                let shown: &[&str] = if actions[..] == ["read"] { &[] } else { actions };
                render("account", "attr", std::slice::from_ref(attr), &[("action", shown)])
            }
            Scope::Identity { attr } => render("identity", "attr", std::slice::from_ref(attr), &[]),
            Scope::Include { nsid, aud } => {
                let aud: Vec<&str> = aud.iter().map(String::as_str).collect();
                render("include", "nsid", std::slice::from_ref(nsid), &[("aud", &aud)])
            }
        }
    }
}

pub(crate) fn build(resource: &str, first: Vec<String>, second: Vec<String>) -> Option<Scope> {
    match resource {
        "repo" => {
            let collections = absorb(first, "*", is_nsid)?;
            let mut actions = 0;
            for a in &second {
                actions |= match a.as_str() {
                    "create" => CREATE,
                    "update" => UPDATE,
                    "delete" => DELETE,
                    _ => return None,
                };
            }
            Some(Scope::Repo { collections, actions: if second.is_empty() { ALL_REPO_ACTIONS } else { actions } })
        }
        "rpc" => {
            let lxm = absorb(first, "*", is_nsid)?;
            let aud = second.into_iter().next()?;
            if !(aud == "*" || is_did_reference(&aud)) || (aud == "*" && lxm == ["*"]) {
                return None;
            }
            Some(Scope::Rpc { lxm, aud })
        }
        "blob" => {
            let mut accept: Vec<String> = Vec::new();
            for a in first {
                let a = a.to_ascii_lowercase();
                if !is_mime_pattern(&a) {
                    return None;
                }
                accept.push(a);
            }
            let all = accept.iter().any(|a| a == "*/*");
            let wild: Vec<String> =
                accept.iter().filter_map(|a| a.strip_suffix("/*").map(|t| format!("{t}/"))).collect();
            accept.retain(|a| {
                if all {
                    return a == "*/*";
                }
                a.ends_with("/*") || !wild.iter().any(|t| a.starts_with(t.as_str()))
            });
            accept.sort();
            accept.dedup();
            Some(Scope::Blob { accept })
        }
        "account" => {
            let attr = first.into_iter().next()?;
            if !matches!(attr.as_str(), "email" | "repo" | "status") {
                return None;
            }
            let mut actions: Vec<&'static str> = Vec::new();
            for a in &second {
                let action = match a.as_str() {
                    "read" => "read",
                    "manage" => "manage",
                    _ => return None,
                };
                if !actions.contains(&action) {
                    actions.push(action);
                }
            }
            if actions.is_empty() {
                actions.push("read");
            }
            Some(Scope::Account { attr, actions })
        }
        "identity" => {
            let attr = first.into_iter().next()?;
            matches!(attr.as_str(), "handle" | "*").then_some(Scope::Identity { attr })
        }
        "include" => {
            let nsid = first.into_iter().next()?;
            let aud = second.into_iter().next();
            if !is_nsid(&nsid) || aud.as_deref().is_some_and(|a| !is_did_reference(a)) {
                return None;
            }
            Some(Scope::Include { nsid, aud })
        }
        _ => None,
    }
}

/// Validates each value; deduplicates and sorts; `wildcard` absorbs all others.
fn absorb(values: Vec<String>, wildcard: &str, valid: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    if values.iter().any(|v| v != wildcard && !valid(v)) {
        return None;
    }
    if values.iter().any(|v| v == wildcard) {
        return Some(vec![wildcard.to_owned()]);
    }
    let mut values = values;
    values.sort();
    values.dedup();
    Some(values)
}

/// An absolute atproto DID reference: `did:plc:…#frag` or `did:web:…#frag`, one `#`,
/// the fragment made of RFC 3986 fragment characters. Like the reference
/// (`isAtprotoAudience`), an empty fragment passes; it matches no service anyway.
pub fn is_did_reference(s: &str) -> bool {
    let Some((did, frag)) = s.split_once('#') else { return false };
    let fragment_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    (did.starts_with("did:plc:") || did.starts_with("did:web:"))
        && crate::identity::is_did(did)
        && frag.bytes().all(fragment_char)
        && !fragment_has_bad_escape(frag)
}

/// A `%` not followed by two hex digits.
fn fragment_has_bad_escape(frag: &str) -> bool {
    let b = frag.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    (0..b.len()).any(|i| b[i] == b'%' && !(hex(i + 1) && hex(i + 2)))
}

/// `*/*`, `type/*` or `type/subtype`: one `/`, both sides non-empty, no whitespace, `*`
/// only as the whole `*/*` or a trailing `/*`.
fn is_mime_pattern(s: &str) -> bool {
    if s == "*/*" {
        return true;
    }
    let Some((t, sub)) = s.split_once('/') else { return false };
    let clean = |x: &str| !x.is_empty() && !x.contains(['*', '/']) && !x.chars().any(char::is_whitespace);
    clean(t) && (sub == "*" || clean(sub))
}

/// A concrete MIME type (`type/subtype`, no wildcard).
pub fn is_concrete_mime(s: &str) -> bool {
    is_mime_pattern(s) && !s.contains('*')
}

/// `decodeURIComponent`: `%XX` escapes must form valid UTF-8; `+` stays `+`.
fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `encodeURIComponent`, then `: / + , @ %` unescaped (§8.5).
fn encode_value(s: &str, out: &mut String) {
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-_.!~*'():/+,@%".contains(&b);
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `prefix[:positional][?k=v&...]`: the first parameter goes positional when it has exactly
/// one value; the others follow in schema order.
fn render(prefix: &str, first: &str, firsts: &[impl AsRef<str>], rest: &[(&str, &[&str])]) -> String {
    let mut out = prefix.to_owned();
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let [one] = firsts {
        out.push(':');
        encode_value(one.as_ref(), &mut out);
    } else {
        query.extend(firsts.iter().map(|v| (first, v.as_ref())));
    }
    for (name, values) in rest {
        query.extend(values.iter().map(|v| (*name, *v)));
    }
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        encode_value(v, &mut out);
    }
    out
}
