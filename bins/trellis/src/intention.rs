//! `trellis intention ...`: Consul's `consul intention` commands, with its flags, output, error
//! messages and exit codes, over the agent's `/v1/connect/intentions*` HTTP API.
//!
//! Writes go through `PUT /v1/connect/intentions/exact` (Consul 1.9+'s upsert by name), so
//! `create` looks the pair up first and refuses an existing one unless `-replace` is given.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use trellis_api::lenient::Lenient;

use crate::cli::{
    HttpArgs, IntentionArgs, IntentionCommand, IntentionCreateArgs, IntentionMatchArgs,
};

/// Exit code of `intention check` when the connection would be denied (Consul's).
pub const CHECK_DENIED: u8 = 1;
/// Exit code of `intention check` on a usage or request error (Consul's).
pub const CHECK_ERROR: u8 = 2;
/// Exit code of `intention list` when there are no intentions (Consul's).
pub const LIST_EMPTY: u8 = 2;

/// Runs one `trellis intention` command, reports its errors on stderr and returns its exit
/// code: 0 on success, 1 on errors (2 for `check`, whose 1 means "denied").
pub async fn run(cmd: IntentionCommand) -> ExitCode {
    let (outcome, on_error) = match cmd {
        IntentionCommand::Create(args) => (create(args).await, 1),
        IntentionCommand::Get(args) => (get(args).await, 1),
        IntentionCommand::Delete(args) => (delete(args).await, 1),
        IntentionCommand::List(args) => (list(args).await, 1),
        IntentionCommand::Check(args) => (check(args).await, CHECK_ERROR),
        IntentionCommand::Match(args) => (match_intentions(args).await, 1),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(on_error)
        }
    }
}

/// An intention as `/v1/connect/intentions*` returns it (the fields this CLI shows).
/// Absent and `null` fields read as empty.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Intention {
    /// Legacy UUID; empty for intentions written by name.
    #[serde(rename = "ID", deserialize_with = "nullable")]
    pub id: String,
    /// Free-form description.
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    /// Source namespace (Enterprise; `default` or empty in CE).
    #[serde(rename = "SourceNS", deserialize_with = "nullable")]
    pub source_ns: String,
    /// Source service name, or `*`.
    #[serde(deserialize_with = "nullable")]
    pub source_name: String,
    /// Destination namespace (Enterprise; `default` or empty in CE).
    #[serde(rename = "DestinationNS", deserialize_with = "nullable")]
    pub destination_ns: String,
    /// Destination service name, or `*`.
    #[serde(deserialize_with = "nullable")]
    pub destination_name: String,
    /// `allow` or `deny`; empty for L7 intentions.
    #[serde(deserialize_with = "nullable")]
    pub action: String,
    /// L7 permissions, shown as JSON.
    #[serde(deserialize_with = "nullable")]
    pub permissions: Vec<Value>,
    /// Legacy per-intention metadata.
    #[serde(deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
    /// Evaluation order: higher first.
    #[serde(deserialize_with = "nullable")]
    pub precedence: i64,
    /// Creation time (legacy intentions only).
    #[serde(deserialize_with = "nullable")]
    pub created_at: Option<String>,
    /// Last update time (legacy intentions only).
    #[serde(deserialize_with = "nullable")]
    pub updated_at: Option<String>,
}

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Intention {
    /// Consul's one-line form: `web => db (allow)`, or `(2 permissions)` for an L7 intention.
    pub fn summary(&self) -> String {
        summary(
            &self.source_shown(),
            &self.destination_shown(),
            &detail(&self.action, self.permissions.len()),
        )
    }

    /// The source as Consul prints it: `name`, or `ns/name` outside the default namespace.
    pub fn source_shown(&self) -> String {
        display_target(&self.source_ns, &self.source_name)
    }

    /// The destination as Consul prints it.
    pub fn destination_shown(&self) -> String {
        display_target(&self.destination_ns, &self.destination_name)
    }
}

