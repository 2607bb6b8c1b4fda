//! Scope parsing, canonical form and matching never panic.
#![no_main]
use atgate::scope::{Check, Granted, RepoAction, Scope};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(scope) = Scope::parse(text) {
            let _ = Scope::parse(&scope.canonical());
        }
        let granted = Granted::parse(text);
        for check in [
            Check::Repo { collection: "app.example.post".into(), action: RepoAction::Create },
            Check::Rpc { lxm: "com.example.getThing".into(), aud: "did:web:api.example.com#svc".into() },
            Check::Blob { mime: "image/png".into() },
            Check::Account { attr: "email".into(), manage: true },
            Check::Identity { attr: "handle".into() },
        ] {
            let _ = granted.allows(&check);
        }
    }
});
