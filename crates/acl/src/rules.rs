//! The rule language: [`Rules`] read from HCL or JSON text, validated in Consul's order with
//! Consul's error texts.

use std::fmt;

use serde_json::{Map, Value};

/// An access level (Consul calls it a policy disposition).
///
/// When two policies give a level for the same name (or the same prefix), [`Access::merge`]
/// keeps the one that takes precedence: `deny` over `write` over `list` over `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Nothing, and stops any wider rule from applying.
    Deny,
    /// Read only.
    Read,
    /// Read and list (keys only).
    List,
    /// Read, list and write.
    Write,
}

impl Access {
    /// Consul's spelling: `deny`, `read`, `list`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
        }
    }

    /// Reads a level as Consul does (ASCII case-insensitive); `None` for anything else.
    pub fn parse(text: &str) -> Option<Access> {
        [Access::Deny, Access::Read, Access::List, Access::Write]
            .into_iter()
            .find(|a| text.eq_ignore_ascii_case(a.as_str()))
    }

    fn rank(self) -> u8 {
        match self {
            Access::Read => 0,
            Access::List => 1,
            Access::Write => 2,
            Access::Deny => 3,
        }
    }

    /// The level that takes precedence when two rules name the same thing: deny, then write,
    /// then list, then read.
    pub fn merge(self, other: Access) -> Access {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Whether a rule of this level grants `needed` (`Read`, `List` or `Write`; asking for
    /// `Deny` is never granted).
    pub fn grants(self, needed: Access) -> bool {
        match self {
            Access::Write => needed != Access::Deny,
            Access::List => matches!(needed, Access::List | Access::Read),
            Access::Read => needed == Access::Read,
            Access::Deny => false,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource whose rules carry a name: `service "web" { ... }` matches the name exactly,
/// `service_prefix "we" { ... }` every name that starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `agent` / `agent_prefix`: a node's agent endpoints, by node name.
    Agent,
    /// `event` / `event_prefix`: user events, by event name.
    Event,
    /// `key` / `key_prefix`: the KV store, by key.
    Key,
    /// `node` / `node_prefix`: catalog nodes, by name.
    Node,
    /// `query` / `query_prefix`: prepared queries, by name.
    Query,
    /// `service` / `service_prefix`: services, by name; also carries `intentions`.
    Service,
    /// `session` / `session_prefix`: sessions, by node name.
    Session,
}

impl Resource {
    /// Every labelled resource, in a fixed order ([`Resource::index`]).
    pub const ALL: [Resource; 7] = [
        Resource::Agent,
        Resource::Event,
        Resource::Key,
        Resource::Node,
        Resource::Query,
        Resource::Service,
        Resource::Session,
    ];

    /// The exact-match keyword (`service`); the prefix keyword adds `_prefix`.
    pub fn keyword(self) -> &'static str {
        match self {
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Key => "key",
            Resource::Node => "node",
            Resource::Query => "query",
            Resource::Service => "service",
            Resource::Session => "session",
        }
    }

    /// Position in [`Resource::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn allows_list(self) -> bool {
        self == Resource::Key
    }

    /// How Consul prints a rule of this resource in its validation errors (Go's `%#v` of the
    /// rule): the struct name, the label field's name, and whether it has `EnterpriseRule`.
    fn go_shape(self) -> (&'static str, &'static str, bool) {
        match self {
            Resource::Agent => ("AgentRule", "Node", false),
            Resource::Event => ("EventRule", "Event", false),
            Resource::Key => ("KeyRule", "Prefix", true),
            Resource::Node => ("NodeRule", "Name", true),
            Resource::Query => ("PreparedQueryRule", "Prefix", false),
            Resource::Service => ("ServiceRule", "Name", true),
            Resource::Session => ("SessionRule", "Node", false),
        }
    }
}

/// A resource with a single value and no name: `operator = "read"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Single {
    /// `acl`: the ACL system itself (tokens, policies, roles) and snapshots.
    Acl,
    /// `keyring`: the gossip keyring.
    Keyring,
    /// `mesh`: mesh-wide and gateway config entries; falls back to `operator` when unset.
    Mesh,
    /// `operator`: `/v1/operator/*` other than the keyring, and the CA configuration.
    Operator,
    /// `peering`: cluster peering; falls back to `operator` when unset.
    Peering,
}

