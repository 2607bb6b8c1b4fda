//! Transport-level stages that every request passes: request id, access log, metrics,
//! limits. Nothing here knows about atproto.

pub mod limits;
pub mod metrics;
pub mod request_id;
pub mod trace;

/// Swaps a ready clone of `inner` out for use in a future (tower's "take the ready one").
pub(crate) fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
