//! The one error type of the crate.

use std::fmt;

/// A named variable segment of a SPIFFE ID path, used to say which part of an ID is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// The admin partition after `/ap/`.
    Partition,
    /// The namespace after `/ns/`.
    Namespace,
    /// The datacenter after `/dc/`.
    Datacenter,
    /// The service name after `/svc/`.
    Service,
    /// The client agent's node name after `/id/`.
    Node,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Partition => "admin partition",
            Segment::Namespace => "namespace",
            Segment::Datacenter => "datacenter",
            Segment::Service => "service",
            Segment::Node => "node",
        })
    }
}

/// Why a trust domain or SPIFFE ID was rejected.
///
/// Messages that Consul also produces (`SPIFFE ID must have 'spiffe' scheme`, `SPIFFE ID is
/// not in the expected format`) are worded as Consul words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input (or the canonical form of the parsed ID) is over the SPIFFE length limit.
    #[error("SPIFFE ID is {len} bytes long, over the {max}-byte limit", max = crate::MAX_ID_LEN)]
    TooLong {
        /// The length in bytes that was found.
        len: usize,
    },
    /// The input contains an ASCII control character (as Go's URL parser, this is refused).
    #[error("SPIFFE ID contains a control character")]
    ControlCharacter,
    /// The URI scheme is not `spiffe`.
    #[error("SPIFFE ID must have 'spiffe' scheme")]
    WrongScheme,
    /// There is no `//host` authority, or the host is empty.
    #[error("SPIFFE ID must have a trust domain: expected 'spiffe://<trust-domain>'")]
    MissingTrustDomain,
    /// The authority has a `user@` part.
    #[error("SPIFFE ID must not contain user info")]
    UserInfo,
    /// The authority has a `:port` part.
    #[error("SPIFFE ID must not contain a port")]
    Port,
    /// The URI has a `?query` part.
    #[error("SPIFFE ID must not contain a query")]
    Query,
    /// The URI has a `#fragment` part.
    #[error("SPIFFE ID must not contain a fragment")]
    Fragment,
    /// The host (or a string given as a trust domain) is not a valid trust domain.
    #[error("invalid trust domain {domain:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected trust domain, as given.
        domain: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path matches none of the shapes Consul issues.
    #[error("SPIFFE ID is not in the expected format")]
    UnexpectedFormat,
    /// A variable path segment is empty.
    #[error("SPIFFE ID has an empty {0} segment")]
    EmptySegment(Segment),
    /// A path segment has a `%` not followed by two hex digits.
    #[error("invalid {segment} in SPIFFE ID: invalid URL escape {escape:?}")]
    InvalidEscape {
        /// The segment holding the bad escape.
        segment: Segment,
        /// The offending escape, `%` and up to two characters after it.
        escape: String,
    },
    /// A path segment's percent-escapes decode to bytes that are not UTF-8.
    #[error("invalid {0} in SPIFFE ID: escaped bytes are not valid UTF-8")]
    InvalidUtf8(Segment),
    /// A hand-built ID has an admin partition that is not lower-case (parsing lower-cases it).
    #[error("admin partition {0:?} in SPIFFE ID must be lower-case")]
    PartitionNotLowercase(String),
    /// A valid SPIFFE ID was given where a service identity was required.
    #[error("SPIFFE ID {0} is not a service identity")]
    NotAService(String),
}
