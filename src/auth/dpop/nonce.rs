//! Stateless DPoP nonces, the reference scheme (ATPROTO-AUTH.md §3.6):
//! `nonce(c) = b64url(HMAC-SHA256(secret, be64(c)))` with `c = floor(now_ms / R)`.
//! The server hands out `nonce(c + 1)` and accepts `nonce(c - 1)`, `nonce(c)` and
//! `nonce(c + 1)`, so replicas sharing the secret agree without talking.
//!
//! For rotation, further secrets may follow the first: their nonces are accepted but
//! never handed out. Rolling `OLD NEW`, then `NEW OLD`, then `NEW` through the replicas
//! changes the secret without a moment where two replicas reject each other's nonces.

use std::time::Duration;

use aws_lc_rs::hmac;

use crate::jose::b64url;

/// The default rotation interval `R`.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(60);

/// Issues and checks nonces.
#[derive(Debug)]
pub struct Nonces {
    key: hmac::Key,
    /// Secrets still accepted, never issued.
    older: Vec<hmac::Key>,
    rotation_ms: u64,
    /// The accepted values for the current counter, computed once per rotation.
    window: arc_swap::ArcSwap<Window>,
    /// The secret, when atgate generated it (none configured): a reload keeps it, so
    /// nonces already handed out stay valid.
    generated: Option<[u8; 32]>,
}

/// `nonce(c + 1)` to hand out, and every accepted value for one counter `c`:
/// `nonce(c - 1)`, `nonce(c)`, `nonce(c + 1)` under each secret.
#[derive(Debug)]
struct Window {
    counter: u64,
    issued: String,
    accepted: Vec<String>,
}

impl Nonces {
    /// A nonce source over a 32-byte secret. `rotation` is clamped to 1 s ..= 60 s, the
    /// reference's bounds (at most a third of the 180 s proof window).
    pub fn new(secret: &[u8; 32], rotation: Duration) -> Nonces {
        Nonces::with_older(secret, &[], rotation)
    }

    /// A nonce source issuing under `secret` and also accepting nonces of `older`.
    pub fn with_older(secret: &[u8; 32], older: &[[u8; 32]], rotation: Duration) -> Nonces {
        let rotation_ms = (rotation.as_millis() as u64).clamp(1_000, 60_000);
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let older: Vec<hmac::Key> = older.iter().map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)).collect();
        let window = arc_swap::ArcSwap::from_pointee(Window::new(&key, &older, 0));
        Nonces { key, older, rotation_ms, window, generated: None }
    }

    /// A nonce source over a secret atgate generated itself, `previous`'s if it had one.
    pub fn generated(previous: Option<&Nonces>, rotation: Duration) -> Result<Nonces, aws_lc_rs::error::Unspecified> {
        let secret = match previous.and_then(|p| p.generated) {
            Some(kept) => kept,
            None => {
                let mut fresh = [0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh)?;
                fresh
            }
        };
        Ok(Nonces { generated: Some(secret), ..Nonces::new(&secret, rotation) })
    }

    /// Whether the secret was generated (not configured).
    pub fn is_generated(&self) -> bool {
        self.generated.is_some()
    }

    fn window(&self, now_ms: u64) -> arc_swap::Guard<std::sync::Arc<Window>> {
        let counter = self.counter(now_ms);
        let window = self.window.load();
        if window.counter == counter {
            return window;
        }
        self.window.store(std::sync::Arc::new(Window::new(&self.key, &self.older, counter)));
        self.window.load()
    }

    fn counter(&self, now_ms: u64) -> u64 {
        now_ms / self.rotation_ms
    }

    #[cfg(test)]
    fn nonce(&self, counter: u64) -> String {
        nonce(&self.key, counter)
    }

    /// The nonce to send in `DPoP-Nonce` at `now_ms` (Unix milliseconds).
    pub fn current(&self, now_ms: u64) -> String {
        self.window(now_ms).issued.clone()
    }

    /// Whether a proof's nonce is acceptable at `now_ms`.
    pub fn is_valid(&self, nonce: &str, now_ms: u64) -> bool {
        // Nonces are public values: a plain comparison leaks nothing worth having.
        self.window(now_ms).accepted.iter().any(|n| n == nonce)
    }
}

fn nonce(key: &hmac::Key, counter: u64) -> String {
    b64url(hmac::sign(key, &counter.to_be_bytes()).as_ref())
}

impl Window {
    fn new(key: &hmac::Key, older: &[hmac::Key], counter: u64) -> Window {
        let accepted = std::iter::once(key)
            .chain(older)
            .flat_map(|k| [nonce(k, counter.wrapping_sub(1)), nonce(k, counter), nonce(k, counter + 1)])
            .collect();
        Window { counter, issued: nonce(key, counter + 1), accepted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ATPROTO-AUTH.md 15.4.
    const T_MS: u64 = 1_767_225_600_000;

    fn nonces() -> Nonces {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = i as u8;
        }
        Nonces::new(&secret, DEFAULT_ROTATION)
    }

    #[test]
    fn spec_vectors() {
        let n = nonces();
        assert_eq!(n.counter(T_MS), 29_453_760);
        assert_eq!(n.nonce(29_453_759), "fRZsG90oAf01cgXyUPe6bCssCx3fcI8r5mpWEdiRWlU");
        assert_eq!(n.nonce(29_453_760), "CWuE8o4qhL7fvK0JGlmfMgkZKwzS6LNOzdgqs38nAMw");
        assert_eq!(n.current(T_MS), "Xd9XRtb46Uu4zNb90zjibni4dQ7W_SjdRdhfUkDoTS4");
    }

    #[test]
    fn served_nonce_lives_180_seconds_from_a_boundary() {
        let n = nonces();
        let served = n.current(T_MS);
        assert!(n.is_valid(&served, T_MS));
        assert!(n.is_valid(&served, T_MS + 179_999));
        assert!(!n.is_valid(&served, T_MS + 180_000));
        assert!(!n.is_valid("xyz", T_MS));
        // Another secret's nonces are not accepted.
        let other = Nonces::new(&[7u8; 32], DEFAULT_ROTATION);
        assert!(!other.is_valid(&served, T_MS));
    }

    #[test]
    fn older_secrets_are_accepted_but_never_issued() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let before = Nonces::new(&old, DEFAULT_ROTATION);
        let during = Nonces::with_older(&new, &[old], DEFAULT_ROTATION);
        let after = Nonces::new(&new, DEFAULT_ROTATION);
        let issued_before = before.current(T_MS);
        assert!(during.is_valid(&issued_before, T_MS));
        assert_ne!(during.current(T_MS), issued_before);
        assert!(before.is_valid(&Nonces::with_older(&old, &[new], DEFAULT_ROTATION).current(T_MS), T_MS));
        assert!(after.is_valid(&during.current(T_MS), T_MS));
        assert!(!after.is_valid(&issued_before, T_MS));
    }
}