fn summary(source: &str, destination: &str, detail: &str) -> String {
    format!("{source} => {destination} ({detail})")
}

/// What Consul shows in parentheses: the action, or how many L7 permissions there are.
fn detail(action: &str, permissions: usize) -> String {
    match permissions {
        0 => action.to_string(),
        1 => "1 permission".to_string(),
        n => format!("{n} permissions"),
    }
}

/// `ns/name`, or just `name` in the default namespace (as Consul prints intentions).
fn display_target(ns: &str, name: &str) -> String {
    if ns.is_empty() || ns == "default" {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// A `[partition/][namespace/]name` argument as Consul prints it: the name, prefixed by a
/// namespace other than `default`.
fn display_arg(target: &str) -> String {
    let mut parts = target.rsplit('/');
    let name = parts.next().unwrap_or_default();
    display_target(parts.next().unwrap_or_default(), name)
}

/// Checks a `[partition/][namespace/]name` argument.
fn check_target(target: &str, what: &str) -> anyhow::Result<()> {
    if target.split('/').count() > 3 {
        bail!("Error: Invalid intention {what}: input can contain at most two '/'");
    }
    Ok(())
}

/// Lines aligned in columns as Consul's CLI prints them (columnize): every column but the last
/// padded to its widest cell, columns joined by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// The agent's HTTP API, with the ACL token if one was given.
struct Agent {
    client: trellis_client::AgentClient,
}

/// An answer from the agent: status and body text.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    /// Consul's API client error for a non-2xx answer.
    fn unexpected(&self) -> anyhow::Error {
        trellis_client::Error::Status {
            status: self.status.as_u16(),
            message: self.body.trim().to_string(),
        }
        .into()
    }

    /// The body as JSON of type `T`.
    fn json<T: for<'de> Deserialize<'de>>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "the agent's answer is not what was expected: {}",
                self.body.trim()
            )
        })
    }
}

impl Agent {
    fn new(args: &HttpArgs) -> anyhow::Result<Agent> {
        let client = crate::cli::agent(args)?;
        Ok(Agent { client })
    }

    /// Sends a request to `/v1/<segments...>?<query>`, with `body` as JSON if given.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let body = body.map_or(trellis_client::Body::Empty, trellis_client::Body::Json);
        let raw = self
            .client
            .call(method, segments, query, body, trellis_client::CALL_TIMEOUT)
            .await?;
        Ok(Answer {
            status: StatusCode::from_u16(raw.status)?,
            body: String::from_utf8_lossy(&raw.body).into_owned(),
        })
    }
}

const EXACT: &[&str] = &["connect", "intentions", "exact"];

fn pair<'a>(source: &'a str, destination: &'a str) -> [(&'static str, &'a str); 2] {
    [("source", source), ("destination", destination)]
}

/// One intention `create` is to write.
#[derive(Debug)]
struct NewIntention {
    /// `source` query parameter: `[partition/][namespace/]name`.
    source: String,
    /// `destination` query parameter: `[partition/][namespace/]name`.
    destination: String,
    /// For messages: `web => db (allow)`.
    summary: String,
    /// Body of `PUT /v1/connect/intentions/exact`.
    body: Value,
}

impl NewIntention {
    fn from_args(args: &IntentionCreateArgs) -> anyhow::Result<NewIntention> {
        let [source, destination] = args.args.as_slice() else {
            bail!("Error: Must specify two arguments: source and destination");
        };
        check_target(source, "source")?;
        check_target(destination, "destination")?;
        let action = if args.deny { "deny" } else { "allow" };
        let mut body = json!({"SourceType": "consul", "Action": action});
        if let Some(d) = &args.description {
            body["Description"] = json!(d);
        }
        Ok(NewIntention {
            summary: summary(&display_arg(source), &display_arg(destination), action),
            source: source.clone(),
            destination: destination.clone(),
            body,
        })
    }

