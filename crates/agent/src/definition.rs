//! Turning registration bodies into local rows: validation, defaults, sidecar expansion.

use trellis_api::{
    kind, parse_go_duration, status, AgentService, CheckDefinition, ConnectProxyConfig,
    HealthCheck, ServiceConnect, ServiceDefinition,
};

use crate::local::LocalCheck;

/// First port handed to a sidecar without one.
pub const SIDECAR_MIN_PORT: u16 = 21000;
/// Last port handed to a sidecar without one.
pub const SIDECAR_MAX_PORT: u16 = 21255;

/// Consul's refusal of `*` as a Connect proxy's destination (`NodeService.Validate`). A service
/// may be named `*` (Consul accepts it), but no proxy may stand for every service.
pub(crate) const WILDCARD_DESTINATION: &str =
    "Proxy.DestinationServiceName must not be a wildcard for Connect proxy services";

/// A service ready to store, with its checks.
#[derive(Debug)]
pub struct Registration {
    /// The service row.
    pub service: AgentService,
    /// Its checks.
    pub checks: Vec<LocalCheck>,
}

/// Checks a name used for services, nodes and checks: non-empty, printable, no `/`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("Missing {what}"));
    }
    if name.len() > 256 {
        return Err(format!("Invalid {what} {name:?}: longer than 256 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!(
            "Invalid {what} {name:?}: contains '/' or a control character"
        ));
    }
    Ok(())
}

/// Validates a service definition and fills Consul's defaults. `sidecar_port` picks a port for
/// the sidecar if one is requested without a port. Returns the service and, if the definition
/// asks for one, its sidecar.
pub fn expand(
    mut def: ServiceDefinition,
    sidecar_port: &dyn Fn(&str) -> Result<u16, String>,
) -> Result<(Registration, Option<Registration>), String> {
    validate_name("service name", &def.name)?;
    if def.id.is_empty() {
        def.id = def.name.clone();
    }
    validate_name("service ID", &def.id)?;
    if !kind::ALL.contains(&def.kind.as_str()) {
        return Err(format!("Invalid service kind: {:?}", def.kind));
    }
    if def.kind == kind::CONNECT_PROXY {
        let dest = def
            .proxy
            .as_ref()
            .map(|p| p.destination_service_name.as_str())
            .unwrap_or("");
        if dest.is_empty() {
            return Err("Proxy.DestinationServiceName must be set for a connect-proxy".into());
        }
        if dest == "*" {
            return Err(WILDCARD_DESTINATION.into());
        }
        if def.port == 0 && def.socket_path.is_empty() {
            return Err("Port must be set for a Connect proxy".into());
        }
    } else if def.proxy.is_some() && def.kind.is_empty() {
        return Err("Proxy may only be set for a service of a proxy or gateway Kind".into());
    }
    trellis_api::validate_service_meta(&def.kind, &def.meta, false)
        .map_err(|e| format!("Invalid Service Meta: {e}"))?;
    for (i, up) in def
        .proxy
        .iter()
        .flat_map(|p| p.upstreams.iter())
        .enumerate()
    {
        if up.destination_name.is_empty() {
            return Err(format!("Upstream {i}: DestinationName is required"));
        }
        if !matches!(
            up.destination_type.as_str(),
            "" | "service" | "prepared_query"
        ) {
            return Err(format!(
                "Upstream {i}: unknown upstream destination type {:?}",
                up.destination_type
            ));
        }
        if (up.local_bind_port == 0) == up.local_bind_socket_path.is_empty() {
            return Err(format!(
                "Upstream {i}: exactly one of LocalBindPort or LocalBindSocketPath is required"
            ));
        }
    }
    let sidecar_def = def.connect.as_mut().and_then(|c| c.sidecar_service.take());
    let sidecar = match sidecar_def {
        None => None,
        Some(sc) => Some(expand_sidecar(&def, *sc, sidecar_port)?),
    };
    let checks = checks_of(&def)?;
    let connect = def.connect.take().filter(|c| !c.is_empty());
    let service = AgentService {
        kind: def.kind,
        id: def.id,
        service: def.name,
        tags: def.tags,
        meta: def.meta,
        port: def.port,
        address: def.address,
        tagged_addresses: def.tagged_addresses,
        socket_path: def.socket_path,
        weights: def.weights.unwrap_or_default(),
        enable_tag_override: def.enable_tag_override,
        proxy: def.proxy,
        connect,
        ..Default::default()
    };
    Ok((Registration { service, checks }, sidecar))
}

