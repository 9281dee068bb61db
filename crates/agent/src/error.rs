//! Agent errors and how they map to HTTP status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use trellis_server::ServerError;

/// What an agent operation can fail with; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A server failed or none could be reached (500, as Consul answers RPC failures).
    #[error(transparent)]
    Server(#[from] ServerError),
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
}

impl AgentError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
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
fn http_status(e: &ServerError) -> StatusCode {
    match e {
        ServerError::NoLeader => StatusCode::INTERNAL_SERVER_ERROR,
        other => trellis_server::error_status(other),
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut msg = match &self {
            // A server's own words, without the wrapping.
            AgentError::Server(ServerError::Remote { message, .. }) => {
                message.trim_end().to_string()
            }
            AgentError::Cache(crate::cache::FetchError::Server(e)) => match &**e {
                ServerError::Remote { message, .. } => message.trim_end().to_string(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
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
        let e = AgentError::Server(ServerError::NoLeader);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cached = AgentError::Cache(crate::cache::FetchError::Server(std::sync::Arc::new(
            ServerError::NoLeader,
        )));
        assert_eq!(cached.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // The server port's own status for it is unchanged (503 carries it across the wire).
        assert_eq!(
            trellis_server::error_status(&ServerError::NoLeader),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