    /// Reads an intention JSON object (the fields of `GET /v1/connect/intentions/exact`;
    /// read-only ones such as `ID` and `Precedence` are ignored). Field names match in any
    /// case (and snake_case), as the HTTP API canonicalises them, and fields are read with the
    /// config entries' forgiving decoder: `null` or `""` is not set, and the first field of
    /// another type is an error.
    fn from_json(text: &str) -> anyhow::Result<NewIntention> {
        let mut value: Value = serde_json::from_str(text).context("not valid JSON")?;
        if !value.is_object() {
            bail!("not a JSON object");
        }
        trellis_api::canonicalize_keys(&mut value);
        let file: IntentionFile = trellis_api::lenient::decode_object(&value).unwrap_or_default();
        let text_field = |name: &str, v: &Lenient<String>| -> anyhow::Result<String> {
            match v {
                Lenient::Invalid(other) => bail!("{name} must be a string, not {other}"),
                _ => Ok(v.text().to_string()),
            }
        };
        // The `[partition/][namespace/]name` query form and the displayed form of an end.
        let target = |partition: (&str, &Lenient<String>),
                      ns: (&str, &Lenient<String>),
                      name: (&str, &Lenient<String>)|
         -> anyhow::Result<(String, String)> {
            let (name_field, name) = (name.0, text_field(name.0, name.1)?);
            if name.is_empty() {
                bail!("{name_field} is required");
            }
            let (partition, ns) = (
                text_field(partition.0, partition.1)?,
                text_field(ns.0, ns.1)?,
            );
            let query = match (partition.is_empty(), ns.is_empty()) {
                (true, true) => name.clone(),
                (true, false) => format!("{ns}/{name}"),
                (false, true) => format!("{partition}/default/{name}"),
                (false, false) => format!("{partition}/{ns}/{name}"),
            };
            Ok((query, display_target(&ns, &name)))
        };
        let (source, source_shown) = target(
            ("SourcePartition", &file.source_partition),
            ("SourceNS", &file.source_ns),
            ("SourceName", &file.source_name),
        )?;
        let (destination, destination_shown) = target(
            ("DestinationPartition", &file.destination_partition),
            ("DestinationNS", &file.destination_ns),
            ("DestinationName", &file.destination_name),
        )?;
        let source_type = text_field("SourceType", &file.source_type)?;
        let action = text_field("Action", &file.action)?;
        let description = text_field("Description", &file.description)?;
        let permissions = match file.permissions {
            Lenient::Absent => Vec::new(),
            Lenient::Set(p) => p,
            Lenient::Invalid(other) => bail!("Permissions must be a list, not {other}"),
        };
        let mut body = Map::new();
        let source_type = if source_type.is_empty() {
            "consul".to_string()
        } else {
            source_type
        };
        body.insert("SourceType".into(), json!(source_type));
        if !action.is_empty() {
            body.insert("Action".into(), json!(action));
        }
        if !permissions.is_empty() {
            body.insert("Permissions".into(), Value::Array(permissions.clone()));
        }
        if !description.is_empty() {
            body.insert("Description".into(), json!(description));
        }
        match file.meta {
            Lenient::Absent => {}
            Lenient::Set(m) if m.is_empty() => {}
            Lenient::Set(m) => {
                body.insert("Meta".into(), Value::Object(m));
            }
            Lenient::Invalid(other) => {
                body.insert("Meta".into(), other);
            }
        }
        Ok(NewIntention {
            summary: summary(
                &source_shown,
                &destination_shown,
                &detail(&action, permissions.len()),
            ),
            source,
            destination,
            body: Value::Object(body),
        })
    }

    /// Reads the files of `create -file` (`-` is stdin, once).
    fn from_files(paths: &[String]) -> anyhow::Result<Vec<NewIntention>> {
        if paths.is_empty() {
            bail!("Error: Must specify at least one file with -file");
        }
        let mut stdin_read = false;
        paths
            .iter()
            .map(|path| {
                let text = if path == "-" {
                    if std::mem::replace(&mut stdin_read, true) {
                        bail!("Error: \"-\" (stdin) may be given only once");
                    }
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("Error: reading stdin")?;
                    text
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("Error: {path}"))?
                };
                NewIntention::from_json(&text).with_context(|| format!("Error: {path}"))
            })
            .collect()
    }
}

