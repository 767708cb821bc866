//! App definitions from Marathon JSON: parsing with the JSON path of every problem, and the
//! semantic checks Marathon makes (adapted to what Atoll can run).
//!
//! Parsing happens in two stages. The *shape* stage (unknown fields, wrong types, a missing
//! `id`) is serde's; as serde stops at the first problem, a problem is recorded, the offending
//! field is set aside (removed, or filled with a placeholder when required) and parsing is
//! retried, so one request reports all of them. The *meaning* stage ([`validate`]) checks the
//! parsed definition and reports every problem it finds. Problems of the meaning stage that
//! concern a field the shape stage already reported (or its parent or children) are left out:
//! they would only describe the placeholder. Cross-field problems (path `""`) are reported only
//! when the shape is clean, for the same reason.
//!
//! Paths are JSON pointers (RFC 6901) into the request body: `/healthChecks/0/portIndex`,
//! `/env/MY~1VAR` for a key with a '/', and `""` for the definition as a whole.
//!
//! Atoll runs commands, not container images: a definition must have `cmd` or `args`, and
//! `container.type` must be `MESOS`. Container networks take addresses from IPAM pools.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use atoll_proto::model::{AppDefinition, AppId};
use serde::Serialize;
use serde_json::{Map, Value};

use super::constraints::Constraint;

/// The task labels the framework sets itself; a definition may not set them.
pub const RESERVED_LABELS: [&str; 2] = [super::matching::APP_ID_LABEL, super::matching::APP_VERSION_LABEL];

// A bound on the parse–repair loop; a body with more shape problems than this gets the first ones.
const MAX_SHAPE_ERRORS: usize = 50;

/// One problem, at a JSON pointer into the request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// `/healthChecks/0/portIndex`; `""` for the definition as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", display_path(&self.path), self.message)
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// Every problem found in a definition, in the order of the fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    /// `Object is not valid: /instances: must be ...; /cpus: must be ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Object is not valid")?;
        for (i, e) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> ValidationErrors {
        ValidationErrors(vec![FieldError { path: path.into(), message: message.into() }])
    }

    /// Marathon's 422 body: `{"message": "Object is not valid", "details": [{"path": "/id",
    /// "errors": ["..."]}]}`, one detail per path (the root written `/`, as Marathon does).
    pub fn marathon_json(&self) -> Value {
        let mut details: Vec<(String, Vec<String>)> = Vec::new();
        for e in &self.0 {
            let path = display_path(&e.path).to_owned();
            match details.iter_mut().find(|(p, _)| *p == path) {
                Some((_, errors)) => errors.push(e.message.clone()),
                None => details.push((path, vec![e.message.clone()])),
            }
        }
        serde_json::json!({
            "message": "Object is not valid",
            "details": details
                .into_iter()
                .map(|(path, errors)| serde_json::json!({"path": path, "errors": errors}))
                .collect::<Vec<_>>(),
        })
    }

    /// The paths with problems, for tests and logs.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

/// Parses Marathon app JSON: syntax, unknown fields, wrong types and a missing `id` are
/// reported with their JSON path, then the definition is [`validate`]d. Returns the normalized
/// id with the definition (whose `id` is left as written).
pub fn parse_app(json: &[u8]) -> Result<(AppId, AppDefinition), ValidationErrors> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| ValidationErrors::one("", format!("invalid JSON: {e}")))?;
    parse_value(value)
}