impl Single {
    /// Every single-valued resource, in a fixed order ([`Single::index`]).
    pub const ALL: [Single; 5] = [
        Single::Acl,
        Single::Keyring,
        Single::Mesh,
        Single::Operator,
        Single::Peering,
    ];

    /// The keyword: `acl`, `keyring`, `mesh`, `operator`, `peering`.
    pub fn keyword(self) -> &'static str {
        match self {
            Single::Acl => "acl",
            Single::Keyring => "keyring",
            Single::Mesh => "mesh",
            Single::Operator => "operator",
            Single::Peering => "peering",
        }
    }

    /// Position in [`Single::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One labelled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// What it is about.
    pub resource: Resource,
    /// `true` for a `*_prefix` rule (matches every name starting with `name`; `""` matches
    /// all), `false` for an exact one.
    pub prefix: bool,
    /// The label: a name, or a prefix.
    pub name: String,
    /// The level (`List` only on keys).
    pub access: Access,
    /// Services only: the level on intentions whose destination this rule matches. `None`
    /// when the rule does not say; the authorizer then derives it (see the crate docs).
    pub intentions: Option<Access>,
}

impl Rule {
    /// An exact rule without `intentions`.
    pub fn exact(resource: Resource, name: impl Into<String>, access: Access) -> Rule {
        Rule {
            resource,
            prefix: false,
            name: name.into(),
            access,
            intentions: None,
        }
    }

    /// A prefix rule without `intentions`.
    pub fn prefix(resource: Resource, prefix: impl Into<String>, access: Access) -> Rule {
        Rule {
            prefix: true,
            ..Rule::exact(resource, prefix, access)
        }
    }

    /// The same rule with an explicit `intentions` level.
    pub fn with_intentions(self, intentions: Access) -> Rule {
        Rule {
            intentions: Some(intentions),
            ..self
        }
    }
}

/// The rules of one policy, as written (duplicates are merged only by the authorizer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Labelled rules, in the order they were read.
    pub rules: Vec<Rule>,
    /// Single-valued resources, indexed by [`Single::index`]; `None` when not given (an
    /// empty string counts as not given, as in Consul).
    pub single: [Option<Access>; 5],
}

impl Rules {
    /// Reads rules from Consul's rule text: JSON when the first non-blank character is `{`,
    /// HCL otherwise; blank text is no rules. Errors carry Consul's texts.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Ok(Rules::default());
        }
        let value: Value = if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?
        } else {
            match hcl::from_str(text) {
                Ok(v) => v,
                // Consul reads rules as HCL 1, which is laxer than HCL 2 in ways rules use.
                Err(e) => hcl1_to_hcl2(text)
                    .and_then(|t| hcl::from_str(&t).ok())
                    .ok_or_else(|| RulesError::Syntax(e.to_string()))?,
            }
        };
        let raw = decode(&value)?;
        raw.validate()
    }

    /// The level given for a single-valued resource.
    pub fn single(&self, which: Single) -> Option<Access> {
        self.single[which.index()]
    }

    /// Sets the level of a single-valued resource.
    pub fn set_single(&mut self, which: Single, access: Access) {
        self.single[which.index()] = Some(access);
    }
}

impl std::str::FromStr for Rules {
    type Err = RulesError;

    fn from_str(text: &str) -> Result<Rules, RulesError> {
        Rules::parse(text)
    }
}