fn expand_sidecar(
    parent: &ServiceDefinition,
    mut sc: ServiceDefinition,
    port: &dyn Fn(&str) -> Result<u16, String>,
) -> Result<Registration, String> {
    if sc
        .connect
        .as_ref()
        .is_some_and(|c| c.sidecar_service.is_some())
    {
        return Err("A sidecar service may not have a sidecar of its own".into());
    }
    sc.id = format!("{}-sidecar-proxy", parent.id);
    if sc.name.is_empty() {
        sc.name = format!("{}-sidecar-proxy", parent.name);
    }
    if sc.kind.is_empty() {
        sc.kind = kind::CONNECT_PROXY.to_string();
    }
    if sc.address.is_empty() {
        sc.address = parent.address.clone();
    }
    if sc.meta.is_empty() {
        sc.meta = parent.meta.clone();
    }
    if sc.tags.is_empty() {
        sc.tags = parent.tags.clone();
    }
    let proxy = sc.proxy.get_or_insert_with(ConnectProxyConfig::default);
    if proxy.destination_service_name.is_empty() {
        proxy.destination_service_name = parent.name.clone();
    }
    if proxy.destination_service_id.is_empty() {
        proxy.destination_service_id = parent.id.clone();
    }
    if proxy.local_service_address.is_empty() && proxy.local_service_socket_path.is_empty() {
        if parent.socket_path.is_empty() {
            proxy.local_service_address = "127.0.0.1".into();
        } else {
            proxy.local_service_socket_path = parent.socket_path.clone();
        }
    }
    if proxy.local_service_port == 0 && proxy.local_service_socket_path.is_empty() {
        proxy.local_service_port = parent.port;
    }
    if sc.port == 0 {
        sc.port = port(&sc.id)?;
    }
    if sc.check.is_none() && sc.checks.is_empty() {
        let addr = if sc.address.is_empty() {
            "127.0.0.1"
        } else {
            sc.address.as_str()
        };
        sc.checks = vec![
            CheckDefinition {
                name: "Connect Sidecar Listening".into(),
                tcp: format!("{addr}:{}", sc.port),
                interval: "10s".into(),
                ..Default::default()
            },
            CheckDefinition {
                name: format!("Connect Sidecar Aliasing {}", parent.id),
                alias_service: parent.id.clone(),
                ..Default::default()
            },
        ];
    }
    sc.connect = Some(ServiceConnect::default());
    let (reg, _) = expand(sc, &|_| Err("a sidecar has no sidecar".into()))?;
    Ok(reg)
}

/// The checks of a service definition, with Consul's IDs (`service:<id>`, `service:<id>:N`)
/// and names.
fn checks_of(def: &ServiceDefinition) -> Result<Vec<LocalCheck>, String> {
    let defs: Vec<&CheckDefinition> = def.check.iter().chain(def.checks.iter()).collect();
    let many = defs.len() > 1;
    let mut out = Vec::new();
    for (i, c) in defs.into_iter().enumerate() {
        let mut c = c.clone();
        if c.id.is_empty() {
            c.id = if many {
                format!("service:{}:{}", def.id, i + 1)
            } else {
                format!("service:{}", def.id)
            };
        }
        if c.name.is_empty() {
            c.name = format!("Service '{}' check", def.name);
        }
        c.service_id = def.id.clone();
        out.push(local_check(c, Some((def.name.as_str(), &def.tags)))?);
    }
    Ok(out)
}