/// The definition a `PUT /v2/apps/{id}` body asks for. With `partial` (Marathon's
/// `?partialUpdate=true`) and an existing app, the body's top-level fields are laid over
/// `current` (a field set to `null` goes back to its default); otherwise the body is the whole
/// definition. The body may leave out `id`; if it has one, it must name the app of the URL.
pub fn parse_update(
    url_id: &AppId,
    current: Option<&AppDefinition>,
    body: &[u8],
    partial: bool,
) -> Result<(AppId, AppDefinition), ValidationErrors> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ValidationErrors::one("", format!("invalid JSON: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(ValidationErrors::one("", "must be a JSON object (an app definition)"));
    };
    let mut merged = match (partial, current) {
        (true, Some(current)) => match serde_json::to_value(current) {
            Ok(Value::Object(base)) => base,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    merged.entry("id").or_insert_with(|| Value::String(url_id.to_string()));
    let (id, definition) = parse_value(Value::Object(merged))?;
    if id != *url_id {
        return Err(ValidationErrors::one("/id", format!("names {id}, but the request is for {url_id}")));
    }
    Ok((id, definition))
}

fn parse_value(mut value: Value) -> Result<(AppId, AppDefinition), ValidationErrors> {
    if !value.is_object() {
        return Err(ValidationErrors::one("", "must be a JSON object (an app definition)"));
    }
    let mut shape: Vec<FieldError> = Vec::new();
    for _ in 0..MAX_SHAPE_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, AppDefinition>(&value) {
            Ok(definition) => return finish(definition, shape),
            Err(error) => error,
        };
        let problem = shape_problem(&error);
        let repaired = repair(&mut value, &problem);
        let already = shape.iter().any(|e| e.path == problem.path);
        if !already {
            shape.push(FieldError { path: problem.path.clone(), message: problem.message });
        }
        if !repaired || (already && !problem.placeholder) {
            break;
        }
    }
    if shape.is_empty() {
        shape.push(FieldError { path: String::new(), message: "could not be parsed".into() });
    }
    Err(ValidationErrors(shape))
}

fn finish(definition: AppDefinition, shape: Vec<FieldError>) -> Result<(AppId, AppDefinition), ValidationErrors> {
    match validate(&definition) {
        Ok(id) if shape.is_empty() => Ok((id, definition)),
        Ok(_) => Err(ValidationErrors(shape)),
        Err(ValidationErrors(semantic)) => {
            let mut all = shape;
            let reported: Vec<String> = all.iter().map(|e| e.path.clone()).collect();
            all.extend(semantic.into_iter().filter(|e| !reported.iter().any(|r| related(r, &e.path))));
            Err(ValidationErrors(all))
        }
    }
}

// Whether one pointer is the other or contains it; `""` is related to everything.
fn related(a: &str, b: &str) -> bool {
    let within = |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    a.is_empty() || b.is_empty() || within(a, b) || within(b, a)
}

struct ShapeProblem {
    path: String,
    message: String,
    /// Tokens of `path`, for the repair.
    tokens: Vec<String>,
    /// A required field is missing: fill it in rather than remove something.
    placeholder: bool,
}

fn shape_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> ShapeProblem {
    use serde_path_to_error::Segment;
    let mut tokens: Vec<String> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect();
    let raw = error.inner().to_string();
    let mut placeholder = false;
    let message = if let Some(field) = between(&raw, "missing field `", "`") {
        tokens.push(field.to_owned());
        placeholder = true;
        "is required".to_owned()
    } else if let Some(field) = between(&raw, "unknown field `", "`") {
        if tokens.last().map(String::as_str) != Some(field) {
            tokens.push(field.to_owned());
        }
        let known = expected_names(&raw);
        match closest(field, &known) {
            Some(near) => format!("unknown field; did you mean `{near}`?"),
            None => "unknown field".to_owned(),
        }
    } else {
        plain_type_names(&raw)
    };
    ShapeProblem { path: pointer(&tokens), message, tokens, placeholder }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

// serde lists the fields it knows after "expected": "expected one of `id`, `cmd`" or "expected `id`".
fn expected_names(message: &str) -> Vec<String> {
    let Some(at) = message.find("expected") else { return Vec::new() };
    message[at..].split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

// A known field within two edits of the unknown one: the likely typo.
fn closest<'a>(field: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(&field.to_ascii_lowercase(), &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

// serde's Rust type names mean little to someone writing JSON.
fn plain_type_names(message: &str) -> String {
    let mut text = message.to_owned();
    for (rust, json) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        text = text.replace(rust, json);
    }
    if let Some(at) = text.find("expected struct ") {
        text.replace_range(at.., "expected an object");
    }
    text
}

fn pointer(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect()
}

/// Sets the problem aside so that parsing can go on: a missing required field gets an empty
/// string (both required fields, `id` and `command.value`, are strings); otherwise the nearest
/// object member on the path goes, so its default applies. Returns whether anything changed.
fn repair(root: &mut Value, problem: &ShapeProblem) -> bool {
    let tokens = &problem.tokens;
    if problem.placeholder {
        let Some((field, parent)) = tokens.split_last() else { return false };
        return match descend(root, parent) {
            Some(Value::Object(object)) if !object.contains_key(field) => {
                object.insert(field.clone(), Value::String(String::new()));
                true
            }
            _ => false,
        };
    }
    // The deepest prefix whose last token names a member of an object.
    for end in (1..=tokens.len()).rev() {
        let (parent, field) = (&tokens[..end - 1], &tokens[end - 1]);
        if let Some(Value::Object(object)) = descend(root, parent)
            && object.remove(field).is_some()
        {
            return true;
        }
    }
    false
}

fn descend<'v>(mut value: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    for token in tokens {
        value = match value {
            Value::Object(object) => object.get_mut(token)?,
            Value::Array(items) => items.get_mut(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Collects problems with their paths.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }

    fn non_negative(&mut self, path: &str, value: f64) {
        if !value.is_finite() || value < 0.0 {
            self.add(path, format!("must be a number >= 0, not {value}"));
        }
    }
}

fn key(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The networking a definition asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    Host,
    Container,
}

/// `host` unless the (first) network says `container`; what to do with an invalid mode is
/// [`validate`]'s business.
pub fn network_mode(def: &AppDefinition) -> NetworkMode {
    match def.networks.as_deref().and_then(|n| n.first()).map(|n| n.mode.as_str()) {
        Some(mode) if mode.starts_with("container") => NetworkMode::Container,
        _ => NetworkMode::Host,
    }
}

/// How many ports an app has: what `portIndex` counts. Host networking without
/// `portDefinitions` gets one port, as in Marathon.
pub fn port_count(def: &AppDefinition) -> usize {
    match network_mode(def) {
        NetworkMode::Host => def.port_definitions.as_ref().map_or(1, Vec::len),
        NetworkMode::Container => def.container.as_ref().map_or(0, |c| c.port_mappings.len()),
    }
}

/// The protocols a port's `protocol` names: `tcp`, `udp`, `udp,tcp` or `tcp,udp`.
pub fn protocols(protocol: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = protocol.split(',').map(str::trim).collect();
    let valid = match parts.as_slice() {
        [one] => matches!(*one, "tcp" | "udp"),
        [a, b] => matches!((*a, *b), ("tcp", "udp") | ("udp", "tcp")),
        _ => false,
    };
    valid.then_some(parts)
}

/// The health check protocol in its canonical form (`HTTP` → `MESOS_HTTP`, `TCP` → `MESOS_TCP`).
pub fn health_protocol(protocol: &str) -> Option<&'static str> {
    match protocol.trim().to_ascii_uppercase().as_str() {
        "MESOS_HTTP" | "HTTP" => Some("MESOS_HTTP"),
        "MESOS_TCP" | "TCP" => Some("MESOS_TCP"),
        "COMMAND" => Some("COMMAND"),
        _ => None,
    }
}

/// Semantic checks of a parsed definition; returns the normalized id. Every problem found is
/// reported, each at its JSON path.
pub fn validate(def: &AppDefinition) -> Result<AppId, ValidationErrors> {
    let mut p = Problems::default();
    let id = match AppId::parse(&def.id) {
        Ok(id) => Some(id),
        Err(message) => {
            p.add("/id", message);
            None
        }
    };
    check_command(def, &mut p);
    check_resources(def, &mut p);
    check_env_and_labels(def, &mut p);
    check_networking(def, &mut p);
    check_health_checks(def, &mut p);
    check_upgrade_strategy(def, &mut p);
    check_constraints(def, &mut p);
    p.non_negative("/backoffSeconds", def.backoff_seconds);
    if !def.backoff_factor.is_finite() || def.backoff_factor < 1.0 {
        p.add("/backoffFactor", format!("must be a number >= 1, not {}", def.backoff_factor));
    }
    p.non_negative("/maxLaunchDelaySeconds", def.max_launch_delay_seconds);
    if let Some(grace) = def.task_kill_grace_period_seconds {
        p.non_negative("/taskKillGracePeriodSeconds", grace);
    }
    match id {
        Some(id) if p.0.is_empty() => Ok(id),
        _ => Err(ValidationErrors(p.0)),
    }
}

fn check_command(def: &AppDefinition, p: &mut Problems) {
    match (&def.cmd, &def.args) {
        (Some(_), Some(_)) => p.add("/args", "cmd and args are mutually exclusive: give one of them"),
        (None, None) => p.add("/cmd", "one of cmd or args is required (Atoll runs commands, not container images)"),
        (Some(cmd), None) => {
            if cmd.trim().is_empty() {
                p.add("/cmd", "must not be empty");
            } else if cmd.contains('\0') {
                p.add("/cmd", "must not contain NUL");
            }
        }
        (None, Some(args)) => {
            if args.first().is_none_or(|a| a.is_empty()) {
                p.add("/args", "must start with the program to run");
            }
            for (i, _) in args.iter().enumerate().filter(|(_, a)| a.contains('\0')) {
                p.add(format!("/args/{i}"), "must not contain NUL");
            }
        }
    }
}

fn check_resources(def: &AppDefinition, p: &mut Problems) {
    p.non_negative("/cpus", def.cpus);
    p.non_negative("/mem", def.mem);
    p.non_negative("/disk", def.disk);
    if def.cpus == 0.0 && def.mem == 0.0 {
        p.add("", "cpus and mem cannot both be 0");
    }
}

fn check_env_and_labels(def: &AppDefinition, p: &mut Problems) {
    for (name, value) in &def.env {
        let path = format!("/env/{}", key(name));
        if name.is_empty() {
            p.add(path, "variable names must not be empty");
        } else if name.contains('=') || name.contains('\0') {
            p.add(path, "variable names must not contain '=' or NUL");
        } else if value.contains('\0') {
            p.add(path, "must not contain NUL");
        }
    }
    for name in def.labels.keys() {
        if name.is_empty() {
            p.add("/labels/", "label keys must not be empty");
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            p.add(format!("/labels/{}", key(name)), "is set by Atoll itself");
        }
    }
}

// Marathon's port name rule, which also keeps SRV names (`_<name>._<task>._tcp`) valid.
fn valid_port_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn check_port_name(name: Option<&str>, path: &str, seen: &mut BTreeSet<String>, p: &mut Problems) {
    let Some(name) = name else { return };
    if !valid_port_name(name) {
        p.add(
            format!("{path}/name"),
            "must be 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'",
        );
    } else if !seen.insert(name.to_owned()) {
        p.add(format!("{path}/name"), format!("port name `{name}` is used twice"));
    }
}

fn check_protocol(protocol: &str, path: &str, p: &mut Problems) {
    if protocols(protocol).is_none() {
        p.add(format!("{path}/protocol"), "must be tcp, udp or udp,tcp");
    }
}

fn check_port_labels(labels: &BTreeMap<String, String>, path: &str, p: &mut Problems) {
    if labels.contains_key("") {
        p.add(format!("{path}/labels/"), "label keys must not be empty");
    }
}

fn check_networking(def: &AppDefinition, p: &mut Problems) {
    let networks = def.networks.as_deref().unwrap_or_default();
    if networks.len() > 1 {
        p.add("/networks", "at most one network is supported");
    }
    for (i, network) in networks.iter().enumerate() {
        let path = format!("/networks/{i}/mode");
        match network.mode.as_str() {
            "host" => {}
            "container" => {}
            "container/bridge" => p.add(path, "bridge networking needs Docker, which Atoll does not run"),
            other => p.add(path, format!("must be host or container, not `{other}`")),
        }
        if network.mode == "container" && network.name.as_deref().is_some_and(str::is_empty) {
            p.add(format!("/networks/{i}/name"), "must not be empty");
        }
        if network.ip_address.is_some() {
            if network.mode != "container" {
                p.add(format!("/networks/{i}/ipAddress"), "only a container network gives a task its own address");
            } else if def.instances > 1 {
                p.add(format!("/networks/{i}/ipAddress"), "a pinned address fits one instance, not several");
            }
        }
    }
    if let Some(container) = &def.container {
        match container.kind.as_str() {
            "MESOS" => {}
            "DOCKER" => p.add("/container/type", "DOCKER needs a Docker engine, which Atoll does not run; use MESOS"),
            other => p.add("/container/type", format!("must be MESOS, not `{other}`")),
        }
    }
    let mappings = def.container.as_ref().map(|c| c.port_mappings.as_slice()).unwrap_or_default();
    match network_mode(def) {
        NetworkMode::Host => {
            if !mappings.is_empty() {
                p.add(
                    "/container/portMappings",
                    "portMappings are for container networking; with host networking use portDefinitions",
                );
            }
            check_port_definitions(def, p);
        }
        NetworkMode::Container => {
            if def.port_definitions.as_ref().is_some_and(|d| !d.is_empty()) {
                p.add("/portDefinitions", "portDefinitions are for host networking; use container.portMappings");
            }
            if def.require_ports {
                p.add("/requirePorts", "is for host networking; give container.portMappings a hostPort instead");
            }
            check_port_mappings(def, p);
        }
    }
}

fn check_port_definitions(def: &AppDefinition, p: &mut Problems) {
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (i, port) in def.port_definitions.iter().flatten().enumerate() {
        let path = format!("/portDefinitions/{i}");
        if port.port > 65535 {
            p.add(format!("{path}/port"), "must be between 0 and 65535");
        } else if port.port == 0 && def.require_ports {
            p.add(format!("{path}/port"), "requirePorts needs every port given explicitly (not 0)");
        } else if port.port != 0 && !ports.insert(port.port) {
            p.add(format!("{path}/port"), format!("port {} is declared twice", port.port));
        }
        check_port_name(port.name.as_deref(), &path, &mut names, p);
        check_protocol(&port.protocol, &path, p);
        check_port_labels(&port.labels, &path, p);
    }
}

fn check_port_mappings(def: &AppDefinition, p: &mut Problems) {
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let mappings = def.container.as_ref().map(|c| c.port_mappings.as_slice()).unwrap_or_default();
    for (i, mapping) in mappings.iter().enumerate() {
        let path = format!("/container/portMappings/{i}");
        if mapping.container_port == 0 || mapping.container_port > 65535 {
            p.add(format!("{path}/containerPort"), "must be between 1 and 65535");
        }
        match mapping.host_port {
            Some(port) if port > 65535 => p.add(format!("{path}/hostPort"), "must be between 0 and 65535"),
            Some(port) if port != 0 && !host_ports.insert(port) => {
                p.add(format!("{path}/hostPort"), format!("host port {port} is declared twice"));
            }
            _ => {}
        }
        check_port_name(mapping.name.as_deref(), &path, &mut names, p);
        check_protocol(&mapping.protocol, &path, p);
        check_port_labels(&mapping.labels, &path, p);
    }
}

fn check_health_checks(def: &AppDefinition, p: &mut Problems) {
    if def.health_checks.len() > 1 {
        p.add("/healthChecks", "at most one health check: Mesos runs one check per task");
    }
    let ports = port_count(def);
    for (i, check) in def.health_checks.iter().enumerate() {
        let path = format!("/healthChecks/{i}");
        let protocol = health_protocol(&check.protocol);
        match protocol {
            None => p.add(format!("{path}/protocol"), "must be MESOS_HTTP, MESOS_TCP or COMMAND"),
            Some("COMMAND") => {
                if check.command.as_ref().is_none_or(|c| c.value.trim().is_empty()) {
                    p.add(format!("{path}/command"), "COMMAND health checks need command.value");
                }
            }
            Some(network) => match check.port {
                Some(port) if port == 0 || port > 65535 => {
                    p.add(format!("{path}/port"), "must be between 1 and 65535");
                }
                Some(_) => {}
                None => {
                    let index = check.port_index.unwrap_or(0) as usize;
                    if ports == 0 {
                        p.add(
                            format!("{path}/portIndex"),
                            format!("{network} health checks need a port: the app has none (declare one, or set port)"),
                        );
                    } else if index >= ports {
                        let plural = if ports == 1 { "" } else { "s" };
                        p.add(format!("{path}/portIndex"), format!("is {index}, but the app has {ports} port{plural}"));
                    }
                }
            },
        }
        if protocol == Some("MESOS_HTTP")
            && let Some(http_path) = &check.path
            && !http_path.starts_with('/')
        {
            p.add(format!("{path}/path"), "must start with '/'");
        }
        for (name, value) in [
            ("gracePeriodSeconds", check.grace_period_seconds),
            ("intervalSeconds", check.interval_seconds),
            ("timeoutSeconds", check.timeout_seconds),
            ("delaySeconds", check.delay_seconds),
        ] {
            let field = format!("{path}/{name}");
            if !value.is_finite() || value < 0.0 {
                p.add(field, format!("must be a number >= 0, not {value}"));
            } else if value == 0.0 && matches!(name, "intervalSeconds" | "timeoutSeconds") {
                p.add(field, "must be greater than 0");
            }
        }
    }
}

fn check_upgrade_strategy(def: &AppDefinition, p: &mut Problems) {
    let strategy = &def.upgrade_strategy;
    let mut in_range = true;
    for (name, value) in [
        ("minimumHealthCapacity", strategy.minimum_health_capacity),
        ("maximumOverCapacity", strategy.maximum_over_capacity),
    ] {
        if !(0.0..=1.0).contains(&value) {
            p.add(format!("/upgradeStrategy/{name}"), format!("must be between 0 and 1, not {value}"));
            in_range = false;
        }
    }
    if in_range && strategy.minimum_health_capacity == 1.0 && strategy.maximum_over_capacity == 0.0 {
        p.add(
            "/upgradeStrategy",
            "minimumHealthCapacity 1 with maximumOverCapacity 0: no rolling upgrade can make progress",
        );
    }
}

fn check_constraints(def: &AppDefinition, p: &mut Problems) {
    if let Err(errors) = Constraint::parse_all(&def.constraints) {
        for (i, error) in errors {
            let path = match error.element() {
                Some(element) => format!("/constraints/{i}/{element}"),
                None => format!("/constraints/{i}"),
            };
            p.add(path, error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<(AppId, AppDefinition), ValidationErrors> {
        parse_app(value.to_string().as_bytes())
    }

    fn problems(value: Value) -> Vec<(String, String)> {
        parse(value).expect_err("refused").0.into_iter().map(|e| (e.path, e.message)).collect()
    }

    fn has(problems: &[(String, String)], path: &str, text: &str) -> bool {
        problems.iter().any(|(p, m)| p == path && m.contains(text))
    }

    fn web() -> Value {
        json!({
            "id": "/shop/web",
            "instances": 3,
            "cmd": "python3 -m http.server $PORT0",
            "cpus": 0.5,
            "mem": 64,
            "env": {"MODE": "prod"},
            "labels": {"HAPROXY_GROUP": "external"},
            "portDefinitions": [{"port": 0, "name": "http", "labels": {"VIP_0": "/web:80"}}],
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 5,
                              "intervalSeconds": 2, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5},
            "constraints": [["hostname", "UNIQUE"]]
        })
    }

    fn with(mut base: Value, patch: Value) -> Value {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    #[test]
    fn accepts_a_marathon_app() {
        let (id, def) = parse(web()).unwrap();
        assert_eq!(id.as_str(), "/shop/web");
        assert_eq!(def.instances, 3);
        let (id, _) = parse(json!({"id": "shop/web/", "args": ["/bin/sleep", "100"]})).unwrap();
        assert_eq!(id.as_str(), "/shop/web");
    }

    #[test]
    fn reports_invalid_json_at_the_root() {
        let errors = parse_app(b"{\"id\": ").unwrap_err();
        assert_eq!(errors.paths(), vec![""]);
        assert!(errors.0[0].message.starts_with("invalid JSON"), "{errors}");
        assert_eq!(parse_app(b"[1]").unwrap_err().paths(), vec![""]);
    }

    #[test]
    fn reports_every_shape_problem_with_its_path() {
        let found = problems(with(
            web(),
            json!({"instances": "three", "colour": "red", "intances": 2,
                   "healthChecks": [{"portIndex": -1, "protocol": "MESOS_HTTP"}],
                   "env": {"A": 1}}),
        ));
        assert!(has(&found, "/instances", "invalid type: string"), "{found:?}");
        assert!(has(&found, "/instances", "non-negative integer"), "{found:?}");
        assert!(has(&found, "/colour", "unknown field"), "{found:?}");
        assert!(has(&found, "/intances", "did you mean `instances`"), "{found:?}");
        assert!(has(&found, "/healthChecks/0/portIndex", ""), "{found:?}");
        assert!(has(&found, "/env/A", "expected a string"), "{found:?}");
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_missing_id_is_reported_at_its_path_with_the_other_problems() {
        let found = problems(json!({"cmd": "x", "cpus": -1}));
        assert_eq!(found[0], ("/id".to_owned(), "is required".to_owned()));
        assert!(has(&found, "/cpus", ">= 0"), "{found:?}");
        assert_eq!(found.len(), 2, "the placeholder id is not reported again: {found:?}");
        let found = problems(json!({"id": 5, "cmd": "x"}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "/id");
    }

    #[test]
    fn nested_unknown_fields_and_missing_command_value() {
        let found = problems(with(
            web(),
            json!({"healthChecks": [{"protocol": "COMMAND", "command": {"cmd": "true"}}],
                   "portDefinitions": [{"port": 0, "nmae": "http"}]}),
        ));
        assert!(has(&found, "/healthChecks/0/command/cmd", "unknown field"), "{found:?}");
        assert!(has(&found, "/healthChecks/0/command/value", "is required"), "{found:?}");
        assert!(has(&found, "/portDefinitions/0/nmae", "did you mean `name`"), "{found:?}");
    }

    #[test]
    fn display_lists_every_problem() {
        let errors = parse(json!({"id": "/a", "cmd": "x", "cpus": -1, "mem": -2})).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "Object is not valid: /cpus: must be a number >= 0, not -1; /mem: must be a number >= 0, not -2"
        );
        let body = errors.marathon_json();
        assert_eq!(body["message"], "Object is not valid");
        assert_eq!(body["details"][0]["path"], "/cpus");
    }

    #[test]
    fn command_rules() {
        let found = problems(json!({"id": "/a"}));
        assert!(has(&found, "/cmd", "one of cmd or args is required"), "{found:?}");
        let found = problems(json!({"id": "/a", "cmd": "x", "args": ["y"]}));
        assert!(has(&found, "/args", "mutually exclusive"), "{found:?}");
        assert!(has(&problems(json!({"id": "/a", "cmd": "  "})), "/cmd", "empty"));
        assert!(has(&problems(json!({"id": "/a", "args": []})), "/args", "program"));
        assert!(has(&problems(json!({"id": "/a", "args": ["x", "a\u{0}b"]})), "/args/1", "NUL"));
    }

    #[test]
    fn id_and_resources() {
        let found = problems(json!({"id": "/Shop", "cmd": "x", "cpus": 0, "mem": 0}));
        assert!(has(&found, "/id", "lowercase"), "{found:?}");
        assert!(has(&found, "", "cpus and mem cannot both be 0"), "{found:?}");
        let found = problems(json!({"id": "/a", "cmd": "x", "disk": -5}));
        assert!(has(&found, "/disk", ">= 0"), "{found:?}");
    }

    #[test]
    fn env_and_labels() {
        let found = problems(json!({"id": "/a", "cmd": "x", "env": {"A=B": "1", "": "2", "a/b": "x\u{0}"},
                                    "labels": {"": "x", "ATOLL_APP_ID": "/b"}}));
        assert!(has(&found, "/env/A=B", "'='"), "{found:?}");
        assert!(has(&found, "/env/", "empty"), "{found:?}");
        assert!(has(&found, "/env/a~1b", "NUL"), "{found:?}");
        assert!(has(&found, "/labels/", "empty"), "{found:?}");
        assert!(has(&found, "/labels/ATOLL_APP_ID", "set by Atoll"), "{found:?}");
    }

    #[test]
    fn port_definitions() {
        let found = problems(with(
            web(),
            json!({"portDefinitions": [
                {"port": 70000}, {"port": 80, "name": "Web"}, {"port": 80, "protocol": "sctp"},
                {"port": 0, "name": "a"}, {"port": 0, "name": "a"}]}),
        ));
        assert!(has(&found, "/portDefinitions/0/port", "65535"), "{found:?}");
        assert!(has(&found, "/portDefinitions/1/name", "lowercase"), "{found:?}");
        assert!(has(&found, "/portDefinitions/2/port", "declared twice"), "{found:?}");
        assert!(has(&found, "/portDefinitions/2/protocol", "tcp, udp"), "{found:?}");
        assert!(has(&found, "/portDefinitions/4/name", "used twice"), "{found:?}");
        assert_eq!(found.len(), 5, "{found:?}");

        let required = with(web(), json!({"requirePorts": true, "portDefinitions": [{"port": 0}, {"port": 8080}]}));
        let found = problems(with(required, json!({"healthChecks": null})));
        assert!(has(&found, "/portDefinitions/0/port", "requirePorts"), "{found:?}");
        assert_eq!(found.len(), 1, "{found:?}");

        for protocol in ["tcp", "udp", "udp,tcp", "tcp,udp"] {
            let app = with(web(), json!({"portDefinitions": [{"port": 0, "protocol": protocol}]}));
            assert!(parse(app).is_ok(), "{protocol}");
        }
    }

    #[test]
    fn networking_modes() {
        let bridge = with(
            web(),
            json!({"networks": [{"mode": "container/bridge"}], "portDefinitions": null,
                                       "healthChecks": null}),
        );
        let found = problems(bridge);
        assert!(has(&found, "/networks/0/mode", "bridge networking needs Docker"), "{found:?}");

        let container = with(web(), json!({"networks": [{"mode": "container", "name": "atoll"}]}));
        let found = problems(container);
        assert!(has(&found, "/portDefinitions", "use container.portMappings"), "{found:?}");

        let mixed = with(web(), json!({"container": {"type": "MESOS", "portMappings": [{"containerPort": 80}]}}));
        assert!(has(&problems(mixed), "/container/portMappings", "container networking"));

        let docker = with(web(), json!({"container": {"type": "DOCKER"}}));
        assert!(has(&problems(docker), "/container/type", "DOCKER needs a Docker engine"));

        let two = with(web(), json!({"networks": [{"mode": "host"}, {"mode": "host"}]}));
        assert!(has(&problems(two), "/networks", "at most one"));
        let odd = with(web(), json!({"networks": [{"mode": "overlay"}]}));
        assert!(has(&problems(odd), "/networks/0/mode", "host or container"));
        assert!(parse(with(web(), json!({"networks": [{"mode": "host"}]}))).is_ok());
    }

    #[test]
    fn container_networks_with_port_mappings_and_pinned_addresses() {
        let container = json!({"networks": [{"mode": "container", "name": "atoll"}], "portDefinitions": null,
               "container": {"type": "MESOS", "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]}});
        assert!(parse(with(web(), container.clone())).is_ok());
        let mut pinned = container.clone();
        pinned["networks"][0]["ipAddress"] = json!("198.18.0.9");
        pinned["instances"] = json!(2);
        assert!(has(&problems(with(web(), pinned.clone())), "/networks/0/ipAddress", "one instance"));
        pinned["instances"] = json!(1);
        assert!(parse(with(web(), pinned)).is_ok());
        let host_pin = with(web(), json!({"networks": [{"mode": "host", "ipAddress": "198.18.0.9"}]}));
        assert!(has(&problems(host_pin), "/networks/0/ipAddress", "only a container network"));
    }

    #[test]
    fn health_checks() {
        let two = with(web(), json!({"healthChecks": [{"protocol": "TCP"}, {"protocol": "TCP"}]}));
        assert!(has(&problems(two), "/healthChecks", "one check per task"));

        let found = problems(with(
            web(),
            json!({"healthChecks": [{"protocol": "HTTPS", "portIndex": 0, "intervalSeconds": 0, "timeoutSeconds": -1}]}),
        ));
        assert!(has(&found, "/healthChecks/0/protocol", "MESOS_HTTP, MESOS_TCP or COMMAND"), "{found:?}");
        assert!(has(&found, "/healthChecks/0/intervalSeconds", "greater than 0"), "{found:?}");
        assert!(has(&found, "/healthChecks/0/timeoutSeconds", ">= 0"), "{found:?}");

        let index = with(web(), json!({"healthChecks": [{"protocol": "MESOS_TCP", "portIndex": 1}]}));
        assert!(has(&problems(index), "/healthChecks/0/portIndex", "is 1, but the app has 1 port"));
        let no_ports = with(web(), json!({"portDefinitions": [], "healthChecks": [{"protocol": "HTTP"}]}));
        assert!(has(&problems(no_ports.clone()), "/healthChecks/0/portIndex", "the app has none"));
        let explicit = with(no_ports, json!({"healthChecks": [{"protocol": "HTTP", "port": 8080}]}));
        assert!(parse(explicit).is_ok());
        // Absent portDefinitions mean one port, as in Marathon.
        let default_port = with(web(), json!({"portDefinitions": null, "healthChecks": [{"protocol": "TCP"}]}));
        assert!(parse(default_port).is_ok());

        let path = with(web(), json!({"healthChecks": [{"protocol": "MESOS_HTTP", "path": "health"}]}));
        assert!(has(&problems(path), "/healthChecks/0/path", "start with '/'"));
        let command = with(web(), json!({"healthChecks": [{"protocol": "COMMAND"}]}));
        assert!(has(&problems(command), "/healthChecks/0/command", "command.value"));
        let command = with(web(), json!({"healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}}]}));
        assert!(parse(command).is_ok());
    }

    #[test]
    fn upgrade_strategy() {
        let stuck = with(web(), json!({"upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0}}));
        assert!(has(&problems(stuck), "/upgradeStrategy", "no rolling upgrade can make progress"));
        let range = with(web(), json!({"upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": -1}}));
        let found = problems(range);
        assert!(has(&found, "/upgradeStrategy/minimumHealthCapacity", "between 0 and 1"), "{found:?}");
        assert!(has(&found, "/upgradeStrategy/maximumOverCapacity", "between 0 and 1"), "{found:?}");
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn constraints_and_backoff() {
        let found = problems(with(
            web(),
            json!({"constraints": [["hostname", "UNIQUE"], ["rack"], ["rack", "NEAR"], ["rack", "LIKE", "("],
                                   ["rack", "MAX_PER", "0"], ["rack", "CLUSTER"]],
                   "backoffSeconds": -1, "backoffFactor": 0.5, "maxLaunchDelaySeconds": -1,
                   "taskKillGracePeriodSeconds": -3}),
        ));
        assert!(has(&found, "/constraints/1", "[field, operator]"), "{found:?}");
        assert!(has(&found, "/constraints/2/1", "unknown operator"), "{found:?}");
        assert!(has(&found, "/constraints/3/2", "regular expression"), "{found:?}");
        assert!(has(&found, "/constraints/4/2", "positive integer"), "{found:?}");
        assert!(has(&found, "/constraints/5", "needs a value"), "{found:?}");
        assert!(has(&found, "/backoffSeconds", ">= 0"), "{found:?}");
        assert!(has(&found, "/backoffFactor", ">= 1"), "{found:?}");
        assert!(has(&found, "/maxLaunchDelaySeconds", ">= 0"), "{found:?}");
        assert!(has(&found, "/taskKillGracePeriodSeconds", ">= 0"), "{found:?}");
        let wrong_type = problems(with(web(), json!({"constraints": [["rack", "MAX_PER", 2]]})));
        assert_eq!(wrong_type.len(), 1, "{wrong_type:?}");
        assert_eq!(wrong_type[0].0, "/constraints/0/2");
    }

    #[test]
    fn updates_merge_or_replace() {
        let url = AppId::parse("/shop/web").unwrap();
        let (_, current) = parse(web()).unwrap();
        let (_, scaled) = parse_update(&url, Some(&current), br#"{"instances": 5}"#, true).unwrap();
        assert_eq!(scaled.instances, 5);
        assert_eq!(scaled.cmd, current.cmd);
        let (_, reset) = parse_update(&url, Some(&current), br#"{"constraints": null}"#, true).unwrap();
        assert!(reset.constraints.is_empty());
        let (_, replaced) = parse_update(&url, Some(&current), br#"{"cmd": "sleep 1"}"#, false).unwrap();
        assert_eq!(replaced.instances, 1, "a full update starts from the defaults");
        assert_eq!(replaced.id, "/shop/web");
        let err = parse_update(&url, Some(&current), br#"{"id": "/other", "cmd": "x"}"#, false).unwrap_err();
        assert_eq!(err.paths(), vec!["/id"]);
        let err = parse_update(&url, Some(&current), br#"{"instances": -1}"#, true).unwrap_err();
        assert_eq!(err.paths(), vec!["/instances"]);
        let (_, created) = parse_update(&url, None, br#"{"cmd": "sleep 1"}"#, true).unwrap();
        assert_eq!(created.cmd.as_deref(), Some("sleep 1"));
    }

    #[test]
    fn json_pointer_relations() {
        assert!(related("/a", "/a/b"));
        assert!(related("/a/b", "/a"));
        assert!(!related("/a", "/ab"));
        assert!(related("", "/x"));
        assert_eq!(edit_distance("intances", "instances"), 1);
        assert_eq!(pointer(&["a/b".into(), "c~".into()]), "/a~1b/c~0");
    }
}
