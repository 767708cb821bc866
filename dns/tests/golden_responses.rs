//! Conformance with the real Mesos-DNS: the 43 query → response cases of
//! `golden_dns_responses_rfc952.json`, answered from the records Mesos-DNS generated for the
//! same setup (`golden_rfc952_resolvertest.json`), once through the pure `answer` and once over
//! UDP from a real server on loopback.
//!
//! Mesos-DNS shuffles answers and picks an SRV target's additional address at random, so
//! sections compare as sets, and an additional record matches when it is one of its owner's
//! records of that type.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use atoll_dns::records::{Name, Record, RecordData, RecordSet, RecordType};
use atoll_dns::server::{Answer, Response, ServerConfig, Zone, ZoneConfig, answer};
use common::{TestServer, query, udp_exchange};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name as DnsName, RData, Record as DnsRecord, RecordType as DnsType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

/// Depends on how the host resolves `localhost` (see the compat README).
const SKIPPED: &[&str] = &["nopid.mesos."];

fn load(file: &str) -> Value {
    let path = common::compat_dir().join("mesos-dns").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The A, AAAA and SRV sets Mesos-DNS generated for the setup the responses were made with.
fn golden_records() -> RecordSet {
    let golden = load("golden_rfc952_resolvertest.json");
    let mut set = RecordSet::new();
    let entries = |kind: &str| golden[kind].as_object().unwrap_or_else(|| panic!("no {kind} map")).clone();
    for (kind, parse) in [("A", RecordType::A), ("AAAA", RecordType::Aaaa)] {
        for (name, values) in entries(kind) {
            for value in values.as_array().unwrap() {
                let ip: IpAddr = value.as_str().unwrap().parse().unwrap();
                let data = match (parse, ip) {
                    (RecordType::A, IpAddr::V4(ip)) => RecordData::A(ip),
                    (RecordType::Aaaa, IpAddr::V6(ip)) => RecordData::Aaaa(ip),
                    _ => panic!("{name}: {ip} is not a {kind} address"),
                };
                set.insert(Record { name: Name::new(&name), data });
            }
        }
    }
    for (name, values) in entries("SRV") {
        for value in values.as_array().unwrap() {
            let (target, port) = value.as_str().unwrap().rsplit_once(':').unwrap();
            let data =
                RecordData::Srv { priority: 0, weight: 1, port: port.parse().unwrap(), target: Name::new(target) };
            set.insert(Record { name: Name::new(&name), data });
        }
    }
    set
}

/// The setup's zone: domain mesos, SOA ns1.mesos / root.ns1.mesos, TTL 60, serial 0.
fn golden_config(responses: &Value) -> ServerConfig {
    let setup = responses["setup"].as_str().expect("setup");
    assert!(setup.contains("TTL 60") && setup.contains("SOAMname ns1.mesos."), "unexpected setup: {setup}");
    let zone = ZoneConfig {
        domain: Name::new("mesos."),
        ttl: 60,
        soa_mname: Name::new("ns1.mesos."),
        soa_rname: Name::new("root.ns1.mesos."),
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: 60,
    };
    ServerConfig { zones: vec![zone], forward: None, recursion_allowed: Vec::new() }
}

fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') { lower } else { format!("{lower}.") }
}

/// A golden record line in one canonical form: names lowercase with the trailing dot.
fn canonical_golden(line: &str) -> String {
    let fields: Vec<&str> = line.split('\t').collect();
    let [owner, ttl, class, kind, data] = fields[..] else { panic!("unexpected record line {line:?}") };
    let data = match kind {
        "A" | "AAAA" => data.parse::<IpAddr>().unwrap().to_string(),
        "NS" => fqdn(data),
        "SRV" | "SOA" => {
            let mut parts: Vec<String> = data.split_whitespace().map(str::to_owned).collect();
            let names: &[usize] = if kind == "SRV" { &[3] } else { &[0, 1] };
            for &i in names {
                parts[i] = fqdn(&parts[i]);
            }
            parts.join(" ")
        }
        other => panic!("unexpected type {other} in {line:?}"),
    };
    format!("{}\t{ttl}\t{class}\t{kind}\t{data}", fqdn(owner))
}

fn canonical(record: &DnsRecord) -> String {
    let data = match &record.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(aaaa) => aaaa.0.to_string(),
        RData::NS(ns) => fqdn(&ns.0.to_ascii()),
        RData::SRV(srv) => {
            format!("{} {} {} {}", srv.priority, srv.weight, srv.port, fqdn(&srv.target.to_ascii()))
        }
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            fqdn(&soa.mname.to_ascii()),
            fqdn(&soa.rname.to_ascii()),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        other => panic!("unexpected record {other:?}"),
    };
    let class = record.dns_class.to_string();
    format!("{}\t{}\t{class}\t{}\t{data}", record.name.to_ascii(), record.ttl, record.record_type())
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn golden_section(case: &Value, section: &str) -> Vec<String> {
    sorted(case[section].as_array().unwrap().iter().map(|v| canonical_golden(v.as_str().unwrap())).collect())
}

fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        other => format!("{other:?}"),
    }
}

