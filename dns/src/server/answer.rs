//! The answer to one question, as a pure function of the served records, the configuration and
//! the client's address: no sockets, no clock, and randomness only from the RNG passed in.
//!
//! Inside a zone it answers as Mesos-DNS does (the conformance goldens hold it to that):
//! - A, AAAA and SRV from the records; SRV answers carry one A and one AAAA of each target in
//!   the additional section, picked at random when a target has several;
//! - SOA and NS queries are answered in the authority section, owned by the queried name, for
//!   any name of the zone, with NOERROR;
//! - ANY gathers the SRV, A and AAAA records, with NS and SOA in authority;
//! - an empty answer to anything but SOA, NS or SRV is NXDOMAIN when the name has no record at
//!   all (the apex included) and NODATA otherwise, with the SOA in authority; SRV for a name
//!   without SRV records is a bare NOERROR;
//! - names match case-insensitively and answers use the stored lowercase names; answers are
//!   shuffled.
//!
//! Outside the zones it is `Forward` when forwarding is on and the client may recurse, and
//! REFUSED otherwise.

use std::net::IpAddr;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name as DnsName, RData, Record as DnsRecord, RecordType as DnsType};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::config::{ServerConfig, ZoneConfig};
use crate::records::{Name, RecordData, RecordSet, RecordType};

/// What to do with a question.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Answer with this.
    Local(Response),
    /// Ask the upstream resolvers (only ever for a client allowed to recurse).
    Forward,
}

/// The contents of a response message (the header's other fields come from the request).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub rcode: ResponseCode,
    /// AA: set for answers from Atoll's own zones.
    pub authoritative: bool,
    /// RA: whether this client may use forwarding.
    pub recursion_available: bool,
    pub answers: Vec<DnsRecord>,
    pub authority: Vec<DnsRecord>,
    pub additional: Vec<DnsRecord>,
}

