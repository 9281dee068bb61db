//! Intentions, permissions and how they are read from a `service-intentions` config entry.

use std::collections::HashSet;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use trellis_api::lenient::{Field, Lenient};
use trellis_api::{ActionSpec, HeaderSpec, PermissionSpec, ServiceIntentions, SourceSpec};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// How a request's path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole path (compiled once).
    Regex(Regex),
}

/// How one header is tested.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    /// Present (`true`) or absent (`false`).
    Present(bool),
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Matches the whole value (compiled once).
    Regex(Regex),
}

/// A header condition of an L7 permission.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Header name, lower-case.
    pub name: String,
    /// The test.
    pub test: HeaderTest,
    /// Negate the test.
    pub invert: bool,
}

/// One L7 permission: an action and the request it applies to.
#[derive(Debug, Clone)]
pub struct Permission {
    /// What happens to a matching request.
    pub action: Action,
    /// Path condition, if any.
    pub path: Option<PathMatch>,
    /// Header conditions (all must hold).
    pub headers: Vec<HeaderMatch>,
    /// Methods (upper-case); empty means any.
    pub methods: Vec<String>,
}

/// The parts of an HTTP request L7 permissions look at.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest<'a> {
    /// Method, upper-case.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Headers (names lower-case); a repeated header appears once per value.
    pub headers: &'a [(&'a str, &'a str)],
}

/// One intention: source to destination, L4 (an action) or L7 (permissions).
#[derive(Debug, Clone)]
pub struct Intention {
    /// Source service name or `*`.
    pub source: Arc<str>,
    /// Destination service name or `*`.
    pub destination: Arc<str>,
    /// L4 action; `None` for an L7 intention.
    pub action: Option<Action>,
    /// L7 permissions, in order; empty for an L4 intention.
    pub permissions: Vec<Permission>,
    /// Consul's precedence.
    pub precedence: u8,
}

/// `default/web => default/db (Precedence: 9, Action: ALLOW)`: namespace/name on each side (the
/// partition prefix is empty in this edition), as Consul's reasons print an intention.
impl std::fmt::Display for Intention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NS: &str = "default";
        write!(
            f,
            "{NS}/{} => {NS}/{} (Precedence: {}, ",
            self.source, self.destination, self.precedence
        )?;
        match self.action {
            Some(Action::Allow) => f.write_str("Action: ALLOW)"),
            Some(Action::Deny) => f.write_str("Action: DENY)"),
            None => write!(f, "Permissions: {})", self.permissions.len()),
        }
    }
}

/// Consul's precedence for the default namespace: 9, 8, 6 or 5.
pub fn precedence(source: &str, destination: &str) -> u8 {
    match (destination == "*", source == "*") {
        (false, false) => 9,
        (false, true) => 8,
        (true, false) => 6,
        (true, true) => 5,
    }
}

impl Permission {
    /// Whether the request matches this permission's conditions.
    pub fn matches(&self, req: &HttpRequest<'_>) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) => req.path == p,
            Some(PathMatch::Prefix(p)) => req.path.starts_with(p.as_str()),
            Some(PathMatch::Regex(r)) => r.is_match(req.path),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && self.headers.iter().all(|h| h.matches(req.headers))
    }
}

impl HeaderMatch {
    /// Whether the headers satisfy this condition, as Envoy (Consul's data plane) evaluates it:
    /// a repeated header's values are joined with `,` and tested once; an absent header
    /// matches only a `Present` test that asks for absence (`Present` with `Invert`), so an
    /// inverted value test does not match a request without the header.
    pub fn matches(&self, headers: &[(&str, &str)]) -> bool {
        let mut values = headers
            .iter()
            .filter(|(n, _)| *n == self.name)
            .map(|(_, v)| *v);
        let Some(first) = values.next() else {
            return match self.test {
                HeaderTest::Present(want) => want == self.invert,
                _ => false,
            };
        };
        let joined: std::borrow::Cow<'_, str> = match values.next() {
            None => first.into(),
            Some(second) => {
                let mut all = format!("{first},{second}");
                for v in values {
                    all.push(',');
                    all.push_str(v);
                }
                all.into()
            }
        };
        let v = joined.as_ref();
        let ok = match &self.test {
            HeaderTest::Present(want) => *want,
            HeaderTest::Exact(x) => v == x,
            HeaderTest::Prefix(x) => v.starts_with(x.as_str()),
            HeaderTest::Suffix(x) => v.ends_with(x.as_str()),
            HeaderTest::Regex(r) => r.is_match(v),
        };
        ok != self.invert
    }
}

