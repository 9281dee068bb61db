//! Errors of the state store.

/// What can go wrong reading or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A snapshot could not be decoded.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(#[from] serde_json::Error),
}
