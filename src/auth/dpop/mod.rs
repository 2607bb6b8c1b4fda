//! DPoP (RFC 9449) as atproto resource servers use it: stateless server nonces, and
//! proof verification, and the replay stores (memory, Redis).

pub mod nonce;
pub mod redis_store;
pub mod replay;
pub mod verify;
