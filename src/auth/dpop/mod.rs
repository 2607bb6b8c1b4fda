//! DPoP (RFC 9449) as atproto resource servers use it: stateless server nonces, and
//! (next) proof verification and the replay store.

pub mod nonce;
pub mod replay;
pub mod verify;
