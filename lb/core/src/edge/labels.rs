//! App labels → edge route specs, one per app port the labels expose.
//!
//! Marathon-LB's labels, as it documents them (`{n}` is the port index):
//!
//! | label | meaning here |
//! |---|---|
//! | `HAPROXY_GROUP`, `HAPROXY_{n}_GROUP` | comma-separated groups (the port's replace the app's); a port is served by an edge whose `--group` is one of them, or `*` |
//! | `HAPROXY_{n}_VHOST` | comma-separated virtual hosts |
//! | `HAPROXY_{n}_PATH` | path prefix (`path_beg`: a plain string prefix), only with a vhost |
//! | `HAPROXY_{n}_BALANCE` | `roundrobin`, `static-rr`, `leastconn`, `random`, `source`, `hdr(NAME)` |
//! | `HAPROXY_{n}_REDIRECT_TO_HTTPS` | `true`: plain HTTP requests for its vhosts get a 301 to HTTPS |
//! | `HAPROXY_{n}_ENABLED` | `false`: the port is not served |
//! | `HAPROXY_{n}_PORT` | the service port (otherwise the port definition's) |
//!
//! Atoll's own, which win over Marathon-LB's for the same port: `ATOLL_EDGE_{n}_HOST`
//! (comma-separated), `ATOLL_EDGE_{n}_PATH` (whole path segments), `ATOLL_EDGE_{n}_STRIP_PREFIX`,
//! `ATOLL_EDGE_{n}_BALANCE` (`round-robin`, `least-connections`, `hash-header:NAME`,
//! `hash-cookie:NAME`, `hash-client-ip`), `ATOLL_EDGE_{n}_REDIRECT_TO_HTTPS`, and the groups
//! `ATOLL_EDGE_{n}_GROUP` / `ATOLL_EDGE_GROUP` (else Marathon-LB's, else [`DEFAULT_GROUP`]: a
//! port with Atoll's labels asked for the edge).
//!
//! A value that cannot be used is a problem reported with the app; the port keeps a safe
//! default (round robin, no redirect) or, for a bad host, is served on its other hosts.

use std::collections::BTreeMap;

use super::{Balance, DEFAULT_GROUP, EdgeProblem, HashOn, PathMatch};

/// What an app's labels ask of the edge for one of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub port_index: usize,
    pub groups: Vec<String>,
    /// Lowercase; empty with a path = any host; empty without a path = no HTTP route (the
    /// port is only listed, as Marathon-LB would serve it on its service port).
    pub hosts: Vec<String>,
    pub path: Option<PathMatch>,
    pub strip_prefix: bool,
    pub balance: Balance,
    pub redirect_to_https: bool,
    /// `HAPROXY_{n}_PORT`, overriding the app port's own service port.
    pub service_port: Option<u32>,
}

impl RouteSpec {
    /// Whether an edge serving `group` serves this port: one of its groups, or every port
    /// (grouped or not) for `*`, as Marathon-LB's `--group '*'`.
    pub fn in_group(&self, group: &str) -> bool {
        group == "*" || self.groups.iter().any(|g| g == group)
    }

    /// Whether requests can be routed to it by host or path.
    pub fn is_http(&self) -> bool {
        !self.hosts.is_empty() || self.path.is_some()
    }
}