/// Why rule text was refused. The texts are Consul's where Consul has one
/// (`Failed to parse ACL rules: ...`, `Invalid <resource> policy: <rule as Go prints it>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not HCL, or not JSON.
    #[error("Failed to parse ACL rules: {0}")]
    Syntax(String),
    /// A top-level key that is no resource (`servce "web" { ... }`).
    #[error("Failed to parse ACL rules: unknown resource {}", go_quote(.0))]
    UnknownResource(String),
    /// A key inside a rule other than `policy` (and, for services, `intentions`).
    #[error("Failed to parse ACL rules: unknown field {} in {resource} {}", go_quote(.field), go_quote(.name))]
    UnknownField {
        /// The resource keyword, with `_prefix` if it was a prefix rule.
        resource: String,
        /// The rule's label.
        name: String,
        /// The unknown key.
        field: String,
    },
    /// A value of the wrong type where a string, a rule or a set of rules was expected.
    #[error("Failed to parse ACL rules: {what} must be {expected}")]
    Shape {
        /// Where: the resource keyword, and label and field when there are some.
        what: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A labelled rule's `policy` is not an access level it accepts.
    #[error("Invalid {} policy: {rule}", rule.keyword())]
    InvalidPolicy {
        /// The rule as written.
        rule: RawRule,
    },
    /// A service rule's `intentions` is not `deny`, `read` or `write`.
    #[error("Invalid {} intentions policy: {rule}", rule.keyword())]
    InvalidIntentions {
        /// The rule as written.
        rule: RawRule,
    },
    /// A single-valued resource's value is not `deny`, `read` or `write`.
    #[error("Invalid {} policy: {}", .which.keyword(), go_quote(.value))]
    InvalidSingle {
        /// Which resource.
        which: Single,
        /// The value as written.
        value: String,
    },
}

/// A labelled rule as written, before its levels are checked; shown in errors the way Consul
/// prints it (`&acl.ServiceRule{Name:"web", Policy:"nope", Intentions:"", ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRule {
    /// What it is about.
    pub resource: Resource,
    /// Whether it was a `*_prefix` rule.
    pub prefix: bool,
    /// The label.
    pub name: String,
    /// `policy` as written (`""` when absent).
    pub policy: String,
    /// `intentions` as written (`""` when absent).
    pub intentions: String,
}

impl RawRule {
    fn keyword(&self) -> String {
        if self.prefix {
            format!("{}_prefix", self.resource.keyword())
        } else {
            self.resource.keyword().to_owned()
        }
    }
}

impl fmt::Display for RawRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ty, label, enterprise) = self.resource.go_shape();
        write!(
            f,
            "&acl.{ty}{{{label}:{}, Policy:{}",
            go_quote(&self.name),
            go_quote(&self.policy)
        )?;
        if self.resource == Resource::Service {
            write!(f, ", Intentions:{}", go_quote(&self.intentions))?;
        }
        if enterprise {
            f.write_str(", EnterpriseRule:acl.EnterpriseRule{}")?;
        }
        f.write_str("}")
    }
}

