//! atproto identity: DID syntax and documents (`did:plc`, `did:web`), Multikey and legacy
//! key encodings, handles, and the cached resolver the verifiers use
//! (ATPROTO-AUTH.md §10.4, §11).

pub mod did;
pub mod doc;
pub mod handle;
pub mod multikey;
mod resolver;

pub use did::{canonical, is_canonical, is_did};
pub use doc::DidDoc;
pub use resolver::{IdentityError, Resolver};
