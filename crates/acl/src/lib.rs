//! ACL policies: Consul's rule language and the authorizer compiled from a token's policies.
//!
//! Pure and synchronous. [`Rules::parse`] reads a policy's rule text, HCL or JSON (JSON when
//! the first non-blank character is `{`), and checks it in Consul's order with Consul's error
//! texts. [`Authorizer::new`] merges any number of policies (a token's, its roles', the
//! synthetic ones of its [`builtin::service_identity`] and [`builtin::node_identity`]) and
//! answers `service_read`, `intention_write`, `key_list`, `operator_write` and the rest with a
//! [`Decision`], walking the name once through a trie: O(length of the name), whatever the
//! number of rules.
//!
//! # The rule language
//!
//! Labelled resources take an exact form and a `_prefix` form: `agent`, `event`, `key`,
//! `node`, `query`, `service`, `session`, each a block `service "web" { policy = "write" }`
//! (in JSON `{"service": {"web": {"policy": "write"}}}`; a list of such objects is accepted
//! too, as Consul's decoder does). Single-valued resources are plain attributes: `acl`,
//! `keyring`, `mesh`, `operator`, `peering`. Levels are `deny`, `read`, `write`, and `list`
//! on keys. Service rules also take `intentions`.
//!
//! # Semantics (Consul's)
//!
//! - For a name, its exact rule applies; else the longest prefix rule that starts it
//!   (`service_prefix ""` starts every name); else the default policy.
//! - Policies merge before anything is decided: for the same resource and the same exact
//!   name (or the same prefix), `deny` beats `write` beats `list` beats `read`. A merged
//!   exact `read` still beats a prefix `write`: precedence between rules is by match, never
//!   by level.
//! - `write` grants read, list and write; `list` grants read and list; `read` only read;
//!   `deny` nothing.
//! - `intentions` on a service rule sets the level on intentions whose destination the rule
//!   matches. When no merged policy sets it, it is `read` if the service level is `read` or
//!   `write`, and `deny` otherwise: **`service:write` does not give `intentions:write`**, which
//!   must be given explicitly (as in Consul's rule docs and its `newPolicyAuthorizer`).
//!   The defaulting happens after merging, so `intentions = "deny"` in any policy wins.
//! - `mesh` and `peering` fall back to `operator` when no policy sets them.
//! - With `default_policy = allow`, `acl:read`, `acl:write` and snapshots are still denied
//!   unless a rule grants them (Consul's allow-all authorizer does not manage ACLs).
//! - [`Authorizer::key_write_prefix`] (recursive delete) needs write from the prefix rule
//!   that applies and from every rule under the prefix.
//!
//! # Where the notes were silent (decisions)
//!
//! - Unknown resources (`servce "web" {}`) and unknown fields in a rule (`intentons = "deny"`)
//!   are refused with [`RulesError::UnknownResource`] / [`RulesError::UnknownField`]. Consul CE
//!   ignores them, which turns a mistyped `deny` into a wider grant.
//! - `list` is accepted on `key` as on `key_prefix`, as Consul's validator does (an exact
//!   `key` rule of `list` lets that key be listed).
//! - Consul reads rules as HCL 1, which takes several attributes or blocks on one line
//!   (`service "web" { policy = "read" intentions = "read" }`), commas between items and
//!   quoted block types. HCL 2 (the `hcl` crate) refuses these, so text it refuses is
//!   rewritten token by token (a newline after each value and closing brace, commas outside
//!   lists as newlines, quoted types bare) and read once more; if that fails too, HCL 2's
//!   first error is reported.
//! - Keywords, field names and levels are matched ASCII case-insensitively, as Consul's
//!   decoder and `AccessLevelFromString` do.
//! - A repeated attribute (`policy` twice in one block, `operator` twice) keeps the last
//!   value; repeated blocks with the same label are separate rules, merged as above.
//! - Nesting is bounded by the parsers (64 levels in HCL, 128 in JSON), so no input
//!   exhausts the stack; both report a [`RulesError::Syntax`].
//!
//! Enterprise-only parts (namespaces, partitions, Sentinel) are not part of the language.

#![forbid(unsafe_code)]

mod authorizer;
pub mod builtin;
mod rules;

pub use authorizer::{intentions_level, Authorizer, Decision, DefaultPolicy};
pub use rules::{Access, RawRule, Resource, Rule, Rules, RulesError, Single};

#[cfg(test)]
mod tests;