impl Response {
    /// A response with no records.
    pub fn empty(rcode: ResponseCode, authoritative: bool, recursion_available: bool) -> Response {
        Response {
            rcode,
            authoritative,
            recursion_available,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

/// Answers `query` from `zone_data` (records of every zone, serial `serial`) for `client`.
pub fn answer<R: Rng + ?Sized>(
    zone_data: &RecordSet,
    serial: u32,
    config: &ServerConfig,
    client: IpAddr,
    query: &Query,
    rng: &mut R,
) -> Answer {
    let recursion = config.recursion_available(client);
    if !matches!(query.query_class, DNSClass::IN | DNSClass::ANY) {
        // Chaos-class probes (version.bind) and the like: nothing to say, nothing to forward.
        return Answer::Local(Response::empty(ResponseCode::Refused, false, recursion));
    }
    let mut owner = query.name.to_lowercase();
    owner.set_fqdn(true);
    let key = Name::new(&owner.to_ascii());
    let Some(zone) = config.zone_for(&key) else {
        return if recursion {
            Answer::Forward
        } else {
            Answer::Local(Response::empty(ResponseCode::Refused, false, recursion))
        };
    };
    if matches!(query.query_type, DnsType::AXFR | DnsType::IXFR) {
        // Zone transfers are offered over HTTP (/v1/axfr), as in Mesos-DNS.
        return Answer::Local(Response::empty(ResponseCode::Refused, true, recursion));
    }
    Answer::Local(authoritative(zone_data, serial, zone, &owner, &key, query.query_type, recursion, rng))
}

#[allow(clippy::too_many_arguments)]
fn authoritative<R: Rng + ?Sized>(
    data: &RecordSet,
    serial: u32,
    zone: &ZoneConfig,
    owner: &DnsName,
    key: &Name,
    qtype: DnsType,
    recursion: bool,
    rng: &mut R,
) -> Response {
    let mut response = Response::empty(ResponseCode::NoError, true, recursion);
    let wants = |kind: DnsType| qtype == kind || qtype == DnsType::ANY;
    if wants(DnsType::SRV) {
        srv(data, zone, owner, key, &mut response, rng);
    }
    for (kind, dns_kind) in [(RecordType::A, DnsType::A), (RecordType::Aaaa, DnsType::AAAA)] {
        if wants(dns_kind) {
            let records = data.get(key, kind).filter_map(|d| record(owner.clone(), zone.ttl, d));
            response.answers.extend(records);
        }
    }
    if wants(DnsType::SOA) {
        response.authority.extend(soa(zone, owner, serial));
    }
    if wants(DnsType::NS) {
        response.authority.extend(ns(zone, owner));
    }
    if !response.answers.is_empty() {
        response.answers.shuffle(rng);
        return response;
    }
    if matches!(qtype, DnsType::SOA | DnsType::NS | DnsType::SRV) {
        return response;
    }
    if !data.contains_name(key) {
        response.rcode = ResponseCode::NXDomain;
    }
    response.authority.extend(soa(zone, owner, serial));
    response
}

/// SRV answers, and one address of each type per target in additional.
fn srv<R: Rng + ?Sized>(
    data: &RecordSet,
    zone: &ZoneConfig,
    owner: &DnsName,
    key: &Name,
    response: &mut Response,
    rng: &mut R,
) {
    let mut targets: Vec<&Name> = Vec::new();
    for srv in data.get(key, RecordType::Srv) {
        let Some(record) = record(owner.clone(), zone.ttl, srv) else { continue };
        response.answers.push(record);
        if let RecordData::Srv { target, .. } = srv
            && !targets.contains(&target)
        {
            targets.push(target);
        }
    }
    for target in targets {
        let Ok(target_name) = DnsName::from_ascii(target.as_str()) else { continue };
        for kind in [RecordType::A, RecordType::Aaaa] {
            let candidates: Vec<&RecordData> = data.get(target, kind).collect();
            if let Some(picked) = candidates.choose(rng)
                && let Some(record) = record(target_name.clone(), zone.ttl, picked)
            {
                response.additional.push(record);
            }
        }
    }
}

/// The wire form of a served record; `None` for a target name DNS cannot carry (the
/// projection sanitises labels, so this is a guard, not a path).
fn record(owner: DnsName, ttl: u32, data: &RecordData) -> Option<DnsRecord> {
    let rdata = match data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, DnsName::from_ascii(target.as_str()).ok()?))
        }
    };
    Some(DnsRecord::from_rdata(owner, ttl, rdata))
}

fn soa(zone: &ZoneConfig, owner: &DnsName, serial: u32) -> Option<DnsRecord> {
    let mname = DnsName::from_ascii(zone.soa_mname.as_str()).ok()?;
    let rname = DnsName::from_ascii(zone.soa_rname.as_str()).ok()?;
    // The wire fields are signed 32-bit; anything larger is meaningless for a zone this live.
    let signed = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let soa =
        SOA::new(mname, rname, serial, signed(zone.refresh), signed(zone.retry), signed(zone.expire), zone.minimum);
    Some(DnsRecord::from_rdata(owner.clone(), zone.ttl, RData::SOA(soa)))
}