/// The route specs of an app with `ports` ports, and what was wrong with its labels.
pub fn route_specs(app: &str, labels: &BTreeMap<String, String>, ports: usize) -> (Vec<RouteSpec>, Vec<EdgeProblem>) {
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let mut problem = |message: String| problems.push(EdgeProblem::new(app, message));
    let get = |key: String| labels.get(&key).map(|v| v.trim()).filter(|v| !v.is_empty());
    for n in 0..ports {
        let atoll_hosts = get(format!("ATOLL_EDGE_{n}_HOST"));
        let atoll_path = get(format!("ATOLL_EDGE_{n}_PATH"));
        let atoll = atoll_hosts.is_some() || atoll_path.is_some();
        let haproxy_groups = get(format!("HAPROXY_{n}_GROUP")).or_else(|| get("HAPROXY_GROUP".into()));
        let groups = if atoll {
            get(format!("ATOLL_EDGE_{n}_GROUP"))
                .or_else(|| get("ATOLL_EDGE_GROUP".into()))
                .or(haproxy_groups)
                .or(Some(DEFAULT_GROUP))
        } else {
            // No group: served only by an edge serving every group (`--group '*'`).
            haproxy_groups
        };
        let groups: Vec<String> = groups.map(split_list).into_iter().flatten().map(str::to_owned).collect();
        if !atoll {
            match get(format!("HAPROXY_{n}_ENABLED")).map(parse_bool) {
                Some(Ok(false)) => continue,
                Some(Err(value)) => problem(format!("HAPROXY_{n}_ENABLED: `{value}` is not true or false")),
                _ => {}
            }
        }
        let (host_key, path_key, balance_key, redirect_key) = if atoll {
            (
                format!("ATOLL_EDGE_{n}_HOST"),
                format!("ATOLL_EDGE_{n}_PATH"),
                format!("ATOLL_EDGE_{n}_BALANCE"),
                format!("ATOLL_EDGE_{n}_REDIRECT_TO_HTTPS"),
            )
        } else {
            (
                format!("HAPROXY_{n}_VHOST"),
                format!("HAPROXY_{n}_PATH"),
                format!("HAPROXY_{n}_BALANCE"),
                format!("HAPROXY_{n}_REDIRECT_TO_HTTPS"),
            )
        };
        let mut hosts = Vec::new();
        for host in get(host_key.clone()).map(split_list).into_iter().flatten() {
            match normalize_host(host) {
                Ok(host) if !hosts.contains(&host) => hosts.push(host),
                Ok(_) => {}
                Err(why) => problem(format!("{host_key}: `{host}` {why}")),
            }
        }
        let path = match get(path_key.clone()) {
            None => None,
            // Marathon-LB ANDs the path with the vhost ACL; without a vhost it is ignored.
            Some(_) if !atoll && hosts.is_empty() => None,
            Some(path) if !path.starts_with('/') || path.contains(char::is_whitespace) => {
                problem(format!("{path_key}: `{path}` is not a path (it must start with /)"));
                // A route with a path its labels got wrong is not served on the whole host.
                continue;
            }
            Some(path) if atoll => Some(PathMatch::Segments(path.to_owned())),
            Some(path) => Some(PathMatch::Begins(path.to_owned())),
        };
        let balance = match get(balance_key.clone()) {
            None => Balance::RoundRobin,
            Some(value) => {
                let parsed = if atoll { parse_atoll_balance(value) } else { parse_haproxy_balance(value) };
                parsed.unwrap_or_else(|why| {
                    problem(format!("{balance_key}: `{value}` {why}; using round robin"));
                    Balance::RoundRobin
                })
            }
        };
        let redirect_to_https = match get(redirect_key.clone()).map(parse_bool) {
            None => false,
            // A redirect is per virtual host in Marathon-LB.
            Some(Ok(value)) => value && (atoll || !hosts.is_empty()),
            Some(Err(value)) => {
                problem(format!("{redirect_key}: `{value}` is not true or false"));
                false
            }
        };
        let strip_prefix = match get(format!("ATOLL_EDGE_{n}_STRIP_PREFIX")).map(parse_bool) {
            None => false,
            Some(Ok(value)) if atoll => value,
            Some(Ok(_)) => {
                problem(format!("ATOLL_EDGE_{n}_STRIP_PREFIX needs ATOLL_EDGE_{n}_HOST or _PATH"));
                false
            }
            Some(Err(value)) => {
                problem(format!("ATOLL_EDGE_{n}_STRIP_PREFIX: `{value}` is not true or false"));
                false
            }
        };
        let service_port = match get(format!("HAPROXY_{n}_PORT")) {
            None => None,
            Some(value) => match value.parse::<u32>() {
                Ok(port) if (1..=65535).contains(&port) => Some(port),
                _ => {
                    problem(format!("HAPROXY_{n}_PORT: `{value}` is not a port number"));
                    None
                }
            },
        };
        specs.push(RouteSpec {
            port_index: n,
            groups,
            hosts,
            path,
            strip_prefix,
            balance,
            redirect_to_https,
            service_port,
        });
    }
    // Labels for ports the app does not have.
    for key in labels.keys() {
        if let Some(n) = port_index_of(key)
            && n >= ports
        {
            problems.push(EdgeProblem::new(app, format!("{key}: the app has no port {n}")));
        }
    }
    (specs, problems)
}

