//! Conformance with the real Mesos-DNS: `fake.json` (a Mesos `/master/state`) run through the
//! projection under the settings of each `golden_*.json` must give exactly the A, AAAA and SRV
//! records and the `/v1/enumerate` data Mesos-DNS generated for it.
//!
//! The fixtures live outside the repository, in `shared/compat/mesos-dns/` beside it (CI lays
//! `shared/` next to the checkout); `$ATOLL_COMPAT_DIR` points elsewhere. Only records are
//! computed: no address in the fixtures is ever contacted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use atoll_dns::projection::{DnsConfig, IpSource, LabelSpec, Masters, Projection};
use atoll_dns::records::{Change, RecordData, RecordSet};
use serde_json::Value;

/// The golden files and the label spec each was generated with (it is in the name only).
const GOLDEN: [(&str, LabelSpec); 4] = [
    ("golden_rfc952_generatortest.json", LabelSpec::Rfc952),
    ("golden_rfc952_resolvertest.json", LabelSpec::Rfc952),
    ("golden_rfc1123_default_ipsources.json", LabelSpec::Rfc1123),
    ("golden_rfc1123_resolvertest.json", LabelSpec::Rfc1123),
];

/// `name → values` per record type, the golden files' shape (SRV values are `target:port`).
type Sets = BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>>;

fn compat_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("ATOLL_COMPAT_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat")])
        .collect();
    candidates.iter().find(|dir| dir.join("mesos-dns/fake.json").is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "the Mesos-DNS conformance fixtures (mesos-dns/fake.json) are in none of {candidates:?}: \
             lay the shared/ folder beside the repository or set ATOLL_COMPAT_DIR to its compat/ folder"
        )
    })
}