/// One response, as the goldens describe it.
struct Seen<'a> {
    rcode: ResponseCode,
    aa: bool,
    ra: bool,
    tc: bool,
    answers: &'a [DnsRecord],
    authority: &'a [DnsRecord],
    additional: &'a [DnsRecord],
}

/// Every mismatch between `seen` and the golden `case`, as readable lines.
fn differences(case: &Value, seen: &Seen<'_>, records: &RecordSet) -> Vec<String> {
    let mut out = Vec::new();
    let mut expect = |what: &str, want: String, got: String| {
        if want != got {
            out.push(format!("{what}: want {want}, got {got}"));
        }
    };
    expect("rcode", case["rcode"].as_str().unwrap().to_owned(), rcode_name(seen.rcode));
    for (flag, got) in [("aa", seen.aa), ("ra", seen.ra), ("tc", seen.tc)] {
        expect(flag, case[flag].as_bool().unwrap().to_string(), got.to_string());
    }
    let ours = |section: &[DnsRecord]| sorted(section.iter().map(canonical).collect());
    expect("answer", format!("{:#?}", golden_section(case, "answer")), format!("{:#?}", ours(seen.answers)));
    expect("authority", format!("{:#?}", golden_section(case, "authority")), format!("{:#?}", ours(seen.authority)));

    // Additional: the same owners and types, each record one of its owner's.
    let owner_and_type = |line: &String| {
        let fields: Vec<&str> = line.split('\t').collect();
        format!("{} {}", fields[0], fields[3])
    };
    let golden_additional: Vec<String> = golden_section(case, "additional").iter().map(owner_and_type).collect();
    let our_additional: Vec<String> = ours(seen.additional).iter().map(owner_and_type).collect();
    expect(
        "additional owners and types",
        format!("{:?}", sorted(golden_additional)),
        format!("{:?}", sorted(our_additional)),
    );
    for record in seen.additional {
        let kind = match record.record_type() {
            DnsType::A => RecordType::A,
            DnsType::AAAA => RecordType::Aaaa,
            other => {
                out.push(format!("additional: unexpected {other} record"));
                continue;
            }
        };
        let owner = Name::new(&record.name.to_ascii());
        let known = records.get(&owner, kind).any(|data| match (data, &record.data) {
            (RecordData::A(ip), RData::A(a)) => *ip == a.0,
            (RecordData::Aaaa(ip), RData::AAAA(aaaa)) => *ip == aaaa.0,
            _ => false,
        });
        if !known {
            out.push(format!("additional: {} is not one of {owner}'s records", canonical(record)));
        }
    }
    out
}

fn cases(responses: &Value) -> Vec<&Value> {
    let cases = responses["responses"].as_array().expect("responses");
    assert_eq!(cases.len(), 43, "the golden file changed");
    cases.iter().filter(|case| !SKIPPED.contains(&case["question"].as_str().unwrap())).collect()
}

fn qtype(case: &Value) -> DnsType {
    case["qtype"].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_pure_answer_matches_mesos_dns() {
    let responses = load("golden_dns_responses_rfc952.json");
    let (records, config) = (golden_records(), golden_config(&responses));
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut failures = Vec::new();
    let cases = cases(&responses);
    assert!(cases.len() >= 42, "only {} cases left after skipping {SKIPPED:?}", cases.len());
    for (seed, case) in cases.into_iter().enumerate() {
        let name = case["question"].as_str().unwrap();
        let query = Query::query(DnsName::from_ascii(name).unwrap(), qtype(case));
        let mut rng = StdRng::seed_from_u64(seed as u64);
        let Answer::Local(Response { rcode, authoritative, recursion_available, answers, authority, additional }) =
            answer(&records, 0, &config, client, &query, &mut rng)
        else {
            panic!("{name}: forwarded");
        };
        let seen = Seen {
            rcode,
            aa: authoritative,
            ra: recursion_available,
            tc: false,
            answers: &answers,
            authority: &authority,
            additional: &additional,
        };
        for difference in differences(case, &seen, &records) {
            failures.push(format!("{name} {}: {difference}", case["qtype"]));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn the_server_matches_mesos_dns_over_udp() {
    let responses = load("golden_dns_responses_rfc952.json");
    let (records, config) = (golden_records(), golden_config(&responses));
    let zone = Zone::new();
    zone.replace(records.clone(), 0);
    let server = TestServer::start(config, zone).await;
    let mut failures = Vec::new();
    for (id, case) in cases(&responses).into_iter().enumerate() {
        let name = case["question"].as_str().unwrap();
        let (message, _) = udp_exchange(server.addr, &query(id as u16, name, qtype(case), None)).await;
        let Message { metadata, queries, answers, authorities, additionals, .. } = &message;
        assert_eq!(queries[0].name.to_ascii(), name, "the question is echoed as asked");
        let seen = Seen {
            rcode: metadata.response_code,
            aa: metadata.authoritative,
            ra: metadata.recursion_available,
            tc: metadata.truncation,
            answers,
            authority: authorities,
            additional: additionals,
        };
        for difference in differences(case, &seen, &records) {
            failures.push(format!("{name} {}: {difference}", case["qtype"]));
        }
    }
    server.stop().await;
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
