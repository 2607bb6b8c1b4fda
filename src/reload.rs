//! Hot reload: read, validate and build a new runtime, then swap it in whole.
//!
//! Triggers are SIGHUP and a change of the config file's contents or of a secret or key
//! file it names (`Config::watched_files`). The files are polled
//! (`reload.interval`, default 2 s) rather than watched with inotify: editors replace
//! files by rename and Kubernetes swaps a ConfigMap's `..data` symlink, and both break a
//! watch on the file itself, while reading a few kilobytes every two seconds costs
//! nothing. A change is applied once two reads 250 ms apart agree, so a half-written
//! file is never parsed.
//!
//! A bad config is logged with every error and the old runtime keeps serving. Requests
//! finish on the runtime they started on (`state::Pinned`). Fields bound at start
//! (listeners, TLS files, replay store, logging, connection limits) keep their old
//! values until a restart, with a warning naming them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigErrors};
use crate::state::{Runtime, Shared};

/// How long a reload waits for new issuers' keys before swapping anyway.
const KEYS_WAIT: Duration = Duration::from_secs(10);

/// Settle time between the two reads that must agree.
const SETTLE: Duration = Duration::from_millis(250);

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Fields that changed but take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Loads `path` and applies it; on error the running config stays.
pub async fn reload_file(shared: &Shared, path: &Path) -> Result<Applied, ConfigErrors> {
    let result = match Config::load(path) {
        Ok(config) => apply(shared, config).await,
        Err(e) => Err(e),
    };
    report(shared, &result);
    result
}

/// Builds a runtime from `config` (keeping what is unchanged from the current one) and
/// swaps it in.
pub async fn apply(shared: &Shared, mut config: Config) -> Result<Applied, ConfigErrors> {
    let _one_at_a_time = shared.reloading.lock().await;
    let old = shared.runtime.load_full();
    let needs_restart = keep_start_only_fields(&old.config, &mut config);
    let runtime = Runtime::build_from(config, Some(&old))?;
    if let Some(dpop) = &runtime.dpop {
        dpop.issuers.spawn_refreshers();
        let waited = tokio::time::timeout(KEYS_WAIT, async {
            while !dpop.issuers.all_loaded() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("reload: some issuers' keys are not fetched yet; not ready until they are");
        }
    }
    shared.runtime.store(Arc::new(runtime));
    Ok(Applied { needs_restart })
}

fn report(shared: &Shared, result: &Result<Applied, ConfigErrors>) {
    shared.metrics.reload("config", result.is_ok());
    match result {
        Ok(applied) => {
            tracing::info!("config reloaded");
            if !applied.needs_restart.is_empty() {
                tracing::warn!(fields = ?applied.needs_restart, "reload: these changes take effect after a restart");
            }
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "reload rejected; the running config stays");
            }
        }
    }
}

/// Copies what only a restart can change from `old` into `new`, so that the runtime's
/// config says what is in effect; returns the names of the fields that differed.
fn keep_start_only_fields(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                changed.push(stringify!($($field).+));
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(listen);
    keep!(admin_listen);
    keep!(tls);
    keep!(log);
    keep!(replay);
    keep!(dpop.replay_capacity);
    keep!(limits.max_concurrent_requests);
    keep!(limits.header_timeout);
    keep!(limits.max_header_bytes);
    keep!(limits.shutdown_timeout);
    changed
}

/// What the watcher compares: the config file and every file it names, read whole.
/// `None` while any of them cannot be read (a rename in progress).
async fn snapshot(path: &Path, shared: &Shared) -> Option<Vec<Vec<u8>>> {
    let files: Vec<PathBuf> = shared.runtime.load().config.watched_files().into_iter().map(Path::to_path_buf).collect();
    let mut out = Vec::with_capacity(files.len() + 1);
    out.push(tokio::fs::read(path).await.ok()?);
    for f in files {
        out.push(tokio::fs::read(&f).await.ok()?);
    }
    Some(out)
}