/// An intention file as `create -file` reads it, after key canonicalisation.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IntentionFile {
    #[serde(rename = "SourceNS")]
    source_ns: Lenient<String>,
    source_name: Lenient<String>,
    source_partition: Lenient<String>,
    #[serde(rename = "DestinationNS")]
    destination_ns: Lenient<String>,
    destination_name: Lenient<String>,
    destination_partition: Lenient<String>,
    source_type: Lenient<String>,
    action: Lenient<String>,
    description: Lenient<String>,
    permissions: Lenient<Vec<Value>>,
    meta: Lenient<Map<String, Value>>,
}

/// `trellis intention create`.
async fn create(args: IntentionCreateArgs) -> anyhow::Result<u8> {
    if args.allow && args.deny {
        bail!("Only one of -allow or -deny may be specified.");
    }
    let wanted = if args.file {
        if args.description.is_some() {
            bail!("Error: -description cannot be used with -file; set Description in the file");
        }
        NewIntention::from_files(&args.args)?
    } else {
        vec![NewIntention::from_args(&args)?]
    };
    let agent = Agent::new(&args.api)?;
    for ixn in wanted {
        let query = pair(&ixn.source, &ixn.destination);
        if !args.replace {
            let found = agent.call(Method::GET, EXACT, &query, None).await?;
            match found.status {
                StatusCode::OK => {
                    let existing: Intention = found.json()?;
                    bail!(
                        "Error creating intention {:?}: duplicate intention found: {}; \
                         use -replace to replace it",
                        ixn.summary,
                        existing.summary()
                    );
                }
                StatusCode::NOT_FOUND => {}
                _ => bail!(
                    "Error looking up intention with source {:?} and destination {:?}: {}",
                    ixn.source,
                    ixn.destination,
                    found.unexpected()
                ),
            }
        }
        let written = agent
            .call(Method::PUT, EXACT, &query, Some(&ixn.body))
            .await?;
        if !written.status.is_success() {
            bail!(
                "Error creating intention {:?}: {}",
                ixn.summary,
                written.unexpected()
            );
        }
        println!("Created: {}", ixn.summary);
    }
    Ok(0)
}

/// Reads one intention by `SRC DST` (or a legacy ID); a missing one is an error naming it.
async fn read(agent: &Agent, args: &[String]) -> anyhow::Result<Intention> {
    let (answer, missing) = match args {
        [id] => (
            agent
                .call(Method::GET, &["connect", "intentions", id], &[], None)
                .await?,
            format!("Intention not found with ID {id:?}"),
        ),
        [source, destination] => (
            agent
                .call(Method::GET, EXACT, &pair(source, destination), None)
                .await?,
            format!("Intention not found with source {source:?} and destination {destination:?}"),
        ),
        _ => bail!("command requires exactly 1 or 2 arguments"),
    };
    match answer.status {
        StatusCode::OK => answer.json(),
        StatusCode::NOT_FOUND => Err(anyhow!(missing)),
        _ => Err(answer.unexpected().context("Error reading the intention")),
    }
}