/// The `{n}` of `HAPROXY_{n}_…` and `ATOLL_EDGE_{n}_…`.
fn port_index_of(key: &str) -> Option<usize> {
    let rest = key.strip_prefix("HAPROXY_").or_else(|| key.strip_prefix("ATOLL_EDGE_"))?;
    let (n, _) = rest.split_once('_')?;
    n.parse().ok()
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_bool(value: &str) -> Result<bool, &str> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "on" => Ok(true),
        "false" | "f" | "no" | "n" | "0" | "off" => Ok(false),
        _ => Err(value),
    }
}

/// A host name as requests carry it: lowercase, no trailing dot, RFC 1123 labels.
pub fn normalize_host(host: &str) -> Result<String, &'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err("is not a host name");
    }
    let valid = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if valid { Ok(host) } else { Err("is not a host name (letters, digits, '-' and dots)") }
}

fn parse_haproxy_balance(value: &str) -> Result<Balance, &'static str> {
    let value = value.to_ascii_lowercase();
    match value.as_str() {
        "roundrobin" | "static-rr" => Ok(Balance::RoundRobin),
        // HAProxy's `random` draws two and takes the less loaded: power of two choices.
        "leastconn" | "random" | "random(2)" => Ok(Balance::LeastConnections),
        "source" => Ok(Balance::Hash(HashOn::ClientIp)),
        _ => match value.strip_prefix("hdr(").and_then(|v| v.strip_suffix(')')) {
            Some(name) if valid_header_name(name) => Ok(Balance::Hash(HashOn::Header(name.to_owned()))),
            _ => Err(
                "is not a balance this edge implements (roundrobin, static-rr, leastconn, random, source, hdr(NAME))",
            ),
        },
    }
}

