//! Errors as they cross the server port: a [`Code`] and a message, decoded back into the same
//! [`Error`] on the other side. Callers match on variants, never on message text.

use serde::{Deserialize, Serialize};

/// What kind of failure a server answered with: the part of an [`Error`] that crosses the wire.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// No leader answered within the hold time (Consul's "No cluster leader").
    NoLeader,
    /// The request is malformed or invalid as it stands; nothing changed.
    BadRequest,
    /// What the request names does not exist.
    NotFound,
    /// The caller may not do this.
    Forbidden,
    /// The CA's signing rate limit was reached; try again later.
    RateLimited,
    /// The CA has not been initialised yet.
    Uninitialized,
    /// Anything else the server could not do.
    Internal,
}

impl Code {
    /// The HTTP status a server port answers this code with (readable with curl; the body
    /// carries the code itself).
    pub fn status(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::RateLimited => 429,
            Code::Internal => 500,
            Code::NoLeader | Code::Uninitialized => 503,
        }
    }

    /// The code of an answer that carried no typed body (a proxy, or a layer below the
    /// handlers: body limits, malformed JSON): the nearest kind for its status.
    pub fn from_status(status: u16) -> Code {
        match status {
            403 => Code::Forbidden,
            404 => Code::NotFound,
            429 => Code::RateLimited,
            503 => Code::NoLeader,
            400..=499 => Code::BadRequest,
            _ => Code::Internal,
        }
    }
}

/// The body of a server port's error answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct WireError {
    /// What kind of failure.
    pub code: Code,
    /// Its message, for people.
    pub message: String,
}

/// What a call to a server can fail with, in process and across the wire alike.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No cluster leader answered within the hold time.
    #[error("No cluster leader")]
    NoLeader,
    /// The request is invalid; nothing changed (400).
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("Permission denied: {0}")]
    Forbidden(String),
    /// The CA's signing rate limit was reached (429).
    #[error("{0}")]
    RateLimited(String),
    /// The CA is not initialised yet.
    #[error("{0}")]
    Uninitialized(String),
    /// The server failed otherwise (500).
    #[error("{0}")]
    Internal(String),
    /// No connection could be made to the server: nothing was delivered, so sending the
    /// request again (there or elsewhere) cannot apply it twice. Never crosses the wire.
    #[error("rpc to {addr}: not delivered: {message}")]
    Unreachable {
        /// The server dialled.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The call failed after the request may have reached the server. Never crosses the wire.
    #[error("rpc to {addr}: {message}")]
    Transport {
        /// The server dialled.
        addr: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// The code this error crosses the wire with (a transport failure one server saw is
    /// `Internal` to whoever it answers).
    pub fn code(&self) -> Code {
        match self {
            Error::NoLeader => Code::NoLeader,
            Error::BadRequest(_) => Code::BadRequest,
            Error::NotFound(_) => Code::NotFound,
            Error::Forbidden(_) => Code::Forbidden,
            Error::RateLimited(_) => Code::RateLimited,
            Error::Uninitialized(_) => Code::Uninitialized,
            Error::Internal(_) | Error::Unreachable { .. } | Error::Transport { .. } => {
                Code::Internal
            }
        }
    }

    /// The message without the variant's wrapping (`Forbidden`'s "Permission denied: " is
    /// added again on the other side).
    fn message(&self) -> String {
        match self {
            Error::NoLeader => "No cluster leader".to_string(),
            Error::BadRequest(m)
            | Error::NotFound(m)
            | Error::Forbidden(m)
            | Error::RateLimited(m)
            | Error::Uninitialized(m)
            | Error::Internal(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// This error as a server port answers it.
    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code(),
            message: self.message(),
        }
    }

    /// The error a server port's answer carried: the same variant it was sent as.
    pub fn from_wire(wire: WireError) -> Error {
        let m = wire.message;
        match wire.code {
            Code::NoLeader => Error::NoLeader,
            Code::BadRequest => Error::BadRequest(m),
            Code::NotFound => Error::NotFound(m),
            Code::Forbidden => Error::Forbidden(m),
            Code::RateLimited => Error::RateLimited(m),
            Code::Uninitialized => Error::Uninitialized(m),
            Code::Internal => Error::Internal(m),
        }
    }

    /// Whether the server could not be reached or answered nothing ([`Error::Unreachable`],
    /// [`Error::Transport`]): another server may do better.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Transport { .. })
    }

    /// An error answer from `addr` with this status and body: the typed body when there is
    /// one, else the nearest code for the status with the body as its message.
    pub fn from_answer(status: u16, body: &[u8]) -> Error {
        match serde_json::from_slice::<WireError>(body) {
            Ok(wire) => Error::from_wire(wire),
            Err(_) => {
                let message = String::from_utf8_lossy(body).trim_end().to_string();
                Error::from_wire(WireError {
                    code: Code::from_status(status),
                    message,
                })
            }
        }
    }
}

impl From<trellis_ca::CaError> for Error {
    fn from(e: trellis_ca::CaError) -> Error {
        use trellis_ca::CaError;
        let message = e.to_string();
        match e {
            CaError::InvalidCsr(_) | CaError::InvalidConfig(_) => Error::BadRequest(message),
            CaError::RateLimited => Error::RateLimited(message),
            CaError::Uninitialized => Error::Uninitialized(message),
            _ => Error::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_error() -> impl Strategy<Value = Error> {
        let m = ".{0,40}";
        prop_oneof![
            Just(Error::NoLeader),
            m.prop_map(Error::BadRequest),
            m.prop_map(Error::NotFound),
            m.prop_map(Error::Forbidden),
            m.prop_map(Error::RateLimited),
            m.prop_map(Error::Uninitialized),
            m.prop_map(Error::Internal),
        ]
    }

    proptest! {
        /// Every error a server answers with decodes back into the same variant and message.
        #[test]
        fn errors_survive_the_wire(e in any_error()) {
            let body = serde_json::to_vec(&e.to_wire()).unwrap();
            let back = Error::from_answer(e.code().status(), &body);
            prop_assert_eq!(back, e);
        }
    }

    #[test]
    fn transport_failures_cross_as_internal_with_their_text() {
        let e = Error::Transport {
            addr: "10.0.0.1:8300".into(),
            message: "connection reset".into(),
        };
        let wire = e.to_wire();
        assert_eq!(wire.code, Code::Internal);
        assert_eq!(
            Error::from_wire(wire),
            Error::Internal("rpc to 10.0.0.1:8300: connection reset".into())
        );
    }

    #[test]
    fn an_untyped_answer_gets_the_nearest_code() {
        assert_eq!(
            Error::from_answer(413, b"length limit exceeded\n"),
            Error::BadRequest("length limit exceeded".into())
        );
        assert_eq!(Error::from_answer(503, b""), Error::NoLeader);
        assert_eq!(
            Error::from_answer(502, b"bad gateway"),
            Error::Internal("bad gateway".into())
        );
    }

    #[test]
    fn ca_errors_keep_their_kind() {
        assert!(matches!(
            Error::from(trellis_ca::CaError::RateLimited),
            Error::RateLimited(_)
        ));
        assert!(matches!(
            Error::from(trellis_ca::CaError::InvalidCsr("x".into())),
            Error::BadRequest(m) if m == "x"
        ));
    }
}