/// The key/value block of `intention get`, in Consul's order; Precedence and Updated At are
/// Trellis's additions.
fn describe(ixn: &Intention) -> String {
    let mut rows = vec![
        ("Source:".to_string(), ixn.source_shown()),
        ("Destination:".to_string(), ixn.destination_shown()),
    ];
    if !ixn.action.is_empty() {
        rows.push(("Action:".into(), ixn.action.clone()));
    }
    if !ixn.id.is_empty() {
        rows.push(("ID:".into(), ixn.id.clone()));
    }
    rows.push(("Precedence:".into(), ixn.precedence.to_string()));
    if !ixn.description.is_empty() {
        rows.push(("Description:".into(), ixn.description.clone()));
    }
    for (k, v) in &ixn.meta {
        rows.push((format!("Meta[{k}]:"), v.clone()));
    }
    // Go's zero time is what Consul returns for intentions that never had one.
    let set = |t: &Option<String>| {
        t.clone()
            .filter(|t| !t.is_empty() && !t.starts_with("0001-"))
    };
    if let Some(t) = set(&ixn.created_at) {
        rows.push(("Created At:".into(), t));
    }
    if let Some(t) = set(&ixn.updated_at) {
        rows.push(("Updated At:".into(), t));
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k, v]).collect();
    columns(&rows)
}

/// `trellis intention get`.
async fn get(args: IntentionArgs) -> anyhow::Result<u8> {
    let ixn = read(&Agent::new(&args.api)?, &args.args).await?;
    print!("{}", describe(&ixn));
    if !ixn.permissions.is_empty() {
        println!(
            "Permissions:\n{}",
            serde_json::to_string_pretty(&ixn.permissions)?
        );
    }
    Ok(0)
}

/// `trellis intention delete`.
async fn delete(args: IntentionArgs) -> anyhow::Result<u8> {
    let agent = Agent::new(&args.api)?;
    let answer = match args.args.as_slice() {
        [id] => {
            agent
                .call(Method::DELETE, &["connect", "intentions", id], &[], None)
                .await?
        }
        [source, destination] => {
            agent
                .call(Method::DELETE, EXACT, &pair(source, destination), None)
                .await?
        }
        _ => bail!("command requires exactly 1 or 2 arguments"),
    };
    if !answer.status.is_success() {
        return Err(answer.unexpected().context("Error deleting the intention"));
    }
    println!("Intention deleted.");
    Ok(0)
}

/// `trellis intention list`.
async fn list(args: HttpArgs) -> anyhow::Result<u8> {
    let answer = Agent::new(&args)?
        .call(Method::GET, &["connect", "intentions"], &[], None)
        .await?;
    if !answer.status.is_success() {
        return Err(answer
            .unexpected()
            .context("Failed to retrieve the intentions list"));
    }
    let intentions: Vec<Intention> = answer.json()?;
    if intentions.is_empty() {
        eprintln!("There are no intentions.");
        return Ok(LIST_EMPTY);
    }
    let mut rows = vec![["ID", "Source", "Action", "Destination", "Precedence"]
        .map(String::from)
        .to_vec()];
    rows.extend(intentions.iter().map(|ixn| {
        vec![
            ixn.id.clone(),
            ixn.source_name.clone(),
            ixn.action.clone(),
            ixn.destination_name.clone(),
            ixn.precedence.to_string(),
        ]
    }));
    print!("{}", columns(&rows));
    Ok(0)
}

/// `trellis intention check`: 0 allowed, [`CHECK_DENIED`] denied.
async fn check(args: IntentionArgs) -> anyhow::Result<u8> {
    let [source, destination] = args.args.as_slice() else {
        bail!("Error: command requires exactly two arguments: src and dst");
    };
    let answer = Agent::new(&args.api)?
        .call(
            Method::GET,
            &["connect", "intentions", "check"],
            &[
                ("source", source),
                ("destination", destination),
                ("source-type", "consul"),
            ],
            None,
        )
        .await
        .context("Error checking the connection")?;
    if !answer.status.is_success() {
        return Err(answer.unexpected().context("Error checking the connection"));
    }
    #[derive(Deserialize)]
    struct Checked {
        #[serde(rename = "Allowed")]
        allowed: bool,
    }
    let checked: Checked = answer.json().context("Error checking the connection")?;
    if checked.allowed {
        println!("Allowed");
        Ok(0)
    } else {
        println!("Denied");
        Ok(CHECK_DENIED)
    }
}