fn fixture(name: &str) -> Value {
    let path = compat_dir().join("mesos-dns").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What Mesos-DNS resolved `localhost` to when it made the golden files (for the framework
/// without a PID, known only by its host name).
fn resolve_localhost(host: &str) -> Vec<IpAddr> {
    if host == "localhost" { vec![IpAddr::from([127, 0, 0, 1])] } else { Vec::new() }
}

/// A projection set up as the golden file's `inputs` say (and the changes that made its first
/// records), and fake.json with its leader.
fn setup(golden: &Value, label_spec: LabelSpec, health_aware: bool) -> (Projection, Value, Vec<Change>) {
    let inputs = &golden["inputs"];
    let ip_sources = inputs["ip_sources"]
        .as_array()
        .expect("ip_sources")
        .iter()
        .map(|s| serde_json::from_value::<IpSource>(s.clone()).expect("an IP source"))
        .collect();
    let mut projection = Projection::new(DnsConfig {
        domain: inputs["domain"].as_str().expect("domain").into(),
        label_spec,
        ip_sources,
        soa_mname: inputs["soa_mname"].as_str().expect("soa_mname").into(),
        dns_ips: vec![inputs["listener"].as_str().expect("listener").parse().expect("listener IP")],
        health_aware,
        ..DnsConfig::default()
    });
    let masters: Vec<SocketAddr> = inputs["masters"]
        .as_array()
        .map(|list| list.iter().map(|m| m.as_str().expect("master").parse().expect("ip:port")).collect())
        .unwrap_or_default();
    let changes = projection.set_masters(Masters { leader: None, masters });
    let mut state = fixture("fake.json");
    state["leader"] = inputs["leader"].clone();
    (projection, state, changes)
}

fn golden_sets(golden: &Value) -> Sets {
    ["A", "AAAA", "SRV"]
        .into_iter()
        .map(|kind| {
            let names = golden[kind]
                .as_object()
                .unwrap_or_else(|| panic!("golden {kind}"))
                .iter()
                .map(|(name, values)| {
                    let values = values.as_array().expect("values").iter().map(|v| v.as_str().unwrap().to_owned());
                    (name.clone(), values.collect())
                })
                .collect();
            (kind, names)
        })
        .collect()
}

fn sets(records: &RecordSet) -> Sets {
    let mut sets: Sets = ["A", "AAAA", "SRV"].into_iter().map(|kind| (kind, BTreeMap::new())).collect();
    for record in records.records() {
        let (kind, value) = match &record.data {
            RecordData::A(ip) => ("A", ip.to_string()),
            RecordData::Aaaa(ip) => ("AAAA", ip.to_string()),
            RecordData::Srv { priority, weight, port, target } => {
                assert_eq!((*priority, *weight), (0, 1), "Mesos-DNS's SRV priority and weight");
                ("SRV", format!("{target}:{port}"))
            }
        };
        sets.get_mut(kind).unwrap().entry(record.name.to_string()).or_default().insert(value);
    }
    sets
}

/// Lists where Mesos-DNS's order carries no meaning become sorted: frameworks, their tasks,
/// each task's records.
fn unordered(enumerate: &Value) -> Value {
    let mut frameworks: Vec<Value> = enumerate["frameworks"]
        .as_array()
        .expect("frameworks")
        .iter()
        .map(|framework| {
            let mut tasks: Vec<Value> = framework["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|task| {
                    let mut records = task["records"].as_array().expect("records").clone();
                    records.sort_by_key(|r| r.to_string());
                    serde_json::json!({"name": task["name"], "id": task["id"], "records": records})
                })
                .collect();
            tasks.sort_by_key(|t| t.to_string());
            serde_json::json!({"name": framework["name"], "tasks": tasks})
        })
        .collect();
    frameworks.sort_by_key(|f| f.to_string());
    serde_json::json!({ "frameworks": frameworks })
}

fn assert_sets_equal(got: &Sets, want: &Sets, context: &str) {
    for kind in ["A", "AAAA", "SRV"] {
        let (got, want) = (&got[kind], &want[kind]);
        let names: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
        let differences: Vec<String> = names
            .into_iter()
            .filter(|name| got.get(*name) != want.get(*name))
            .map(|name| format!("  {kind} {name}: got {:?}, Mesos-DNS {:?}", got.get(name), want.get(name)))
            .collect();
        assert!(differences.is_empty(), "{context}: {kind} records differ:\n{}", differences.join("\n"));
    }
}

#[test]
fn records_and_enumerate_match_mesos_dns_exactly() {
    for (file, label_spec) in GOLDEN {
        let golden = fixture(file);
        let want = golden_sets(&golden);
        for health_aware in [false, true] {
            // fake.json has no health checks: health-aware changes nothing here.
            let context = format!("{file} (health_aware: {health_aware})");
            let (mut projection, state, first) = setup(&golden, label_spec, health_aware);
            let changes = projection.reset_from_mesos_state_resolving(&state, &resolve_localhost).expect(&context);
            assert_sets_equal(&sets(projection.records()), &want, &context);
            assert_eq!(projection.serial(), 0);

            // The changes handed out build the same set.
            let mut served = RecordSet::new();
            for change in first.iter().chain(&changes) {
                served.apply(change);
            }
            assert_sets_equal(&sets(&served), &want, &format!("{context}: replayed changes"));

            let enumerate = projection.enumerate();
            assert_eq!(unordered(&enumerate), unordered(&golden["enumerate"]), "{context}: enumerate");
            // Frameworks, tasks and records even come in Mesos-DNS's order.
            assert_eq!(enumerate, golden["enumerate"], "{context}: enumerate order");

            // The same state again changes nothing.
            assert_eq!(projection.reset_from_mesos_state_resolving(&state, &resolve_localhost), Ok(vec![]));
        }
    }
}

#[test]
fn without_a_resolver_only_the_name_of_the_framework_without_pid_is_missing() {
    let (file, label_spec) = GOLDEN[1];
    let golden = fixture(file);
    let mut want = golden_sets(&golden);
    assert!(want.get_mut("A").unwrap().remove("nopid.mesos.").is_some());
    let (mut projection, state, _) = setup(&golden, label_spec, false);
    projection.reset_from_mesos_state(&state).expect("state");
    assert_sets_equal(&sets(projection.records()), &want, file);
}

/// The other IP source orders of Mesos-DNS's TestInsertState, against the same state.
#[test]
fn ip_source_orders_match_mesos_dns_generator_tests() {
    use IpSource::*;
    let golden = fixture(GOLDEN[0].0);
    let cases: [(&[IpSource], &str, &str, &[&str]); 12] = [
        (&[Docker, Host], "A", "liquor-store.marathon.mesos.", &["10.3.0.1", "10.3.0.2"]),
        (&[Docker, Host], "A", "nginx.marathon.mesos.", &["1.2.3.11"]),
        (&[Docker, Host], "AAAA", "toy-store.ipv6-framework.mesos.", &["2001:db8::1"]),
        (&[Mesos, Host], "A", "liquor-store.marathon.mesos.", &["1.2.3.11", "1.2.3.12"]),
        (&[Mesos, Host], "A", "nginx.marathon.mesos.", &["10.3.0.3"]),
        (&[Host], "A", "liquor-store.marathon.mesos.", &["1.2.3.11", "1.2.3.12"]),
        (&[Host], "A", "nginx.marathon.mesos.", &["1.2.3.11"]),
        (&[Host], "AAAA", "toy-store.ipv6-framework.slave.mesos.", &["2001:db8::1"]),
        (&[NetInfo], "A", "toy-store.ipv6-framework.mesos.", &["12.0.1.3", "12.0.1.2"]),
        (&[NetInfo], "AAAA", "toy-store.ipv6-framework.mesos.", &["fd01:b::1:8000:2"]),
        (&[NetInfo], "A", "liquor-store.marathon.mesos.", &[]),
        (&[NetInfo], "A", "liquor-store.marathon.slave.mesos.", &["1.2.3.11", "1.2.3.12"]),
    ];
    for (sources, kind, name, want) in cases {
        let (projection, state, _) = setup(&golden, LabelSpec::Rfc952, false);
        let mut config = projection.config().clone();
        config.ip_sources = sources.to_vec();
        let mut projection = Projection::new(config);
        projection.reset_from_mesos_state(&state).expect("state");
        let got = sets(projection.records())[kind].get(name).cloned().unwrap_or_default();
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{sources:?} {kind} {name}");
    }
}

#[test]
fn a_state_without_leader_is_refused_and_changes_nothing() {
    let (file, label_spec) = GOLDEN[1];
    let golden = fixture(file);
    let (mut projection, mut state, _) = setup(&golden, label_spec, false);
    projection.reset_from_mesos_state(&state).expect("state");
    let before = projection.records().clone();
    state.as_object_mut().unwrap().remove("leader");
    assert!(projection.reset_from_mesos_state(&state).is_err());
    assert_eq!(projection.records(), &before);
}