fn parse_atoll_balance(value: &str) -> Result<Balance, &'static str> {
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "round-robin" => Ok(Balance::RoundRobin),
        "least-connections" | "least-conn" | "p2c" => Ok(Balance::LeastConnections),
        "hash-client-ip" => Ok(Balance::Hash(HashOn::ClientIp)),
        _ => {
            if let Some(name) = lower.strip_prefix("hash-header:")
                && valid_header_name(name)
            {
                return Ok(Balance::Hash(HashOn::Header(name.to_owned())));
            }
            // Cookie names are case-sensitive.
            if let Some(name) = value.get("hash-cookie:".len()..).filter(|_| lower.starts_with("hash-cookie:"))
                && !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                return Ok(Balance::Hash(HashOn::Cookie(name.to_owned())));
            }
            Err("is not round-robin, least-connections, hash-header:NAME, hash-cookie:NAME or hash-client-ip")
        }
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn marathon_lb_labels_make_routes_per_port() {
        let (specs, problems) = route_specs(
            "/web",
            &labels(&[
                ("HAPROXY_GROUP", "external"),
                ("HAPROXY_0_VHOST", "Web.Example.com, www.example.com."),
                ("HAPROXY_0_PATH", "/api"),
                ("HAPROXY_0_BALANCE", "leastconn"),
                ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
                ("HAPROXY_1_GROUP", "internal,external"),
                ("HAPROXY_1_BALANCE", "hdr(X-User)"),
                ("HAPROXY_1_PORT", "10001"),
                ("HAPROXY_2_ENABLED", "false"),
            ]),
            3,
        );
        assert_eq!(problems, vec![]);
        assert_eq!(specs.len(), 2, "port 2 is disabled: {specs:?}");
        assert_eq!(specs[0].hosts, vec!["web.example.com", "www.example.com"]);
        assert_eq!(specs[0].path, Some(PathMatch::Begins("/api".into())));
        assert_eq!(specs[0].balance, Balance::LeastConnections);
        assert!(specs[0].redirect_to_https && specs[0].in_group("external") && !specs[0].in_group("internal"));
        assert_eq!(specs[1].groups, vec!["internal", "external"]);
        assert_eq!(specs[1].balance, Balance::Hash(HashOn::Header("x-user".into())));
        assert_eq!(specs[1].service_port, Some(10001));
        assert!(!specs[1].is_http(), "no vhost or path: listed, not routed by host");
    }

    #[test]
    fn without_a_group_only_an_edge_of_every_group_serves_a_port() {
        let (specs, problems) = route_specs("/web", &labels(&[("HAPROXY_0_VHOST", "a.example")]), 1);
        assert!(problems.is_empty());
        assert!(!specs[0].in_group("external") && specs[0].in_group("*"));
        let (specs, _) =
            route_specs("/web", &labels(&[("HAPROXY_GROUP", "external"), ("HAPROXY_0_GROUP", "internal")]), 1);
        assert!(specs[0].in_group("internal") && !specs[0].in_group("external"), "the port's group replaces the app's");
    }

    #[test]
    fn a_marathon_lb_path_or_redirect_needs_a_vhost() {
        let (specs, problems) = route_specs(
            "/web",
            &labels(&[
                ("HAPROXY_GROUP", "external"),
                ("HAPROXY_0_PATH", "/api"),
                ("HAPROXY_0_REDIRECT_TO_HTTPS", "yes"),
            ]),
            1,
        );
        assert!(problems.is_empty());
        assert_eq!(specs[0].path, None);
        assert!(!specs[0].redirect_to_https && !specs[0].is_http());
    }

    #[test]
    fn atoll_labels_win_and_default_to_the_external_group() {
        let (specs, problems) = route_specs(
            "/web",
            &labels(&[
                ("HAPROXY_GROUP", "internal"),
                ("HAPROXY_0_VHOST", "old.example"),
                ("ATOLL_EDGE_0_HOST", "new.example"),
                ("ATOLL_EDGE_0_PATH", "/app"),
                ("ATOLL_EDGE_0_STRIP_PREFIX", "true"),
                ("ATOLL_EDGE_0_BALANCE", "hash-cookie:Session"),
                ("ATOLL_EDGE_1_HOST", "other.example"),
                ("ATOLL_EDGE_GROUP", "public"),
            ]),
            2,
        );
        assert_eq!(problems, vec![]);
        assert_eq!(specs[0].hosts, vec!["new.example"]);
        assert_eq!(specs[0].path, Some(PathMatch::Segments("/app".into())));
        assert!(specs[0].strip_prefix);
        assert_eq!(specs[0].balance, Balance::Hash(HashOn::Cookie("Session".into())));
        assert_eq!(specs[0].groups, vec!["public"]);
        let (specs, _) = route_specs("/web", &labels(&[("ATOLL_EDGE_0_HOST", "a.example")]), 1);
        assert_eq!(specs[0].groups, vec![DEFAULT_GROUP]);
    }

    #[test]
    fn bad_values_are_problems_and_safe_defaults() {
        let (specs, problems) = route_specs(
            "/web",
            &labels(&[
                ("HAPROXY_GROUP", "external"),
                ("HAPROXY_0_VHOST", "ok.example,bad_host!,"),
                ("HAPROXY_0_BALANCE", "uri"),
                ("HAPROXY_0_REDIRECT_TO_HTTPS", "maybe"),
                ("HAPROXY_0_PORT", "70000"),
                ("HAPROXY_1_VHOST", "p1.example"),
                ("HAPROXY_1_PATH", "nope"),
                ("HAPROXY_3_VHOST", "x.example"),
            ]),
            2,
        );
        assert_eq!(specs.len(), 1, "{specs:?}");
        assert_eq!(specs[0].hosts, vec!["ok.example"]);
        assert_eq!(specs[0].balance, Balance::RoundRobin);
        assert!(!specs[0].redirect_to_https);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        for needle in [
            "HAPROXY_0_VHOST: `bad_host!`",
            "HAPROXY_0_BALANCE: `uri`",
            "HAPROXY_0_REDIRECT_TO_HTTPS: `maybe`",
            "HAPROXY_0_PORT: `70000`",
            "HAPROXY_1_PATH: `nope`",
            "HAPROXY_3_VHOST: the app has no port 3",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(needle)), "{needle} not in {messages:?}");
        }
    }
}
