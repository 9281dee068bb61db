//! The decision structure: intentions indexed by destination, then source.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Action, HttpRequest, Intention};

/// Why a decision came out as it did (for logs and metrics).
///
/// Carries the matching intention itself: one reference-count increment on memory the
/// decision has just read, rather than copies of its names.
#[derive(Debug, Clone)]
pub enum Reason {
    /// An L4 intention, or an L7 intention's permission, decided.
    Intention {
        /// The matching intention (its source, destination and precedence).
        intention: Arc<Intention>,
        /// The index of the permission that decided, for an L7 intention.
        permission: Option<usize>,
    },
    /// An L7 intention matched at L4: it can only be enforced per request.
    L7AtL4 {
        /// The matching intention.
        intention: Arc<Intention>,
    },
    /// Nothing matched (or no permission of the matching L7 intention did): the default.
    Default,
}

/// Consul's wording: `Matched L4 intention: default/web => default/db (Precedence: 9, Action:
/// ALLOW)`, `Matched L7 intention: …`, or `Default behavior` when nothing matched.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Intention {
                intention,
                permission,
            } => match permission {
                Some(p) => write!(f, "Matched L7 intention: {intention} (permission {p})"),
                None => write!(f, "Matched L4 intention: {intention}"),
            },
            Reason::L7AtL4 { intention } => write!(f, "Matched L7 intention: {intention}"),
            Reason::Default => f.write_str("Default behavior"),
        }
    }
}

impl Reason {
    /// The intention that decided, if any.
    pub fn intention(&self) -> Option<&Intention> {
        match self {
            Reason::Intention { intention, .. } | Reason::L7AtL4 { intention } => Some(intention),
            Reason::Default => None,
        }
    }
}

/// Two reasons are equal when they name the same intention (source, destination, precedence)
/// in the same way.
impl PartialEq for Reason {
    fn eq(&self, other: &Reason) -> bool {
        let same = |a: &Intention, b: &Intention| {
            a.source == b.source && a.destination == b.destination && a.precedence == b.precedence
        };
        match (self, other) {
            (
                Reason::Intention {
                    intention: a,
                    permission: pa,
                },
                Reason::Intention {
                    intention: b,
                    permission: pb,
                },
            ) => pa == pb && same(a, b),
            (Reason::L7AtL4 { intention: a }, Reason::L7AtL4 { intention: b }) => same(a, b),
            (Reason::Default, Reason::Default) => true,
            _ => false,
        }
    }
}

impl Eq for Reason {}

/// An authorization decision and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection or request may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
}

/// The intentions of one destination name (or of the `*` destination), by source.
#[derive(Default, Clone)]
struct ByDestination {
    exact: HashMap<Arc<str>, Arc<Intention>>,
    wildcard: Option<Arc<Intention>>,
}

impl ByDestination {
    fn lookup(&self, source: &str) -> Option<&Arc<Intention>> {
        self.exact.get(source).or(self.wildcard.as_ref())
    }
}

/// Every intention of a datacenter, ready to decide. Changing one destination's intentions
/// touches only that destination's table.
#[derive(Default, Clone)]
pub struct Engine {
    destinations: HashMap<Arc<str>, ByDestination>,
    wildcard: ByDestination,
}

impl Engine {
    /// An engine with no intentions.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Replaces the intentions of one destination (one `service-intentions` entry); an empty
    /// list removes them.
    pub fn set_destination(&mut self, destination: &str, intentions: Vec<Intention>) {
        let mut table = ByDestination::default();
        for i in intentions {
            let i = Arc::new(i);
            if &*i.source == "*" {
                table.wildcard = Some(i);
            } else {
                table.exact.insert(i.source.clone(), i);
            }
        }
        let empty = table.exact.is_empty() && table.wildcard.is_none();
        if destination == "*" {
            self.wildcard = table;
        } else if empty {
            self.destinations.remove(destination);
        } else {
            self.destinations.insert(Arc::from(destination), table);
        }
    }

