//! Granular atproto permissions (ATPROTO-AUTH.md §8): the scope grammar, canonical form,
//! and matching a request against a granted scope set with the transitional overrides.

pub mod lexicon;
pub mod parse;
pub mod permission_set;
pub mod repo;
pub mod resolve;
pub mod stage;

pub use parse::{CREATE, DELETE, Scope, UPDATE};

/// A `repo` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoAction {
    /// `create`.
    Create,
    /// `update`.
    Update,
    /// `delete`.
    Delete,
}

impl RepoAction {
    fn bit(self) -> u8 {
        match self {
            RepoAction::Create => CREATE,
            RepoAction::Update => UPDATE,
            RepoAction::Delete => DELETE,
        }
    }

    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            RepoAction::Create => "create",
            RepoAction::Update => "update",
            RepoAction::Delete => "delete",
        }
    }
}

/// One permission a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Write `action` into `collection`.
    Repo {
        /// The collection NSID.
        collection: String,
        /// The write.
        action: RepoAction,
    },
    /// Call method `lxm` at service `aud` (`did#frag`).
    Rpc {
        /// The method NSID.
        lxm: String,
        /// The service reference.
        aud: String,
    },
    /// Upload a blob of this (concrete, lowercased) MIME type.
    Blob {
        /// `type/subtype`.
        mime: String,
    },
    /// Read or manage an account attribute.
    Account {
        /// `email`, `repo` or `status`.
        attr: String,
        /// `manage` rather than `read`.
        manage: bool,
    },
    /// Change an identity attribute (`handle`, or `*` for all).
    Identity {
        /// The attribute.
        attr: String,
    },
}

impl Check {
    /// The scope that would grant exactly this (§8.5), for 403 messages.
    pub fn needed(&self) -> String {
        match self {
            Check::Repo { collection, action } => {
                Scope::Repo { collections: vec![collection.clone()], actions: action.bit() }.canonical()
            }
            Check::Rpc { lxm, aud } => Scope::Rpc { lxm: vec![lxm.clone()], aud: aud.clone() }.canonical(),
            Check::Blob { mime } => Scope::Blob { accept: vec![mime.clone()] }.canonical(),
            Check::Account { attr, manage } => {
                let action = if *manage { "manage" } else { "read" };
                Scope::Account { attr: attr.clone(), actions: vec![action] }.canonical()
            }
            Check::Identity { attr } => Scope::Identity { attr: attr.clone() }.canonical(),
        }
    }

    /// The resource name, for metric labels.
    pub fn resource(&self) -> &'static str {
        match self {
            Check::Repo { .. } => "repo",
            Check::Rpc { .. } => "rpc",
            Check::Blob { .. } => "blob",
            Check::Account { .. } => "account",
            Check::Identity { .. } => "identity",
        }
    }
}

impl Scope {
    /// Whether this scope grants `check` on its own (no transitional overrides).
    pub fn allows(&self, check: &Check) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        match (self, check) {
            (Scope::Repo { collections, actions }, Check::Repo { collection, action }) => {
                actions & action.bit() != 0 && has(collections, collection)
            }
            (Scope::Rpc { lxm, aud: granted }, Check::Rpc { lxm: method, aud }) => {
                (granted == "*" || granted == aud) && has(lxm, method)
            }
            (Scope::Blob { accept }, Check::Blob { mime }) => {
                parse::is_concrete_mime(mime)
                    && accept
                        .iter()
                        .any(|a| a == "*/*" || a == mime || a.strip_suffix('*').is_some_and(|t| mime.starts_with(t)))
            }
            (Scope::Account { attr, actions }, Check::Account { attr: wanted, manage: wants_manage }) => {
                attr == wanted && (actions.contains(&"manage") || !wants_manage)
            }
            (Scope::Identity { attr }, Check::Identity { attr: wanted }) => attr == "*" || attr == wanted,
            _ => false,
        }
    }
}

/// A token's granted scopes, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    scopes: Vec<Scope>,
}

