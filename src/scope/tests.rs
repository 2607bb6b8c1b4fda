//! ATPROTO-AUTH.md tables 8.7 (parsing, canonical form) and 8.8 (checks).

use super::*;

fn canonical(s: &str) -> Option<String> {
    Scope::parse(s).map(|s| s.canonical())
}

#[test]
fn table_8_7_parse_results() {
    let valid = [
        ("repo:app.example.profile?action=create&action=update&action=delete", "repo:app.example.profile"),
        (
            "repo?collection=app.example.profile&collection=app.example.post",
            "repo?collection=app.example.post&collection=app.example.profile",
        ),
        ("repo?collection=*&collection=app.example.post", "repo:*"),
        (
            "repo:app.example.profile?action=delete&action=create",
            "repo:app.example.profile?action=create&action=delete",
        ),
        ("repo:%2A", "repo:*"),
        ("rpc?lxm=*&aud=did:web:api.example.com%23svc_appview", "rpc:*?aud=did:web:api.example.com%23svc_appview"),
        (
            "rpc:com.example.getThing?aud=did:web:api.example.com#svc",
            "rpc:com.example.getThing?aud=did:web:api.example.com%23svc",
        ),
        ("rpc?lxm=com.example.b&lxm=com.example.a&aud=*", "rpc?lxm=com.example.a&lxm=com.example.b&aud=*"),
        ("blob?accept=video/*&accept=text/html", "blob?accept=text/html&accept=video/*"),
        ("blob?accept=image/png&accept=image/*", "blob:image/*"),
        ("blob:image/PNG", "blob:image/png"),
        ("blob:image/svg+xml", "blob:image/svg+xml"),
        ("blob?accept=image/svg%2Bxml", "blob:image/svg+xml"),
        ("account?action=manage&attr=repo", "account:repo?action=manage"),
        ("account:status", "account:status"),
        ("identity:*?", "identity:*"),
        (
            "include:app.example.authFull?aud=did:web:api.example.com%23svc_chat",
            "include:app.example.authFull?aud=did:web:api.example.com%23svc_chat",
        ),
        ("atproto", "atproto"),
        ("transition:generic", "transition:generic"),
        ("transition:chat.bsky", "transition:chat.bsky"),
        ("transition:email", "transition:email"),
    ];
    for (input, expected) in valid {
        assert_eq!(canonical(input).as_deref(), Some(expected), "{input}");
        // Canonical forms are fixed points.
        assert_eq!(canonical(expected).as_deref(), Some(expected), "{expected}");
    }
    let invalid = [
        "repo",
        "repo:",
        "repo:com.example.*",
        "repo:a.b.c?action=read",
        "repo:a.b.c?foo=bar",
        "REPO:a.b.c",
        "repo:a.b.c?collection=x.y.z",
        "repo:%E0",
        "rpc:*?aud=*",
        "rpc:com.example.getThing",
        "rpc:com.example.getThing?aud=did:web:api.example.com",
        "rpc:com.example.getThing?aud=did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme%23x",
        "rpc:com.example.getThing?aud=did:web:a.example.com%23x&aud=did:web:b.example.com%23y",
        "blob:*",
        "blob:image",
        "blob:text/*?accept=image/*",
        "blob?accept=image/svg+xml",
        "account:*",
        "account:phone",
        "identity:did",
        "identity:handle?attr=handle",
        "include:app.example.authFull?aud=*",
        "include:app.example",
        "transition:foo",
        "",
    ];
    for input in invalid {
        assert_eq!(canonical(input), None, "{input}");
    }
}

fn repo(collection: &str, action: RepoAction) -> Check {
    Check::Repo { collection: collection.into(), action }
}

fn rpc(lxm: &str, aud: &str) -> Check {
    Check::Rpc { lxm: lxm.into(), aud: aud.into() }
}

