//! Agent errors and how they map to HTTP status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use trellis_rpc::Error;

/// What an agent operation can fail with; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A server failed, refused, or none could be reached: the status of its code (500 for
    /// a failure, as Consul answers RPC failures).
    #[error(transparent)]
    Server(#[from] Error),
    /// A cache entry could not be filled: the status the same failure would have without the
    /// cache.
    #[error(transparent)]
    Cache(#[from] crate::cache::FetchError),
    /// Data the answer needs could not be fetched from the servers (500).
    #[error("{0}")]
    Unavailable(String),
    /// Local state could not be persisted (500).
    #[error("persisting agent state: {0}")]
    Persist(String),
    /// The agent could not start (data dir, node ID, listener).
    #[error("{0}")]
    Startup(String),
    /// The request's token is unknown, lacks a permission, or ACLs are off (403, or 401).
    #[error(transparent)]
    Acl(#[from] trellis_acl_resolver::AclError),
}

impl AgentError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::Acl(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN),
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Server(e) => http_status(e),
            AgentError::Cache(crate::cache::FetchError::Server(e)) => http_status(e),
            AgentError::Cache(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AgentError::Persist(_) | AgentError::Startup(_) | AgentError::Unavailable(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The HTTP API's status for a server's error: the server port's, but for "No cluster
/// leader", which Consul's HTTP API answers with 500 (the server port keeps 503 for it: that
/// status is how the error crosses the wire).
fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::NoLeader => StatusCode::INTERNAL_SERVER_ERROR,
        other => {
            StatusCode::from_u16(other.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut msg = self.to_string();
        msg.push('\n');
        (
            self.status(),
            [("content-type", "text/plain; charset=utf-8")],
            msg,
        )
            .into_response()
    }
}

/// Shorthand for a 400.
pub(crate) fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::BadRequest(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cluster_leader_is_a_500_as_in_consul() {
        let e = AgentError::Server(Error::NoLeader);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cached = AgentError::Cache(crate::cache::FetchError::Server(std::sync::Arc::new(
            Error::NoLeader,
        )));
        assert_eq!(cached.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // The server port's own status for it is unchanged (503 carries it across the wire).
        assert_eq!(Error::NoLeader.code().status(), 503);
    }

    #[test]
    fn a_server_refusal_answers_with_its_own_status_and_words() {
        let e = AgentError::Server(Error::Forbidden("not yours".into()));
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.to_string(), "Permission denied: not yours");
        let e = AgentError::Server(Error::BadRequest("bad CSR".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "bad CSR");
        let e = AgentError::Server(Error::RateLimited("slow down".into()));
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