impl Granted {
    /// Parses a space-separated `scope` claim; invalid pieces are dropped (they grant nothing).
    pub fn parse(claim: &str) -> Granted {
        Granted { scopes: claim.split(' ').filter_map(Scope::parse).collect() }
    }

    /// The valid scopes.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Adds what each `include:` scope grants (§9.3), from pinned or resolved sets; a set
    /// that cannot be had grants nothing (logged by the resolver).
    pub async fn expand_includes(&mut self, sets: &resolve::SetResolver) {
        let mut added = Vec::new();
        for scope in &self.scopes {
            if let Scope::Include { nsid, aud } = scope
                && let Ok(set) = sets.get(nsid).await
            {
                added.extend(set.expand(aud.as_deref()));
            }
        }
        self.scopes.extend(added);
    }

    /// A set of one scope.
    pub fn single(scope: &Scope) -> Granted {
        Granted { scopes: vec![scope.clone()] }
    }

    /// Whether the set allows `check`, with the transitional scopes of §8.3 (the PDS's
    /// `ScopePermissionsTransition`).
    pub fn allows(&self, check: &Check) -> bool {
        self.scopes.iter().any(|s| s.allows(check) || transition_allows(s, check))
    }
}

impl Granted {
    /// Whether the set grants everything `required` grants (route rules written as scope
    /// strings). Coverage may come from several granted scopes together.
    pub fn covers(&self, required: &Scope) -> bool {
        let any = |f: &dyn Fn(&Scope) -> bool| self.scopes.iter().any(f);
        let generic = any(&|s| *s == Scope::TransitionGeneric);
        match required {
            Scope::Atproto | Scope::TransitionGeneric | Scope::TransitionChat | Scope::TransitionEmail => {
                any(&|s| s == required)
            }
            Scope::Repo { collections, actions } => {
                generic
                    || collections.iter().all(|c| {
                        any(&|s| match s {
                            Scope::Repo { collections: g, actions: ga } => {
                                ga & actions == *actions && (g.iter().any(|x| x == "*") || (c != "*" && g.contains(c)))
                            }
                            _ => false,
                        })
                    })
            }
            Scope::Rpc { lxm, aud } => lxm.iter().all(|l| {
                (generic && (l == "*" || !l.starts_with("chat.bsky.")))
                    || any(&|s| match s {
                        Scope::TransitionChat => l.starts_with("chat.bsky."),
                        Scope::Rpc { lxm: g, aud: ga } => {
                            (ga == "*" || (aud != "*" && ga == aud))
                                && (g.iter().any(|x| x == "*") || (l != "*" && g.contains(l)))
                        }
                        _ => false,
                    })
            }),
            Scope::Blob { accept } => {
                generic
                    || accept.iter().all(|p| {
                        any(&|s| match s {
                            Scope::Blob { accept: g } => g.iter().any(|a| {
                                a == "*/*"
                                    || a == p
                                    || (a.ends_with("/*") && p != "*/*" && p.starts_with(&a[..a.len() - 1]))
                            }),
                            _ => false,
                        })
                    })
            }
            Scope::Account { attr, actions } => actions.iter().all(|action| {
                let manage = *action == "manage";
                self.allows(&Check::Account { attr: attr.clone(), manage })
            }),
            Scope::Identity { attr } => self.allows(&Check::Identity { attr: attr.clone() }),
            Scope::Include { .. } => false,
        }
    }
}

/// What `transition:*` scopes grant (§8.3).
fn transition_allows(scope: &Scope, check: &Check) -> bool {
    match (scope, check) {
        (Scope::TransitionGeneric, Check::Repo { .. } | Check::Blob { .. }) => true,
        (Scope::TransitionGeneric, Check::Rpc { lxm, .. }) => lxm == "*" || !lxm.starts_with("chat.bsky."),
        (Scope::TransitionChat, Check::Rpc { lxm, .. }) => lxm.starts_with("chat.bsky."),
        (Scope::TransitionEmail, Check::Account { attr, manage: false }) => attr == "email",
        _ => false,
    }
}

#[cfg(test)]
mod tests;