/// Validates a check definition and builds the row the agent will keep for it.
pub fn local_check(
    mut def: CheckDefinition,
    service: Option<(&str, &Vec<String>)>,
) -> Result<LocalCheck, String> {
    if def.name.is_empty() {
        return Err("Missing check name".into());
    }
    if def.id.is_empty() {
        def.id = def.name.clone();
    }
    validate_name("check ID", &def.id)?;
    let kinds = [
        !def.ttl.is_empty(),
        !def.http.is_empty(),
        !def.tcp.is_empty(),
        !def.alias_service.is_empty(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => return Err("Invalid check: one of TTL, HTTP, TCP or AliasService must be set".into()),
        1 => {}
        _ => {
            return Err(
                "Invalid check: only one of TTL, HTTP, TCP or AliasService may be set".into(),
            )
        }
    }
    if (!def.http.is_empty() || !def.tcp.is_empty()) && def.interval.is_empty() {
        return Err("Invalid check: Interval is required for HTTP and TCP checks".into());
    }
    for (field, value) in [
        ("TTL", &def.ttl),
        ("Interval", &def.interval),
        ("Timeout", &def.timeout),
    ] {
        if !value.is_empty()
            && parse_go_duration(value)
                .map_err(|e| format!("Invalid {field}: {e}"))?
                .is_zero()
        {
            return Err(format!("Invalid {field}: must be greater than zero"));
        }
    }
    let http_scheme = def.http.starts_with("http://") || def.http.starts_with("https://");
    if !def.http.is_empty() && !http_scheme {
        return Err(format!("Invalid HTTP check URL {:?}", def.http));
    }
    if !def.status.is_empty() && !status::is_valid(&def.status) {
        return Err(format!("Invalid check status: {:?}", def.status));
    }
    if def.id == trellis_api::serf_check::ID {
        return Err(format!(
            "CheckID {:?} is reserved for the servers' member health check",
            def.id
        ));
    }
    let initial = if def.status.is_empty() {
        status::CRITICAL.to_string()
    } else {
        def.status.clone()
    };
    let check = HealthCheck {
        node: String::new(),
        check_id: def.id.clone(),
        name: def.name.clone(),
        status: initial,
        notes: def.notes.clone(),
        output: String::new(),
        service_id: def.service_id.clone(),
        service_name: service.map(|s| s.0.to_string()).unwrap_or_default(),
        service_tags: service.map(|s| s.1.clone()).unwrap_or_default(),
        r#type: def.type_name().to_string(),
        interval: def.interval.clone(),
        timeout: def.timeout.clone(),
        create_index: 0,
        modify_index: 0,
    };
    Ok(LocalCheck {
        check,
        definition: def,
    })
}

/// The lowest free sidecar port, reusing `existing` (the port the same sidecar already holds).
pub fn pick_sidecar_port(in_use: &[u16], existing: Option<u16>) -> Result<u16, String> {
    if let Some(p) = existing.filter(|p| (SIDECAR_MIN_PORT..=SIDECAR_MAX_PORT).contains(p)) {
        return Ok(p);
    }
    (SIDECAR_MIN_PORT..=SIDECAR_MAX_PORT)
        .find(|p| !in_use.contains(p))
        .ok_or_else(|| "No free sidecar port in 21000-21255".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> ServiceDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sidecar_defaults_follow_consul() {
        let (web, sidecar) = expand(
            def(r#"{"Name":"web","Port":8080,"Meta":{"v":"1"},"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"db","LocalBindPort":9191}]}}}}"#),
            &|_| Ok(21000),
        )
        .unwrap();
        assert_eq!(web.service.id, "web");
        assert!(
            web.service.connect.is_none(),
            "the SidecarService block is not stored"
        );
        let sc = sidecar.unwrap();
        assert_eq!(sc.service.id, "web-sidecar-proxy");
        assert_eq!(sc.service.service, "web-sidecar-proxy");
        assert_eq!(sc.service.kind, "connect-proxy");
        assert_eq!(sc.service.port, 21000);
        assert_eq!(sc.service.meta.get("v").unwrap(), "1");
        let p = sc.service.proxy.as_ref().unwrap();
        assert_eq!(p.destination_service_name, "web");
        assert_eq!(p.destination_service_id, "web");
        assert_eq!(p.local_service_address, "127.0.0.1");
        assert_eq!(p.local_service_port, 8080);
        assert_eq!(p.upstreams[0].destination_name, "db");
        let names: Vec<_> = sc.checks.iter().map(|c| c.check.name.as_str()).collect();
        assert_eq!(
            names,
            ["Connect Sidecar Listening", "Connect Sidecar Aliasing web"]
        );
        assert_eq!(sc.checks[0].check.check_id, "service:web-sidecar-proxy:1");
        assert_eq!(sc.checks[0].definition.tcp, "127.0.0.1:21000");
        assert_eq!(sc.checks[1].definition.alias_service, "web");
    }

    #[test]
    fn invalid_definitions_are_refused_with_a_reason() {
        for (json, needle) in [
            (r#"{"Port":1}"#, "Missing service name"),
            (r#"{"Name":"a/b"}"#, "Invalid service name"),
            (
                r#"{"Name":"p","Kind":"connect-proxy","Port":1}"#,
                "DestinationServiceName",
            ),
            (r#"{"Name":"x","Kind":"weird"}"#, "Invalid service kind"),
            (
                r#"{"Name":"x","Check":{"TTL":"10s","HTTP":"http://a"}}"#,
                "only one of",
            ),
            (
                r#"{"Name":"x","Check":{"HTTP":"http://a"}}"#,
                "Interval is required",
            ),
            (
                r#"{"Name":"x","Meta":{"consul-x":"1"}}"#,
                "Invalid Service Meta: Couldn't load metadata pair ('consul-x', '1'): \
                 Key prefix 'consul-' is reserved for internal use",
            ),
            (
                r#"{"Name":"x","Meta":{"a b":"1"}}"#,
                "Key contains invalid characters",
            ),
            (
                r#"{"Name":"p","Kind":"connect-proxy","Port":1,"Proxy":{"DestinationServiceName":"*"}}"#,
                "must not be a wildcard",
            ),
        ] {
            let err = expand(def(json), &|_| Ok(21000)).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn sidecar_ports_are_lowest_free_and_stable() {
        assert_eq!(pick_sidecar_port(&[21000, 21001], None).unwrap(), 21002);
        assert_eq!(
            pick_sidecar_port(&[21000, 21001], Some(21001)).unwrap(),
            21001
        );
        let all: Vec<u16> = (SIDECAR_MIN_PORT..=SIDECAR_MAX_PORT).collect();
        assert!(pick_sidecar_port(&all, None).is_err());
    }
}