fn ns(zone: &ZoneConfig, owner: &DnsName) -> Option<DnsRecord> {
    let target = DnsName::from_ascii(zone.soa_mname.as_str()).ok()?;
    Some(DnsRecord::from_rdata(owner.clone(), zone.ttl, RData::NS(NS(target))))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::records::Record;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn set() -> RecordSet {
        let mut set = RecordSet::new();
        let mut add = |name: &str, data| set.insert(Record { name: Name::new(name), data });
        for i in 1..=4 {
            add("web.marathon.mesos", RecordData::A(Ipv4Addr::new(10, 0, 0, i)));
        }
        add("web-abc-0.marathon.mesos", RecordData::A(Ipv4Addr::new(10, 0, 0, 1)));
        add("web-abc-0.marathon.mesos", RecordData::Aaaa(Ipv6Addr::LOCALHOST));
        add("web-abc-0.marathon.mesos", RecordData::Aaaa(Ipv6Addr::UNSPECIFIED));
        let target = Name::new("web-abc-0.marathon.mesos");
        for port in [80, 443] {
            add("_web._tcp.marathon.mesos", RecordData::Srv { priority: 0, weight: 1, port, target: target.clone() });
        }
        set
    }

    fn config() -> ServerConfig {
        ServerConfig { zones: vec![ZoneConfig::new("mesos")], ..ServerConfig::default() }
    }

    fn ask(config: &ServerConfig, name: &str, qtype: DnsType, seed: u64) -> Answer {
        let query = Query::query(DnsName::from_ascii(name).unwrap(), qtype);
        answer(&set(), 42, config, CLIENT, &query, &mut StdRng::seed_from_u64(seed))
    }

    fn local(answer: Answer) -> Response {
        match answer {
            Answer::Local(response) => response,
            Answer::Forward => panic!("expected a local answer"),
        }
    }

    #[test]
    fn answers_are_shuffled_but_complete() {
        let mut orders = BTreeSet::new();
        for seed in 0..32 {
            let response = local(ask(&config(), "WEB.marathon.mesos.", DnsType::A, seed));
            assert!(response.authoritative);
            assert_eq!(response.answers.len(), 4);
            assert!(response.answers.iter().all(|r| r.name.to_ascii() == "web.marathon.mesos."));
            orders.insert(response.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>());
        }
        assert!(orders.len() > 1, "32 answers came in a single order");
    }

    #[test]
    fn srv_carries_one_address_of_each_type_per_target() {
        let response = local(ask(&config(), "_web._tcp.marathon.mesos.", DnsType::SRV, 1));
        assert_eq!(response.answers.len(), 2);
        let kinds: Vec<DnsType> = response.additional.iter().map(DnsRecord::record_type).collect();
        assert_eq!(kinds, [DnsType::A, DnsType::AAAA]);
    }

    #[test]
    fn negative_answers_carry_the_serial() {
        let response = local(ask(&config(), "nope.mesos.", DnsType::A, 0));
        assert_eq!(response.rcode, ResponseCode::NXDomain);
        let RData::SOA(soa) = &response.authority[0].data else { panic!("no SOA in authority") };
        assert_eq!(soa.serial, 42);
        let response = local(ask(&config(), "web.marathon.mesos.", DnsType::TXT, 0));
        assert_eq!((response.rcode, response.answers.len(), response.authority.len()), (ResponseCode::NoError, 0, 1));
    }

    #[test]
    fn outside_the_zones_forward_only_for_allowed_clients() {
        let refused = local(ask(&config(), "example.com.", DnsType::A, 0));
        assert_eq!(
            (refused.rcode, refused.authoritative, refused.recursion_available),
            (ResponseCode::Refused, false, false)
        );
        let mut forwarding = config();
        forwarding.forward = Some(vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(ask(&forwarding, "example.com.", DnsType::A, 0), Answer::Forward);
        let inside = local(ask(&forwarding, "web.marathon.mesos.", DnsType::A, 0));
        assert!(inside.recursion_available);
        forwarding.recursion_allowed = vec!["198.18.0.0/16".parse().unwrap()];
        let refused = local(ask(&forwarding, "example.com.", DnsType::A, 0));
        assert_eq!((refused.rcode, refused.recursion_available), (ResponseCode::Refused, false));
    }

    #[test]
    fn other_classes_and_zone_transfers_are_refused() {
        let mut query = Query::query(DnsName::from_ascii("web.marathon.mesos.").unwrap(), DnsType::A);
        query.query_class = DNSClass::CH;
        let response = local(answer(&set(), 0, &config(), CLIENT, &query, &mut StdRng::seed_from_u64(0)));
        assert_eq!(response.rcode, ResponseCode::Refused);
        let response = local(ask(&config(), "mesos.", DnsType::AXFR, 0));
        assert_eq!(response.rcode, ResponseCode::Refused);
    }
}