#[test]
fn table_8_8_checks() {
    let svc = "did:web:api.example.com#svc";
    let cases: Vec<(&str, Check, bool)> = vec![
        ("repo:app.example.post", repo("app.example.post", RepoAction::Create), true),
        ("repo:app.example.post?action=create", repo("app.example.post", RepoAction::Delete), false),
        ("repo:*?action=delete", repo("app.example.post", RepoAction::Delete), true),
        ("transition:generic", repo("app.example.like", RepoAction::Create), true),
        ("rpc:com.example.getThing?aud=did:web:api.example.com%23svc", rpc("com.example.getThing", svc), true),
        (
            "rpc:com.example.getThing?aud=did:web:api.example.com%23svc",
            rpc("com.example.getThing", "did:web:api.example.com"),
            false,
        ),
        (
            "rpc:com.example.getThing?aud=did:web:api.example.com%23svc",
            rpc("com.example.getThing", "did:web:api.example.com#other"),
            false,
        ),
        ("rpc:*?aud=did:web:api.example.com%23svc", rpc("com.example.anything", svc), true),
        ("transition:generic", rpc("chat.bsky.convo.getLog", svc), false),
        ("transition:chat.bsky", rpc("chat.bsky.convo.getLog", svc), true),
        ("blob:image/*", Check::Blob { mime: "image/png".into() }, true),
        ("blob:image/*", Check::Blob { mime: "video/mp4".into() }, false),
        ("account:email", Check::Account { attr: "email".into(), manage: true }, false),
        ("account:email?action=manage", Check::Account { attr: "email".into(), manage: false }, true),
        ("transition:email", Check::Account { attr: "email".into(), manage: false }, true),
        ("transition:email", Check::Account { attr: "email".into(), manage: true }, false),
        ("transition:generic", Check::Account { attr: "repo".into(), manage: true }, false),
        ("transition:generic", Check::Identity { attr: "handle".into() }, false),
        ("identity:*", Check::Identity { attr: "handle".into() }, true),
        ("identity:handle", Check::Identity { attr: "*".into() }, false),
        ("include:app.example.authFull", repo("app.example.post", RepoAction::Create), false),
    ];
    for (granted, check, expected) in cases {
        assert_eq!(Granted::parse(granted).allows(&check), expected, "{granted} vs {check:?}");
    }
}

#[test]
fn needed_scopes_are_canonical() {
    assert_eq!(repo("app.example.post", RepoAction::Create).needed(), "repo:app.example.post?action=create");
    assert_eq!(
        rpc("com.example.getThing", "did:web:api.example.com#svc").needed(),
        "rpc:com.example.getThing?aud=did:web:api.example.com%23svc"
    );
    assert_eq!(Check::Blob { mime: "image/png".into() }.needed(), "blob:image/png");
    assert_eq!(Check::Account { attr: "email".into(), manage: true }.needed(), "account:email?action=manage");
    assert_eq!(Check::Account { attr: "email".into(), manage: false }.needed(), "account:email");
    assert_eq!(Check::Identity { attr: "handle".into() }.needed(), "identity:handle");
}

