//! Errors of the state store.

/// What can go wrong reading, waiting on or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A snapshot could not be decoded.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(#[from] serde_json::Error),
    /// A many-keys wait named more keys than one wait may carry.
    #[error("a watch may carry at most {max} keys, not {keys}")]
    TooManyWatchKeys {
        /// Keys in the request.
        keys: usize,
        /// [`crate::MAX_WATCH_KEYS`].
        max: usize,
    },
}