/// `trellis intention match`.
async fn match_intentions(args: IntentionMatchArgs) -> anyhow::Result<u8> {
    let [name] = args.args.as_slice() else {
        bail!("Error: command requires exactly one argument: src or dst");
    };
    if args.source && args.destination {
        bail!("Error: only one of -source or -destination may be specified");
    }
    let by = if args.source { "source" } else { "destination" };
    let answer = Agent::new(&args.api)?
        .call(
            Method::GET,
            &["connect", "intentions", "match"],
            &[("by", by), ("name", name)],
            None,
        )
        .await
        .context("Error matching the connection")?;
    if !answer.status.is_success() {
        return Err(answer.unexpected().context("Error matching the connection"));
    }
    let mut matches: BTreeMap<String, Vec<Intention>> =
        answer.json().context("Error matching the connection")?;
    for ixn in matches.remove(name).unwrap_or_default() {
        println!("{}", ixn.summary());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_consuls() {
        let l4: Intention = serde_json::from_value(json!({
            "SourceNS": "default", "SourceName": "web",
            "DestinationNS": "ops", "DestinationName": "db",
            "Action": "deny", "Permissions": null, "Meta": null, "Precedence": 9
        }))
        .unwrap();
        assert_eq!(l4.summary(), "web => ops/db (deny)");
        let l7: Intention = serde_json::from_value(json!({
            "SourceName": "web", "DestinationName": "api",
            "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]
        }))
        .unwrap();
        assert_eq!(l7.summary(), "web => api (1 permission)");
        assert_eq!(display_arg("default/web"), "web");
        assert_eq!(display_arg("p/ops/web"), "ops/web");
        assert_eq!(display_arg("*"), "*");
    }

    #[test]
    fn columns_pad_all_but_the_last() {
        let rows = vec![
            vec!["ID".to_string(), "Source".into(), "Action".into()],
            vec!["".to_string(), "*".into(), "deny".into()],
        ];
        assert_eq!(columns(&rows), "ID  Source  Action\n    *       deny\n");
    }

    #[test]
    fn get_block_lists_what_is_set() {
        let ixn: Intention = serde_json::from_value(json!({
            "SourceName": "web", "DestinationName": "db", "Action": "allow",
            "Precedence": 9, "Description": "hi", "CreatedAt": "0001-01-01T00:00:00Z",
            "Meta": {"k": "v"}
        }))
        .unwrap();
        assert_eq!(
            describe(&ixn),
            "Source:       web\nDestination:  db\nAction:       allow\nPrecedence:   9\n\
             Description:  hi\nMeta[k]:      v\n"
        );
    }

    #[test]
    fn files_read_like_consul() {
        let ixn = NewIntention::from_json(
            r#"{"sourcename": "web", "DestinationName": "db", "DestinationNS": "ops",
                "Action": "deny", "ID": "x", "Precedence": 9, "Description": "d"}"#,
        )
        .unwrap();
        assert_eq!(ixn.source, "web");
        assert_eq!(ixn.destination, "ops/db");
        assert_eq!(ixn.summary, "web => ops/db (deny)");
        assert_eq!(
            ixn.body,
            json!({"SourceType": "consul", "Action": "deny", "Description": "d"})
        );
        let l7 = NewIntention::from_json(
            r#"{"SourceName": "web", "DestinationName": "api",
                "Permissions": [{"Action": "allow"}, {"Action": "deny"}]}"#,
        )
        .unwrap();
        assert_eq!(l7.summary, "web => api (2 permissions)");
        assert!(l7.body.get("Action").is_none());
        for (bad, why) in [
            (r#"{"DestinationName": "db"}"#, "SourceName is required"),
            (r#"{"SourceName": "web"}"#, "DestinationName is required"),
            (
                r#"{"SourceName": 1, "DestinationName": "db"}"#,
                "SourceName must be a string",
            ),
            ("[]", "not a JSON object"),
        ] {
            let err = format!("{:#}", NewIntention::from_json(bad).unwrap_err());
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