/// Polls `path`, and the secret and key files its config names, and reloads when any
/// of them changes, until `stop` turns true. The interval is read from the running
/// config each time (`reload.interval`).
pub fn spawn_watcher(shared: Arc<Shared>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut applied = snapshot(&path, &shared).await;
        loop {
            let reload = shared.runtime.load().config.reload.clone();
            if !reload.watch {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(reload.interval) => {}
                _ = crate::server::stopped(&mut stop) => return,
            }
            let Some(first) = snapshot(&path, &shared).await else { continue };
            if applied.as_ref() == Some(&first) {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            let Some(second) = snapshot(&path, &shared).await else { continue };
            if second != first {
                continue;
            }
            tracing::info!(path = %path.display(), "config or a file it names changed");
            // A rejected version is not retried until something changes again.
            let _ = reload_file(&shared, &path).await;
            // After a reload the set of named files may differ: compare against it.
            applied = snapshot(&path, &shared).await.or(Some(second));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_only_fields_keep_their_old_values_and_are_named() {
        let old = Config::parse(crate::config::EXAMPLE, "old").unwrap();
        let mut new = old.clone();
        new.listen = vec!["127.0.0.1:1".parse().unwrap()];
        new.limits.max_concurrent_requests += 1;
        new.limits.max_body += 1;
        let changed = keep_start_only_fields(&old, &mut new);
        assert_eq!(changed, ["listen", "limits.max_concurrent_requests"]);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.limits.max_concurrent_requests, old.limits.max_concurrent_requests);
        // Applied live.
        assert_eq!(new.limits.max_body, old.limits.max_body + 1);
    }

    #[tokio::test]
    async fn unchanged_upstreams_keep_their_pools_and_ones_with_a_ca_file_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["internal.test".to_string()]).unwrap().cert;
        std::fs::write(&ca, cert.pem()).unwrap();
        let text = format!(
            "listen: 127.0.0.1:0
upstreams:
  plain: {{ url: \"http://127.0.0.1:1\" }}
  pinned: {{ url: \"https://internal.test:1\", tls: {{ ca_file: \"{}\" }} }}
routes:
  - {{ name: a, match: {{ path: /a/ }}, upstream: plain, auth: none }}
  - {{ name: b, match: {{ path: /b/ }}, upstream: pinned, auth: none }}
",
            ca.display()
        );
        let old = Runtime::build(Config::parse(&text, "t").unwrap()).unwrap();
        let new = Runtime::build_from(Config::parse(&text, "t").unwrap(), Some(&old)).unwrap();
        assert!(Arc::ptr_eq(&old.upstreams[0], &new.upstreams[0]), "an unchanged upstream lost its pool");
        assert!(!Arc::ptr_eq(&old.upstreams[1], &new.upstreams[1]), "a CA bundle was not read again");
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(Runtime::build_from(Config::parse(&text, "t").unwrap(), Some(&new)).is_err());
    }

    /// Without a configured nonce secret, the generated one survives a reload: a nonce
    /// handed out before it is accepted after it.
    #[tokio::test]
    async fn a_generated_nonce_secret_survives_a_reload() {
        let key = crate::jose::sign::SigningKey::generate().public_jwk();
        let text = format!(
            "listen: 127.0.0.1:0
public_url: https://gw.example.org
issuers:
  - {{ issuer: https://as.example.org, public_key: {{ jwk: {key} }}, audiences: [did:web:gw.example.org] }}
upstreams:
  up: {{ url: \"http://127.0.0.1:1\" }}
routes:
  - {{ name: api, match: {{ path: /xrpc/ }}, upstream: up, auth: dpop }}
"
        );
        let shared = Shared::new(Runtime::build(Config::parse(&text, "t").unwrap()).unwrap());
        let now = crate::auth::now_ms();
        let nonce = shared.runtime.load().dpop.as_ref().unwrap().nonces.current(now);
        apply(&shared, Config::parse(&text, "t").unwrap()).await.unwrap();
        let after = shared.runtime.load_full();
        assert!(after.dpop.as_ref().unwrap().nonces.is_valid(&nonce, now), "the reload voided issued nonces");
        // A configured secret still replaces the generated one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "ab".repeat(32)).unwrap();
        let with_secret = text.replace(
            "routes:",
            &format!("dpop: {{ nonce_secret_file: \"{}\" }}\nroutes:", dir.path().join("s").display()),
        );
        apply(&shared, Config::parse(&with_secret, "t").unwrap()).await.unwrap();
        assert!(!shared.runtime.load().dpop.as_ref().unwrap().nonces.is_valid(&nonce, now));
    }
}