fn full_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// `Action`: `allow`, `deny`, or a problem (a mistyped one worded by the decoder).
fn action(v: &Lenient<ActionSpec>, at: &str, problems: &mut Vec<String>) -> Option<Action> {
    v.check(at, "Action", problems);
    match v.get()? {
        ActionSpec::Allow => Some(Action::Allow),
        ActionSpec::Deny => Some(Action::Deny),
    }
}

/// A string field's value when set (not `""`); a mistyped one is a problem.
fn text<'v>(
    v: &'v Lenient<String>,
    at: &str,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<&'v str> {
    v.check(at, key, problems);
    v.get().map(String::as_str)
}

/// A boolean field's value when set; a mistyped one is a problem.
fn flag(v: &Lenient<bool>, at: &str, key: &str, problems: &mut Vec<String>) -> Option<bool> {
    v.check(at, key, problems);
    v.get().copied()
}

/// A list field's elements when set; a mistyped one is a problem.
fn list<'v, T: Field>(
    v: &'v Lenient<Vec<Lenient<T>>>,
    at: &str,
    key: &str,
    problems: &mut Vec<String>,
) -> &'v [Lenient<T>] {
    v.check(at, key, problems);
    v.get().map_or(&[], Vec::as_slice)
}

fn permission(
    spec: &Lenient<PermissionSpec>,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<Permission> {
    // Anything but an object reads as an object without fields.
    let empty = PermissionSpec::default();
    let spec = spec.get().unwrap_or(&empty);
    let act = action(&spec.action, at, problems);
    if spec.action.is_absent() {
        problems.push(format!("{at}.Action is required"));
    }
    let http = match &spec.http {
        Lenient::Set(h) => h,
        Lenient::Invalid(_) => {
            spec.http.check(at, "HTTP", problems);
            return None;
        }
        Lenient::Absent => {
            problems.push(format!("{at}.HTTP is required"));
            return None;
        }
    };
    let hat = format!("{at}.HTTP");
    // Problems found from here on are about the HTTP block's contents.
    let before = problems.len();
    let exact = text(&http.path_exact, &hat, "PathExact", problems);
    let prefix = text(&http.path_prefix, &hat, "PathPrefix", problems);
    let regex = text(&http.path_regex, &hat, "PathRegex", problems);
    let mut path = None;
    if [exact, prefix, regex].iter().flatten().count() > 1 {
        problems.push(format!(
            "{hat}: at most one of PathExact, PathPrefix, PathRegex may be set"
        ));
    } else if let Some(p) = exact {
        if !p.starts_with('/') {
            problems.push(format!("{hat}.PathExact must start with '/'"));
        }
        path = Some(PathMatch::Exact(p.to_string()));
    } else if let Some(p) = prefix {
        if !p.starts_with('/') {
            problems.push(format!("{hat}.PathPrefix must start with '/'"));
        }
        path = Some(PathMatch::Prefix(p.to_string()));
    } else if let Some(p) = regex {
        match full_regex(p) {
            Ok(r) => path = Some(PathMatch::Regex(r)),
            Err(e) => problems.push(format!("{hat}.PathRegex does not compile: {e}")),
        }
    }
    let mut methods = Vec::new();
    for (i, m) in list(&http.methods, &hat, "Methods", problems)
        .iter()
        .enumerate()
    {
        let Some(m) = m.get().map(|m| m.0.to_ascii_uppercase()) else {
            problems.push(format!("{hat}.Methods[{i}] must be a string"));
            continue;
        };
        const KNOWN: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        if !KNOWN.contains(&m.as_str()) {
            problems.push(format!("{hat}.Methods[{i}] {m:?} is not an HTTP method"));
        } else if methods.contains(&m) {
            problems.push(format!("{hat}.Methods[{i}] {m:?} is listed twice"));
        } else {
            methods.push(m);
        }
    }
    let mut headers = Vec::new();
    let no_fields = HeaderSpec::default();
    for (i, h) in list(&http.header, &hat, "Header", problems)
        .iter()
        .enumerate()
    {
        let at = format!("{hat}.Header[{i}]");
        let h = h.get().unwrap_or(&no_fields);
        let Some(name) = h.name.get() else {
            problems.push(format!("{at}.Name is required"));
            continue;
        };
        let header_before = problems.len();
        let mut tests = Vec::new();
        // `"Present": false` is Go's zero value: not a test.
        if flag(&h.present, &at, "Present", problems) == Some(true) {
            tests.push(HeaderTest::Present(true));
        }
        if let Some(x) = text(&h.exact, &at, "Exact", problems) {
            tests.push(HeaderTest::Exact(x.to_string()));
        }
        if let Some(x) = text(&h.prefix, &at, "Prefix", problems) {
            tests.push(HeaderTest::Prefix(x.to_string()));
        }
        if let Some(x) = text(&h.suffix, &at, "Suffix", problems) {
            tests.push(HeaderTest::Suffix(x.to_string()));
        }
        if let Some(x) = text(&h.regex, &at, "Regex", problems) {
            match full_regex(x) {
                Ok(r) => tests.push(HeaderTest::Regex(r)),
                Err(e) => problems.push(format!("{at}.Regex does not compile: {e}")),
            }
        }
        let invert = flag(&h.invert, &at, "Invert", problems).unwrap_or(false);
        // No test is worth its own message only when nothing else was wrong with the header
        // (a bad Regex or a mistyped field already said why).
        if tests.len() > 1 || (tests.is_empty() && problems.len() == header_before) {
            problems.push(format!(
                "{at}: exactly one of Present, Exact, Prefix, Suffix, Regex must be set"
            ));
        }
        if tests.len() != 1 {
            continue;
        }
        headers.push(HeaderMatch {
            name: name.to_ascii_lowercase(),
            test: tests.remove(0),
            invert,
        });
    }
    if path.is_none() && methods.is_empty() && headers.is_empty() && problems.len() == before {
        problems.push(format!("{hat} should not be empty"));
    }
    Some(Permission {
        action: act?,
        path,
        headers,
        methods,
    })
}

fn valid_name(name: &str) -> bool {
    name == "*" || (!name.is_empty() && !name.contains('*'))
}

/// Reads a `service-intentions` entry's `Sources`, given as JSON, into intentions, or every
/// problem found (see [`parse_sources`]).
pub fn parse_entry(destination: &str, sources: &Value) -> Result<Vec<Intention>, Vec<String>> {
    parse_sources(destination, &Lenient::from_value(sources.clone()))
}

/// Reads a `service-intentions` entry (its name and view) into intentions, or every problem
/// found.
pub fn parse_intentions(
    destination: &str,
    entry: &ServiceIntentions,
) -> Result<Vec<Intention>, Vec<String>> {
    parse_sources(destination, &entry.sources)
}

/// Reads the `Sources` of the `service-intentions` entry named `destination` into intentions,
/// or every problem found.
pub fn parse_sources(
    destination: &str,
    sources: &Lenient<Vec<Lenient<SourceSpec>>>,
) -> Result<Vec<Intention>, Vec<String>> {
    let mut problems = Vec::new();
    if !valid_name(destination) {
        problems.push(format!(
            "Name {destination:?}: wildcards must be the whole name (\"*\")"
        ));
    }
    let Some(list) = sources.get().filter(|l| !l.is_empty()) else {
        return Err(vec!["Sources must be a non-empty list".into()]);
    };
    // Anything but an object reads as an object without fields.
    let no_fields = SourceSpec::default();
    let mut out: Vec<Intention> = Vec::new();
    // Names seen so far (every source with a name is pushed to `out`): a hash lookup per
    // source, not a scan of those before it.
    let mut seen: HashSet<&str> = HashSet::with_capacity(list.len());
    for (i, src) in list.iter().enumerate() {
        let at = format!("Sources[{i}]");
        let src = src.get().unwrap_or(&no_fields);
        let name = src.name.text();
        if name.is_empty() {
            problems.push(format!("{at}.Name is required"));
            continue;
        }
        if !valid_name(name) {
            problems.push(format!(
                "{at}.Name {name:?}: wildcards must be the whole name (\"*\")"
            ));
        }
        if !seen.insert(name) {
            problems.push(format!("{at}.Name {name:?} is listed more than once"));
        }
        let before = problems.len();
        src.permissions.check(&at, "Permissions", &mut problems);
        let perms = src.permissions.get().filter(|p| !p.is_empty());
        let perms_mistyped = problems.len() > before;
        let act = action(&src.action, &at, &mut problems);
        let mut permissions = Vec::new();
        match (!src.action.is_absent(), perms) {
            (true, Some(_)) => problems.push(format!(
                "{at}: Action and Permissions are mutually exclusive"
            )),
            (false, None) if perms_mistyped => {}
            (false, None) => problems.push(format!(
                "{at}.Action is required when there are no Permissions"
            )),
            (false, Some(perms)) => {
                if destination == "*" {
                    problems.push(format!(
                        "{at}: Permissions cannot be used on a wildcard destination"
                    ));
                }
                for (j, p) in perms.iter().enumerate() {
                    if let Some(p) = permission(p, &format!("{at}.Permissions[{j}]"), &mut problems)
                    {
                        permissions.push(p);
                    }
                }
            }
            (true, None) => {}
        }
        out.push(Intention {
            source: Arc::from(name),
            destination: Arc::from(destination),
            action: act,
            permissions,
            precedence: precedence(name, destination),
        });
    }
    if problems.is_empty() {
        out.sort_by(|a, b| {
            b.precedence
                .cmp(&a.precedence)
                .then_with(|| a.source.cmp(&b.source))
        });
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod duplicate_tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::parse_entry;

    /// A `Name` as a request may carry it: a few names (so duplicates are common), `*`, a bad
    /// wildcard, the empty name, no name, and a name that is not a string.
    fn name() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            4 => prop::sample::select(vec!["web", "api", "db", "Web", "web "]).prop_map(|n| Some(json!(n))),
            1 => Just(Some(json!("*"))),
            1 => Just(Some(json!("we*b"))),
            1 => Just(Some(json!(""))),
            1 => Just(None),
            1 => Just(Some(json!(7))),
        ]
    }

    fn source() -> impl Strategy<Value = Value> {
        (name(), any::<bool>()).prop_map(|(name, allow)| {
            let mut src = json!({"Action": if allow { "allow" } else { "deny" }});
            if let Some(n) = name {
                src["Name"] = n;
            }
            src
        })
    }

    /// The duplicate problems the brute-force rule gives: a source whose name (a non-empty
    /// string) an earlier source already used, compared with every earlier source.
    fn brute_force_duplicates(sources: &[Value]) -> Vec<String> {
        let name = |s: &Value| {
            s.get("Name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut out = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            let n = name(src);
            if !n.is_empty() && sources[..i].iter().any(|earlier| name(earlier) == n) {
                out.push(format!("Sources[{i}].Name {n:?} is listed more than once"));
            }
        }
        out
    }

    proptest! {
        /// The hashed duplicate check reports exactly the brute-force model's duplicates, with
        /// the same messages in the same order, and refuses an entry exactly when it has one
        /// (the sources are otherwise valid unless a name is bad).
        #[test]
        fn duplicates_match_a_brute_force_model(
            dest in prop::sample::select(vec!["db", "*"]),
            sources in prop::collection::vec(source(), 1..40),
        ) {
            let want = brute_force_duplicates(&sources);
            let got: Vec<String> = match parse_entry(dest, &Value::Array(sources.clone())) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.len(), sources.len());
                    Vec::new()
                }
                Err(problems) => problems
                    .into_iter()
                    .filter(|p| p.ends_with("is listed more than once"))
                    .collect(),
            };
            prop_assert_eq!(got, want);
        }
    }

    /// 50,000 distinct sources parse, and one repeated at the end is the only problem.
    #[test]
    fn many_sources_and_one_duplicate() {
        let mut sources: Vec<Value> = (0..50_000)
            .map(|i| json!({"Name": format!("src-{i}"), "Action": "allow"}))
            .collect();
        assert_eq!(
            parse_entry("db", &Value::Array(sources.clone()))
                .unwrap()
                .len(),
            50_000
        );
        sources.push(json!({"Name": "src-49999", "Action": "deny"}));
        assert_eq!(
            parse_entry("db", &Value::Array(sources)).unwrap_err(),
            vec!["Sources[50000].Name \"src-49999\" is listed more than once".to_string()]
        );
    }
}