    /// The intention that applies to `source` → `destination`: the highest precedence of
    /// exact/exact (9), `*`/exact (8), exact/`*` (6), `*`/`*` (5).
    pub fn find(&self, source: &str, destination: &str) -> Option<&Intention> {
        self.find_arc(source, destination).map(|i| &**i)
    }

    fn find_arc(&self, source: &str, destination: &str) -> Option<&Arc<Intention>> {
        self.destinations
            .get(destination)
            .and_then(|t| t.lookup(source))
            .or_else(|| self.wildcard.lookup(source))
    }

    /// The L4 decision for a new connection. An L7 intention cannot be enforced on a
    /// connection and answers "not authorized", as Consul's authorize endpoint does.
    pub fn decide(&self, source: &str, destination: &str, default_allow: bool) -> Decision {
        match self.find_arc(source, destination) {
            None => Decision {
                allowed: default_allow,
                reason: Reason::Default,
            },
            Some(i) => match i.action {
                Some(a) => Decision {
                    allowed: a == Action::Allow,
                    reason: reason(i, None),
                },
                None => Decision {
                    allowed: false,
                    reason: Reason::L7AtL4 {
                        intention: i.clone(),
                    },
                },
            },
        }
    }

    /// The L7 decision for one request: an L4 intention's action, or the first matching
    /// permission's, or the default when no permission matches.
    pub fn decide_request(
        &self,
        source: &str,
        destination: &str,
        req: &HttpRequest<'_>,
        default_allow: bool,
    ) -> Decision {
        match self.find_arc(source, destination) {
            None => Decision {
                allowed: default_allow,
                reason: Reason::Default,
            },
            Some(i) => {
                if let Some(a) = i.action {
                    return Decision {
                        allowed: a == Action::Allow,
                        reason: reason(i, None),
                    };
                }
                match i.permissions.iter().position(|p| p.matches(req)) {
                    Some(k) => Decision {
                        allowed: i.permissions[k].action == Action::Allow,
                        reason: reason(i, Some(k)),
                    },
                    None => Decision {
                        allowed: default_allow,
                        reason: Reason::Default,
                    },
                }
            }
        }
    }

    /// Whether header `name` (lower-case) can change [`Engine::decide_request`]'s answer for
    /// `source` → `destination`: some permission of the intention that applies tests it. A
    /// caller that cannot show the engine a header's value exactly may go on when this is
    /// false (the decision does not read it) and must refuse the request when it is true.
    pub fn reads_header(&self, source: &str, destination: &str, name: &str) -> bool {
        self.find_arc(source, destination).is_some_and(|i| {
            i.action.is_none()
                && i.permissions
                    .iter()
                    .any(|p| p.headers.iter().any(|h| h.name == name))
        })
    }

    /// Number of intentions held.
    pub fn len(&self) -> usize {
        let count = |t: &ByDestination| t.exact.len() + usize::from(t.wildcard.is_some());
        self.destinations.values().map(count).sum::<usize>() + count(&self.wildcard)
    }

    /// Whether no intention is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn reason(i: &Arc<Intention>, permission: Option<usize>) -> Reason {
    Reason::Intention {
        intention: i.clone(),
        permission,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{parse_entry, Engine};

    #[test]
    fn reads_header_names_the_headers_the_applying_intention_tests() {
        let mut e = Engine::new();
        let entry = json!([
            {"Name": "web", "Permissions": [
                {"Action": "deny", "HTTP": {"Header": [{"Name": "X-Debug", "Present": true}]}},
                {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
            ]},
            {"Name": "*", "Action": "allow"}
        ]);
        e.set_destination("api", parse_entry("api", &entry).unwrap());
        assert!(e.reads_header("web", "api", "x-debug"));
        assert!(!e.reads_header("web", "api", "x-other"));
        // An L4 intention, or none, reads no header.
        assert!(!e.reads_header("other", "api", "x-debug"));
        assert!(!e.reads_header("web", "db", "x-debug"));
    }
}