#[test]
fn sets_skip_invalid_pieces_and_never_match_textually() {
    let g = Granted::parse("atproto  repo:%E0 repo?collection=b.b.b&collection=a.a.a rpc:x");
    assert_eq!(g.scopes().len(), 2);
    assert!(g.allows(&repo("a.a.a", RepoAction::Update)));
    assert!(!g.allows(&repo("c.c.c", RepoAction::Update)));
    // A request MIME must be concrete.
    assert!(!Granted::parse("blob:*/*").allows(&Check::Blob { mime: "image/*".into() }));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Scope-shaped strings: known prefixes, separators, NSIDs, DID references, MIME types
    /// and escapes, in any combination.
    fn scope_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("repo".to_owned()),
            Just("rpc".to_owned()),
            Just("blob".to_owned()),
            Just("account".to_owned()),
            Just("identity".to_owned()),
            Just("include".to_owned()),
            Just(":".to_owned()),
            Just("?".to_owned()),
            Just("&".to_owned()),
            Just("=".to_owned()),
            Just("collection".to_owned()),
            Just("action".to_owned()),
            Just("lxm".to_owned()),
            Just("aud".to_owned()),
            Just("accept".to_owned()),
            Just("attr".to_owned()),
            Just("app.example.post".to_owned()),
            Just("*".to_owned()),
            Just("did:web:api.example.com%23svc".to_owned()),
            Just("image/png".to_owned()),
            Just("image/*".to_owned()),
            Just("create".to_owned()),
            Just("manage".to_owned()),
            Just("email".to_owned()),
            Just("handle".to_owned()),
            "%[0-9A-Fa-f]{0,2}",
            "[a-z.#+/ ]{0,6}",
        ];
        prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_canonical_forms_are_stable(s in scope_like()) {
            if let Some(scope) = Scope::parse(&s) {
                let c = scope.canonical();
                // Canonical forms that carry no literal `%` or query `+` parse back to the same scope.
                let reparses = !c.replace("%23", "").contains('%')
                    && !c.split_once('?').is_some_and(|(_, q)| q.contains('+'));
                if reparses {
                    prop_assert_eq!(Scope::parse(&c), Some(scope.clone()));
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(s in "\\PC{0,40}") {
            let g = Granted::parse(&s);
            let _ = g.allows(&Check::Blob { mime: "image/png".into() });
        }
    }
}

#[test]
fn coverage_of_required_scope_strings() {
    let g = Granted::parse(
        "atproto repo:a.a.a repo:b.b.b?action=create rpc:x.x.x?aud=did:web:s.example.com%23a rpc:y.y.y?aud=* \
         blob:image/* blob:video/mp4 account:email?action=manage identity:handle",
    );
    let covers = |s: &str| g.covers(&Scope::parse(s).unwrap());
    assert!(covers("atproto"));
    assert!(!covers("transition:generic"));
    assert!(covers("repo?collection=a.a.a&collection=b.b.b&action=create"));
    assert!(!covers("repo?collection=a.a.a&collection=b.b.b&action=update"));
    assert!(!covers("repo:*"));
    assert!(covers("rpc?lxm=x.x.x&lxm=y.y.y&aud=did:web:s.example.com%23a"));
    assert!(!covers("rpc:x.x.x?aud=*"));
    assert!(!covers("rpc:x.x.x?aud=did:web:s.example.com%23b"));
    assert!(covers("blob?accept=image/png&accept=image/*&accept=video/mp4"));
    assert!(!covers("blob:*/*"));
    assert!(!covers("blob:video/*"));
    assert!(covers("account:email?action=manage") && covers("account:email"));
    assert!(!covers("account:repo"));
    assert!(covers("identity:handle") && !covers("identity:*"));
    assert!(!covers("include:app.example.authFull"));
    let generic = Granted::parse("transition:generic");
    assert!(generic.covers(&Scope::parse("repo:*").unwrap()));
    assert!(generic.covers(&Scope::parse("blob:*/*").unwrap()));
    assert!(!generic.covers(&Scope::parse("rpc:chat.bsky.convo.getLog?aud=*").unwrap()));
}

#[test]
fn repo_writes_from_xrpc_calls() {
    use serde_json::json;
    use stage::repo_writes;
    let body = json!({"collection": "app.example.post"});
    assert_eq!(
        repo_writes("com.atproto.repo.createRecord", &body).unwrap(),
        vec![("app.example.post".to_owned(), RepoAction::Create)]
    );
    assert_eq!(
        repo_writes("com.atproto.repo.putRecord", &body).unwrap(),
        vec![("app.example.post".to_owned(), RepoAction::Create), ("app.example.post".to_owned(), RepoAction::Update)]
    );
    assert_eq!(repo_writes("com.atproto.repo.deleteRecord", &body).unwrap()[0].1, RepoAction::Delete);
    assert!(repo_writes("com.atproto.repo.createRecord", &json!({"collection": "not an nsid"})).is_err());
    assert!(repo_writes("com.atproto.repo.createRecord", &json!([])).is_err());
    assert!(repo_writes("com.atproto.repo.getRecord", &body).is_err());
    let writes =
        json!({"writes": [{"$type": "com.atproto.repo.applyWrites#update", "collection": "a.b.c"}, {"$type": "x"}]});
    assert!(repo_writes("com.atproto.repo.applyWrites", &writes).is_err());
}

#[test]
fn content_types() {
    let mut h = http::HeaderMap::new();
    assert_eq!(stage::content_type(&h), None);
    h.insert("content-type", "Image/PNG ; charset=binary".parse().unwrap());
    assert_eq!(stage::content_type(&h).as_deref(), Some("image/png"));
    h.insert("content-type", "image/*".parse().unwrap());
    assert_eq!(stage::content_type(&h), None);
    h.insert("content-type", "garbage".parse().unwrap());
    assert_eq!(stage::content_type(&h), None);
}

/// ATPROTO-AUTH.md §9.1-9.3: what invalidates a permission-set document (rejected whole,
/// `lexicon.rs`) and what only drops one permission at expansion (`permission_set.rs`).
mod permission_set_documents {
    use serde_json::{Value, json};

    use super::lexicon::{LexiconError, LexiconReason, is_language, validate_document};
    use super::permission_set::{PermissionSet, SetError};

    fn base() -> Value {
        json!({
            "$type": "com.atproto.lexicon.schema",
            "lexicon": 1,
            "id": "app.example.authBasic",
            "defs": {"main": {"type": "permission-set", "title": "Basic", "permissions": [
                {"type": "permission", "resource": "repo", "collection": ["app.example.post"]},
                {"type": "permission", "resource": "rpc", "aud": "*", "lxm": ["app.example.getFeed"]},
            ]}}
        })
    }

    fn with(change: impl FnOnce(&mut Value)) -> Value {
        let mut doc = base();
        change(&mut doc);
        doc
    }

    fn invalid(doc: &Value) -> LexiconError {
        let err = validate_document(doc).expect_err("invalid");
        assert_eq!(PermissionSet::from_lexicon(doc), Err(SetError::Invalid(err.clone())));
        err
    }

    fn push(entry: Value) -> impl FnOnce(&mut Value) {
        move |d| d["defs"]["main"]["permissions"].as_array_mut().unwrap().push(entry)
    }

    #[test]
    fn the_four_reported_shapes_reject_the_whole_document() {
        let err = invalid(&with(push(json!({"type": "scope", "resource": "repo", "collection": ["app.example.x"]}))));
        assert_eq!((err.path.as_str(), err.reason), ("defs.main.permissions[2].type", LexiconReason::NotPermission));
        let err = invalid(&with(|d| d["defs"]["main"]["title:lang"] = json!({"en": "Basic", "de": 5})));
        assert_eq!((err.path.as_str(), err.reason), ("defs.main.title:lang.de", LexiconReason::Expected("a string")));
        let err = invalid(&with(|d| d["defs"]["main"]["permissions"][0]["extra"] = json!({"a": 1})));
        assert_eq!(err.path, "defs.main.permissions[0].extra");
        let err = invalid(&with(|d| d["defs"]["other"] = json!({"type": "permission-set", "permissions": []})));
        assert_eq!((err.path.as_str(), err.reason), ("defs.other.type", LexiconReason::Type));
        // The message names the place, for the log line of the 503.
        assert_eq!(
            SetError::Invalid(err).to_string(),
            "invalid lexicon document: defs.other.type: type not allowed here"
        );
    }

    #[test]
    fn other_shapes_the_schema_rejects() {
        type Spoiler = Box<dyn FnOnce(&mut Value)>;
        let spoilers: Vec<(&str, Spoiler)> = vec![
            ("entry without type", Box::new(push(json!({"resource": "repo"})))),
            ("empty resource", Box::new(push(json!({"type": "permission", "resource": ""})))),
            ("entry a string", Box::new(push(json!("repo:app.example.post")))),
            ("null parameter", Box::new(push(json!({"type": "permission", "resource": "repo", "action": null})))),
            ("float parameter", Box::new(push(json!({"type": "permission", "resource": "repo", "n": 1.5})))),
            (
                "unsafe integer",
                Box::new(push(json!({"type": "permission", "resource": "repo", "n": 9007199254740992u64}))),
            ),
            (
                "mixed array",
                Box::new(push(json!({"type": "permission", "resource": "repo", "collection": ["a.b.c", 1]}))),
            ),
            (
                "nested array",
                Box::new(push(json!({"type": "permission", "resource": "repo", "collection": [["a.b.c"]]}))),
            ),
            ("title null", Box::new(|d: &mut Value| d["defs"]["main"]["title"] = Value::Null)),
            ("bad language tag", Box::new(|d: &mut Value| d["defs"]["main"]["detail:lang"] = json!({"EN": "x"}))),
            ("permissions missing", Box::new(|d: &mut Value| d["defs"]["main"]["permissions"] = Value::Null)),
            ("lexicon 2", Box::new(|d: &mut Value| d["lexicon"] = json!(2))),
            ("id not an NSID", Box::new(|d: &mut Value| d["id"] = json!("app.example"))),
            ("revision a float", Box::new(|d: &mut Value| d["revision"] = json!(1.5))),
            ("other def a query", Box::new(|d: &mut Value| d["defs"]["q"] = json!({"type": "query"}))),
            ("other def unknown", Box::new(|d: &mut Value| d["defs"]["u"] = json!({"type": "unknown"}))),
            ("empty def name", Box::new(|d: &mut Value| d["defs"][""] = json!({"type": "token"}))),
            (
                "object required not a property",
                Box::new(|d: &mut Value| {
                    d["defs"]["o"] = json!({"type": "object", "required": ["a"], "properties": {}})
                }),
            ),
            (
                "record without key",
                Box::new(|d: &mut Value| {
                    d["defs"]["main"] = json!({"type": "record", "record": {"type": "object", "properties": {}}})
                }),
            ),
            (
                "encoding with parameters",
                Box::new(|d: &mut Value| {
                    d["defs"]["main"] = json!({"type": "query", "output": {"encoding": "a/b; c=d"}})
                }),
            ),
        ];
        for (what, spoil) in spoilers {
            let mut doc = base();
            spoil(&mut doc);
            assert!(validate_document(&doc).is_err(), "{what}");
        }
    }

    #[test]
    fn shapes_the_schema_accepts() {
        // JSON 1.0 and 2.0 are the JavaScript numbers 1 and 2; unknown keys pass; any
        // scalar or homogeneous array is a parameter; language maps with BCP 47 keys.
        let doc = with(|d| {
            d["lexicon"] = json!(1.0);
            d["revision"] = json!(2.0);
            d["whatever"] = json!({"x": null});
            d["defs"]["main"]["title:lang"] = json!({"en": "Basic", "pt-BR": "Básico", "zh-Hant-TW": "x"});
            d["defs"]["main"]["permissions"][0]["n"] = json!(3);
            d["defs"]["main"]["permissions"][0]["flags"] = json!([true, false]);
            d["defs"]["main"]["permissions"][0]["none"] = json!([]);
            d["defs"]["tok"] = json!({"type": "token", "description": "x"});
        });
        assert_eq!(validate_document(&doc), Ok(()));
        let query = with(|d| d["defs"]["main"] = json!({"type": "query"}));
        assert_eq!(PermissionSet::from_lexicon(&query), Err(SetError::NotPermissionSet));
        let no_main = with(|d| d["defs"] = json!({}));
        assert_eq!(PermissionSet::from_lexicon(&no_main), Err(SetError::NotPermissionSet));
        assert!(is_language("en-GB-oed") && is_language("x-private") && is_language("sl-rozaj-biske"));
        assert!(!is_language("EN") && !is_language("de-1996-1996") && !is_language("en-a-x-y") && !is_language(""));
    }

    /// §9.3: a bad value in one permission of a valid document drops that permission only.
    #[test]
    fn bad_permissions_of_a_valid_document_drop_alone() {
        let doc = with(|d| {
            let list = d["defs"]["main"]["permissions"].as_array_mut().unwrap();
            list.push(json!({"type": "permission", "resource": "repo", "collection": "app.example.bare"}));
            list.push(json!({"type": "permission", "resource": "repo", "collection": ["app.example.a"], "action": []}));
            list.push(
                json!({"type": "permission", "resource": "repo", "collection": ["app.example.b"], "action": "delete"}),
            );
            list.push(json!({"type": "permission", "resource": "rpc", "lxm": "app.example.bareRpc", "aud": "*"}));
            list.push(json!({"type": "permission", "resource": "repo", "collection": [], "foo": "bar"}));
        });
        let set = PermissionSet::from_lexicon(&doc).unwrap();
        let granted: Vec<String> = set.expand(None).iter().map(|s| s.canonical()).collect();
        assert_eq!(granted, ["repo:app.example.post", "rpc:app.example.getFeed?aud=*"]);
    }
}