/// A string quoted the way Go's `%#v` prints it (`strconv.Quote`), near enough: quotes,
/// backslashes and control characters escaped, everything else as is.
fn go_quote(s: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a brace or bracket opened, for [`hcl1_to_hcl2`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nest {
    /// A block's body: items end at newlines.
    Body,
    /// An object value (`key = { ... }`): items end at newlines or commas.
    Object,
    /// A list: items end at commas, newlines do not matter.
    List,
}

/// Rewrites rule text from HCL 1, as Consul reads it, into HCL 2: HCL 1 lets one line hold
/// several attributes or blocks (`service "web" { policy = "read" intentions = "read" }`),
/// separates items with commas, and lets a block's type be quoted (`"service" "web" {}`).
/// Each value and closing brace gets a newline after it, commas outside lists become
/// newlines, a quoted type becomes a bare one, and comments go. `None` when the text cannot
/// be tokenised (an unterminated string or comment); the HCL 2 parser judges the rest.
fn hcl1_to_hcl2(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut stack: Vec<Nest> = Vec::new();
    let mut chars = text.char_indices().peekable();
    // Whether the next token starts an item (so a quoted word there is a block type), and
    // whether the previous token was `=` (so the next scalar ends an item).
    let mut item_start = true;
    let mut after_eq = false;
    while let Some((i, c)) = chars.next() {
        let top = stack.last().copied().unwrap_or(Nest::Body);
        match c {
            '#' => {
                while chars.peek().is_some_and(|(_, c)| *c != '\n') {
                    chars.next();
                }
            }
            '/' if chars.peek().is_some_and(|(_, c)| *c == '/') => {
                while chars.peek().is_some_and(|(_, c)| *c != '\n') {
                    chars.next();
                }
            }
            '/' if chars.peek().is_some_and(|(_, c)| *c == '*') => {
                chars.next();
                let mut prev = ' ';
                loop {
                    let (_, c) = chars.next()?;
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            '"' => {
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '\n' => return None,
                        '"' => {
                            end = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end?;
                let inner = &text[i + 1..end];
                let bare = inner.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if item_start && top == Nest::Body && bare {
                    out.push_str(inner);
                } else {
                    out.push_str(&text[i..=end]);
                }
                item_start = false;
                if after_eq && top != Nest::List {
                    out.push('\n');
                    item_start = true;
                }
                after_eq = false;
            }
            '{' => {
                stack.push(if after_eq || top == Nest::List {
                    Nest::Object
                } else {
                    Nest::Body
                });
                out.push_str("{\n");
                item_start = true;
                after_eq = false;
            }
            '[' => {
                stack.push(Nest::List);
                out.push('[');
                item_start = false;
                after_eq = false;
            }
            '}' | ']' => {
                stack.pop();
                out.push(c);
                out.push('\n');
                item_start = true;
                after_eq = false;
            }
            ',' if top != Nest::List => {
                out.push('\n');
                item_start = true;
                after_eq = false;
            }
            '=' | ':' if top != Nest::List => {
                out.push('=');
                after_eq = true;
                item_start = false;
            }
            c if c.is_whitespace() => out.push(c),
            c if c.is_ascii_alphanumeric() || "_-.+".contains(c) => {
                out.push(c);
                while let Some((_, c)) =
                    chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || "_-.+".contains(*c))
                {
                    out.push(c);
                }
                item_start = false;
                if after_eq && top != Nest::List {
                    out.push('\n');
                    item_start = true;
                }
                after_eq = false;
            }
            c => {
                out.push(c);
                item_start = false;
                after_eq = false;
            }
        }
    }
    Some(out)
}

/// The rules as decoded, levels not yet checked.
#[derive(Default)]
struct RawRules {
    rules: Vec<RawRule>,
    single: [Option<String>; 5],
}

impl RawRules {
    /// Checks every level in Consul's order (`acl`, then each labelled resource exact before
    /// prefix in keyword order, then `keyring`, `operator`, `mesh`, `peering`), reporting the
    /// first problem.
    fn validate(self) -> Result<Rules, RulesError> {
        let single = |which: Single, out: &mut [Option<Access>; 5]| -> Result<(), RulesError> {
            match self.single[which.index()].as_deref() {
                None | Some("") => Ok(()),
                Some(v) => match Access::parse(v).filter(|a| *a != Access::List) {
                    Some(a) => {
                        out[which.index()] = Some(a);
                        Ok(())
                    }
                    None => Err(RulesError::InvalidSingle {
                        which,
                        value: v.to_owned(),
                    }),
                },
            }
        };
        let mut out = Rules::default();
        single(Single::Acl, &mut out.single)?;
        // Consul's order of labelled resources in its validation.
        let order = [
            Resource::Agent,
            Resource::Key,
            Resource::Node,
            Resource::Service,
            Resource::Session,
            Resource::Event,
            Resource::Query,
        ];
        // Checked in Consul's order, kept in the text's order.
        let mut checked: Vec<Option<Rule>> = vec![None; self.rules.len()];
        for resource in order {
            for prefix in [false, true] {
                for (i, raw) in self.rules.iter().enumerate() {
                    if raw.resource != resource || raw.prefix != prefix {
                        continue;
                    }
                    let access = Access::parse(&raw.policy)
                        .filter(|a| *a != Access::List || resource.allows_list())
                        .ok_or_else(|| RulesError::InvalidPolicy { rule: raw.clone() })?;
                    let intentions =
                        match raw.intentions.as_str() {
                            "" => None,
                            v => Some(Access::parse(v).filter(|a| *a != Access::List).ok_or_else(
                                || RulesError::InvalidIntentions { rule: raw.clone() },
                            )?),
                        };
                    checked[i] = Some(Rule {
                        resource,
                        prefix,
                        name: raw.name.clone(),
                        access,
                        intentions,
                    });
                }
            }
        }
        for which in [
            Single::Keyring,
            Single::Operator,
            Single::Mesh,
            Single::Peering,
        ] {
            single(which, &mut out.single)?;
        }
        out.rules = checked.into_iter().flatten().collect();
        Ok(out)
    }
}

/// Which resource a top-level key names (ASCII case-insensitive, as Consul's decoder).
enum Keyword {
    Labelled(Resource, bool),
    Single(Single),
}

fn keyword(key: &str) -> Option<Keyword> {
    if let Some(s) = Single::ALL
        .into_iter()
        .find(|s| key.eq_ignore_ascii_case(s.keyword()))
    {
        return Some(Keyword::Single(s));
    }
    for r in Resource::ALL {
        let kw = r.keyword();
        if key.eq_ignore_ascii_case(kw) {
            return Some(Keyword::Labelled(r, false));
        }
        if key.len() == kw.len() + "_prefix".len()
            && key.is_char_boundary(kw.len())
            && key[..kw.len()].eq_ignore_ascii_case(kw)
            && key[kw.len()..].eq_ignore_ascii_case("_prefix")
        {
            return Some(Keyword::Labelled(r, true));
        }
    }
    None
}

/// Walks the decoded document (HCL turned into its JSON form, or JSON as written). A
/// resource's value is an object of label to rule body, or a list of such objects; a body is
/// an object, or a list of objects (repeated blocks with one label).
fn decode(value: &Value) -> Result<RawRules, RulesError> {
    let top = value.as_object().ok_or_else(|| RulesError::Shape {
        what: "the rules".into(),
        expected: "an object",
    })?;
    let mut raw = RawRules::default();
    for (key, v) in top {
        match keyword(key) {
            None => return Err(RulesError::UnknownResource(key.clone())),
            Some(Keyword::Single(s)) => {
                let text = v.as_str().ok_or_else(|| RulesError::Shape {
                    what: format!("{key:?}"),
                    expected: "a string",
                })?;
                raw.single[s.index()] = Some(text.to_owned());
            }
            Some(Keyword::Labelled(resource, prefix)) => {
                let what = || format!("{key:?}");
                for labels in objects(v, what)? {
                    for (name, body) in labels {
                        for body in objects(body, || format!("{key:?} {name:?}"))? {
                            raw.rules
                                .push(decode_body(resource, prefix, key, name, body)?);
                        }
                    }
                }
            }
        }
    }
    Ok(raw)
}

/// An object, or each object of a list of objects.
fn objects(v: &Value, what: impl Fn() -> String) -> Result<Vec<&Map<String, Value>>, RulesError> {
    let shape = || RulesError::Shape {
        what: what(),
        expected: "an object or a list of objects",
    };
    match v {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_object().ok_or_else(shape))
            .collect(),
        _ => Err(shape()),
    }
}

fn decode_body(
    resource: Resource,
    prefix: bool,
    key: &str,
    name: &str,
    body: &Map<String, Value>,
) -> Result<RawRule, RulesError> {
    let mut rule = RawRule {
        resource,
        prefix,
        name: name.to_owned(),
        policy: String::new(),
        intentions: String::new(),
    };
    for (field, v) in body {
        let slot = if field.eq_ignore_ascii_case("policy") {
            &mut rule.policy
        } else if resource == Resource::Service && field.eq_ignore_ascii_case("intentions") {
            &mut rule.intentions
        } else {
            return Err(RulesError::UnknownField {
                resource: key.to_owned(),
                name: name.to_owned(),
                field: field.clone(),
            });
        };
        *slot = v
            .as_str()
            .ok_or_else(|| RulesError::Shape {
                what: format!("{key:?} {name:?} {field:?}"),
                expected: "a string",
            })?
            .to_owned();
    }
    Ok(rule)
}
