//! CA errors.

/// What a CA operation can fail with. Messages follow Consul's where Consul has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The CA configuration is invalid (400).
    #[error("{0}")]
    InvalidConfig(String),
    /// The CSR is malformed or asks for something it may not have (400).
    #[error("{0}")]
    InvalidCsr(String),
    /// The CSR rate limit was hit; agents back off on exactly this text.
    #[error("Rate limit reached, try again later")]
    RateLimited,
    /// The CA has no active root yet.
    #[error("CA is uninitialized and unable to sign certificates yet")]
    Uninitialized,
    /// Key generation, parsing or signing failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Crypto(e.to_string())
    }
}
