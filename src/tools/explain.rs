//! `atgate scope explain`: how each granted scope string parses, and why each check passes
//! or fails. For operators reading a token's `scope` next to a route's `require:`.

use std::fmt::Write as _;

use crate::scope::{Check, Granted, RepoAction, Scope};

/// Parses a check written as words: `repo COLLECTION ACTION`, `rpc LXM AUD`, `blob MIME`,
/// `account ATTR [read|manage]`, `identity ATTR`.
pub fn parse_check(text: &str) -> Result<Check, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let usage = "expected: repo COLLECTION create|update|delete | rpc LXM AUD | blob MIME | account ATTR [read|manage] | identity ATTR";
    Ok(match words.as_slice() {
        ["repo", collection, action] => Check::Repo {
            collection: (*collection).to_owned(),
            action: match *action {
                "create" => RepoAction::Create,
                "update" => RepoAction::Update,
                "delete" => RepoAction::Delete,
                _ => return Err(format!("unknown repo action {action:?}; {usage}")),
            },
        },
        ["rpc", lxm, aud] => Check::Rpc { lxm: (*lxm).to_owned(), aud: (*aud).to_owned() },
        ["blob", mime] => Check::Blob { mime: mime.to_ascii_lowercase() },
        ["account", attr] => Check::Account { attr: (*attr).to_owned(), manage: false },
        ["account", attr, "read"] => Check::Account { attr: (*attr).to_owned(), manage: false },
        ["account", attr, "manage"] => Check::Account { attr: (*attr).to_owned(), manage: true },
        ["identity", attr] => Check::Identity { attr: (*attr).to_owned() },
        _ => return Err(format!("cannot read check {text:?}; {usage}")),
    })
}

/// The explanation, and whether every check passed.
pub fn explain(granted: &str, checks: &[Check]) -> (String, bool) {
    let mut out = String::from("granted:\n");
    let width = granted.split(' ').map(str::len).max().unwrap_or(0).min(60);
    for piece in granted.split(' ') {
        let verdict = match Scope::parse(piece) {
            None if piece.is_empty() => continue,
            None => "invalid: grants nothing".to_owned(),
            Some(s @ Scope::Include { .. }) => {
                format!("{}  (a permission set: grants nothing unexpanded)", s.canonical())
            }
            Some(s) => s.canonical(),
        };
        let _ = writeln!(out, "  {piece:<width$}  -> {verdict}");
    }
    let set = Granted::parse(granted);
    let mut all = true;
    for check in checks {
        let by = set.scopes().iter().find(|s| Granted::single(s).allows(check));
        match by {
            Some(scope) => {
                let _ = writeln!(out, "{check}: allowed by {}", scope.canonical());
            }
            None => {
                all = false;
                let _ = writeln!(out, "{check}: denied; needs {}", check.needed());
            }
        }
    }
    (out, all)
}

/// What a pinned permission set grants for `include:<nsid>[?aud=<aud>]`, one scope a line.
/// Without `pinned_dir` the set is resolved over the network (`_lexicon` DNS, the
/// authority's DID document through `plc_url`, its verified repository record).
pub async fn resolve(
    nsid: &str,
    aud: Option<&str>,
    pinned_dir: Option<&std::path::Path>,
    plc_url: url::Url,
) -> Result<String, String> {
    use crate::scope::permission_set::PermissionSets;
    use crate::scope::resolve::SetResolver;
    let sets = match pinned_dir {
        Some(dir) => {
            let pinned = PermissionSets::load_dir(dir)?;
            if pinned.get(nsid).is_none() {
                return Err(format!("{nsid} is not among the {} pinned sets", pinned.len()));
            }
            SetResolver::new(pinned, None)
        }
        None => {
            let identity = crate::config::IdentityConfig { plc_url, ..Default::default() };
            let net = crate::net::Outbound::new(Default::default());
            SetResolver::new(PermissionSets::default(), Some(crate::identity::Resolver::new(&identity, net)))
        }
    };
    let set = sets.get(nsid).await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    if let Some(title) = &set.title {
        let _ = writeln!(out, "# {nsid}: {title}");
    }
    let granted = set.expand(aud);
    let _ = writeln!(out, "# {} of {} permissions grant scopes", granted.len(), set.permissions.len());
    for scope in granted {
        let _ = writeln!(out, "{}", scope.canonical());
    }
    Ok(out)
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Repo { collection, action } => write!(f, "repo {collection} {}", action.name()),
            Check::Rpc { lxm, aud } => write!(f, "rpc {lxm} {aud}"),
            Check::Blob { mime } => write!(f, "blob {mime}"),
            Check::Account { attr, manage } => write!(f, "account {attr} {}", if *manage { "manage" } else { "read" }),
            Check::Identity { attr } => write!(f, "identity {attr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_grants_and_checks() {
        let checks = [
            parse_check("repo app.example.post create").unwrap(),
            parse_check("blob video/mp4").unwrap(),
            parse_check("rpc com.example.getThing did:web:api.example.com#svc").unwrap(),
        ];
        let (text, all) =
            explain("atproto repo:%E0 repo:app.example.post transition:generic include:app.example.authFull", &checks);
        assert!(all, "{text}");
        assert!(text.contains("repo:%E0") && text.contains("invalid: grants nothing"), "{text}");
        assert!(text.contains("grants nothing unexpanded"), "{text}");
        assert!(text.contains("repo app.example.post create: allowed by repo:app.example.post"), "{text}");
        assert!(text.contains("blob video/mp4: allowed by transition:generic"), "{text}");
        assert!(text.contains("rpc com.example.getThing did:web:api.example.com#svc: allowed by transition:generic"));
        let (text, all) = explain("atproto", &checks[1..2]);
        assert!(!all);
        assert!(text.contains("blob video/mp4: denied; needs blob:video/mp4"), "{text}");
        assert!(parse_check("repo a.b.c read").is_err());
        assert!(parse_check("nothing").is_err());
    }
}
