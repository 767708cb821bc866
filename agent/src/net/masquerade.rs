//! Opt-in egress for container tasks (`--masquerade`): packets from this agent's subnets that
//! leave the host through any interface but the bridge are masqueraded behind the host's own
//! address, so that tasks reach the world outside the cluster without that world routing the
//! container subnets. Traffic between container subnets (this agent's and every other agent's,
//! which the routes of [`super::routes`] reach) keeps its source address.
//!
//! Everything is one nftables table of the agent's own in the network namespace the agent runs in,
//! `table ip atoll_<agent tag>` (plus `table ip6 atoll_<agent tag>` while the agent has IPv6
//! subnets), so that two agents on one machine never touch each other's rules, with one chain:
//!
//! ```text
//! table ip atoll_1a2b3c4d {
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 198.18.3.0/24 return
//!         ip daddr 198.18.4.0/24 return
//!         ip saddr 198.18.3.0/24 oifname != "atoll0" masquerade
//!     }
//! }
//! ```
//!
//! The pure part, [`plan`], decides the rules from the agent's subnets and the cluster's container
//! subnets; [`replace_batch`] turns them into one nftables JSON transaction that deletes the
//! table and creates it anew (so every update replaces the rules as a whole, atomically, whatever
//! was there). [`Masquerade`] is the shell the route follower drives: it runs `nft -j -f -`
//! (through the `nftables` crate; the binary is Debian's package `nftables`) when the subnets or
//! routes change, and keeps what it did, or why it could not, for `/v1/state`. The table is
//! removed when the agent's networks are removed (a `KillTasks` stop, `atoll agent --cleanup`),
//! when the agent loses its subnets and when an agent starts with masquerading off.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use atoll_ipam::IpNetwork;
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Serialize;

/// The one chain of the table.
pub const CHAIN: &str = "postrouting";
/// `priority srcnat`.
const SRCNAT: i32 = 100;
/// The `nft` program, looked up in `PATH`.
pub const DEFAULT_NFT: &str = "nft";

/// The table of the agent of `data_dir`: `atoll_<8 hex digits>`, the tag its namespaces carry.
pub fn table_name(data_dir: &Path) -> String {
    format!("atoll_{}", super::agent_tag(data_dir))
}

/// An nftables address family the agent has a table in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ip,
    Ip6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ip, Family::Ip6];

    pub fn of(network: &IpNetwork) -> Family {
        if network.is_ipv4() { Family::Ip } else { Family::Ip6 }
    }

    /// `ip` or `ip6`: the family's name, and the protocol of its address payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    fn nf(self) -> NfFamily {
        match self {
            Family::Ip => NfFamily::IP,
            Family::Ip6 => NfFamily::IP6,
        }
    }
}

/// What one family's table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub family: Family,
    /// Container subnets (this agent's and every other agent's): packets to them keep their
    /// source address (`return` before any masquerading).
    pub keep: Vec<IpNetwork>,
    /// This agent's subnets: their packets leaving through any interface but `bridge` are
    /// masqueraded.
    pub masquerade: Vec<IpNetwork>,
    pub bridge: String,
}

impl TablePlan {
    /// The chain's rules in nft's own syntax, in order (as `nft list table` shows them).
    pub fn rules_text(&self) -> Vec<String> {
        let family = self.family.as_str();
        let keep = self.keep.iter().map(|dest| format!("{family} daddr {dest} return"));
        let masquerade = self
            .masquerade
            .iter()
            .map(|source| format!("{family} saddr {source} oifname != \"{}\" masquerade", self.bridge));
        keep.chain(masquerade).collect()
    }

    /// The chain's rules as nftables statements, in the order of [`TablePlan::rules_text`].
    fn rules(&self) -> Vec<Vec<Statement<'static>>> {
        let keep = self.keep.iter().map(|dest| vec![self.address_match("daddr", dest), Statement::Return(None)]);
        let masquerade = self.masquerade.iter().map(|source| {
            vec![
                self.address_match("saddr", source),
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname })),
                    right: Expression::String(self.bridge.clone().into()),
                    op: Operator::NEQ,
                }),
                Statement::Masquerade(None),
            ]
        });
        keep.chain(masquerade).collect()
    }

    fn address_match(&self, field: &'static str, network: &IpNetwork) -> Statement<'static> {
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                protocol: self.family.as_str().into(),
                field: field.into(),
            }))),
            right: Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(Expression::String(network.network().to_string().into())),
                len: u32::from(network.prefix()),
            })),
            op: Operator::EQ,
        })
    }
}

/// `network` with its host bits cleared (`198.18.3.7/24` → `198.18.3.0/24`).
fn canonical(network: &IpNetwork) -> IpNetwork {
    IpNetwork::new(network.network(), network.prefix()).unwrap_or(*network)
}

/// The networks of `family` among `networks`, canonical, sorted, without duplicates and without
/// those inside another one of the list.
fn minimal<'a>(family: Family, networks: impl Iterator<Item = &'a IpNetwork>) -> Vec<IpNetwork> {
    let all: BTreeSet<IpNetwork> = networks.filter(|n| Family::of(n) == family).map(canonical).collect();
    all.iter()
        .filter(|n| !all.iter().any(|outer| outer.prefix() < n.prefix() && outer.contains(n.network())))
        .copied()
        .collect()
}

/// The tables the agent needs: one per family in which it has subnets (`own`), each keeping the
/// source of packets to any container subnet (`own` and `container_subnets`: every subnet of
/// every agent of the cluster, which includes every route the agent programs) and masquerading
/// the rest of what leaves `own` through an interface other than `bridge`. No subnets, no tables.
pub fn plan(bridge: &str, own: &[IpNetwork], container_subnets: &[IpNetwork]) -> Vec<TablePlan> {
    Family::ALL
        .into_iter()
        .filter_map(|family| {
            let masquerade = minimal(family, own.iter());
            (!masquerade.is_empty()).then(|| TablePlan {
                family,
                keep: minimal(family, own.iter().chain(container_subnets)),
                masquerade,
                bridge: bridge.to_owned(),
            })
        })
        .collect()
}

fn table(family: Family, name: &str) -> Table<'static> {
    Table { family: family.nf(), name: name.to_owned().into(), handle: None }
}

/// One transaction that leaves exactly `plans` in the tables named `name`: each family's table
/// is added (so that it exists) and deleted, then the planned ones are created with their chain
/// and rules. `nft` applies a batch atomically: packets see the old rules or the new ones.
pub fn replace_batch(name: &str, plans: &[TablePlan]) -> Nftables<'static> {
    let mut batch = Batch::new();
    for family in Family::ALL {
        batch.add(NfListObject::Table(table(family, name)));
        batch.delete(NfListObject::Table(table(family, name)));
    }
    for plan in plans {
        let family = plan.family.nf();
        batch.add(NfListObject::Table(table(plan.family, name)));
        batch.add(NfListObject::Chain(Chain {
            family,
            table: name.to_owned().into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Postrouting),
            prio: Some(SRCNAT),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        for expr in plan.rules() {
            batch.add(NfListObject::Rule(Rule {
                family,
                table: name.to_owned().into(),
                chain: CHAIN.into(),
                expr: expr.into(),
                handle: None,
                index: None,
                comment: None,
            }));
        }
    }
    batch.to_nftables()
}

/// Deletes the tables named `name` of `families` (which must exist).
fn delete_batch(name: &str, families: &[Family]) -> Nftables<'static> {
    let mut batch = Batch::new();
    for family in families {
        batch.delete(NfListObject::Table(table(*family, name)));
    }
    batch.to_nftables()
}

/// `nft` could not be run at all (missing, not executable).
fn is_missing(error: &NftablesError) -> bool {
    matches!(error, NftablesError::NftExecution { inner, .. } if inner.kind() == ErrorKind::NotFound)
}

fn describe(nft: &Path, error: NftablesError) -> String {
    match error {
        NftablesError::NftExecution { inner, .. } if inner.kind() == ErrorKind::NotFound => format!(
            "`{}` not found: masquerading needs nft (Debian package nftables); container tasks have no egress",
            nft.display()
        ),
        NftablesError::NftExecution { inner, .. } => format!("cannot run `{}`: {inner}", nft.display()),
        NftablesError::NftFailed { hint, stdout, stderr, .. } => {
            let output = if stderr.trim().is_empty() { stdout } else { stderr };
            format!("`{}` failed {hint}: {}", nft.display(), output.trim())
        }
        other => format!("`{}`: {other}", nft.display()),
    }
}

/// The families in which a table named `name` exists (`nft -j list tables`).
fn installed(nft: &Path, name: &str) -> Result<Vec<Family>, NftablesError> {
    let tables = helper::get_current_ruleset_with_args(Some(nft.as_os_str()), &["list", "tables"])?;
    let mut families: Vec<Family> = tables
        .objects
        .iter()
        .filter_map(|object| match object {
            NfObject::ListObject(NfListObject::Table(t)) if t.name == name => {
                Family::ALL.into_iter().find(|f| f.nf() == t.family)
            }
            _ => None,
        })
        .collect();
    families.sort();
    families.dedup();
    Ok(families)
}

/// Where the agent's tables are: their name and the `nft` that manages them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    pub name: String,
    pub nft: PathBuf,
}

impl NftTable {
    /// Removes the tables of this name in the calling thread's network namespace and returns
    /// the families they were in. Without `nft` there is nothing it could remove: `Ok(vec![])`.
    pub fn remove_blocking(&self) -> Result<Vec<Family>, String> {
        let families = match installed(&self.nft, &self.name) {
            Ok(families) => families,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(describe(&self.nft, e)),
        };
        if !families.is_empty() {
            self.run(&delete_batch(&self.name, &families))?;
        }
        Ok(families)
    }

    /// Makes the tables hold exactly `plans` (none: the tables go).
    fn apply_blocking(&self, plans: &[TablePlan]) -> Result<(), String> {
        self.run(&replace_batch(&self.name, plans))
    }

    /// `nft -j -f -` with `batch`.
    fn run(&self, batch: &Nftables) -> Result<(), String> {
        helper::apply_ruleset_with_args(batch, Some(self.nft.as_os_str()), helper::DEFAULT_ARGS)
            .map_err(|e| describe(&self.nft, e))
    }

    async fn remove(&self) -> Result<Vec<Family>, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.remove_blocking()).await.map_err(|e| e.to_string())?
    }

    async fn apply(&self, plans: Vec<TablePlan>) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_blocking(&plans)).await.map_err(|e| e.to_string())?
    }
}

/// Masquerading in `/v1/state` (`networks.masquerade`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MasqueradeView {
    /// `--masquerade`, with container networking on.
    pub enabled: bool,
    /// The agent's table name.
    pub table: String,
    /// The families the table is installed in now (empty: no table).
    pub families: Vec<Family>,
    /// Subnets whose egress is masqueraded.
    pub subnets: Vec<IpNetwork>,
    /// Destinations that keep the source address (container subnets).
    pub kept: Vec<IpNetwork>,
    /// Why the table could not be installed (or removed), until it can.
    pub error: Option<String>,
}

struct Gate {
    /// The agent's networks are being removed: no table is installed any more.
    closed: bool,
    /// What the tables hold since the last successful change (`None`: unknown).
    applied: Option<Vec<TablePlan>>,
}

/// The agent's masquerading: shared by the route follower (which keeps the table in step with
/// the subnets and routes), the network worker (which removes it with the agent's networks) and
/// the actor (which shows its state).
pub struct Masquerade {
    enabled: bool,
    table: NftTable,
    bridge: String,
    /// Serializes `nft` runs.
    gate: tokio::sync::Mutex<Gate>,
    view: Mutex<MasqueradeView>,
}

impl Masquerade {
    pub fn new(enabled: bool, table: NftTable, bridge: String) -> Masquerade {
        let view = MasqueradeView { enabled, table: table.name.clone(), ..Default::default() };
        Masquerade {
            enabled,
            table,
            bridge,
            gate: tokio::sync::Mutex::new(Gate { closed: false, applied: None }),
            view: Mutex::new(view),
        }
    }

    pub fn view(&self) -> MasqueradeView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update_view(&self, f: impl FnOnce(&mut MasqueradeView)) {
        f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn report_error(&self, error: String) {
        let changed = self.view().error.as_ref() != Some(&error);
        if changed {
            tracing::error!(table = %self.table.name, "masquerade: {error}");
        }
        self.update_view(|v| v.error = Some(error));
    }

    /// At start, with masquerading on: checks that `nft` works, so that a missing one shows in
    /// `/v1/state` (and the log) right away.
    pub async fn start(&self) {
        if !self.enabled {
            return;
        }
        let _gate = self.gate.lock().await;
        let table = self.table.clone();
        let probe = tokio::task::spawn_blocking(move || installed(&table.nft, &table.name))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| describe(&self.table.nft, e)));
        match probe {
            Ok(families) => self.update_view(|v| v.families = families),
            Err(e) => self.report_error(e),
        }
    }

    /// Makes the table match this agent's subnets (`own`) and the cluster's container subnets;
    /// no own subnets: no table. A no-op after [`Masquerade::close`] or when nothing changed
    /// since the last successful update.
    ///
    /// With masquerading off, the first call removes a table that an earlier run with it on left
    /// behind (called once the agent has subnets: only then can there be one).
    pub async fn sync(&self, own: &[IpNetwork], container_subnets: &[IpNetwork]) {
        let mut gate = self.gate.lock().await;
        if gate.closed {
            return;
        }
        if !self.enabled {
            if gate.applied.is_none() {
                match self.table.remove().await {
                    Ok(families) if !families.is_empty() => {
                        tracing::info!(table = %self.table.name, "masquerading is off: removed the table of an earlier run")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(table = %self.table.name, "masquerading is off, but its table stays: {e}"),
                }
                gate.applied = Some(Vec::new());
            }
            return;
        }
        let plans = plan(&self.bridge, own, container_subnets);
        if gate.applied.as_ref() == Some(&plans) {
            return;
        }
        match self.table.apply(plans.clone()).await {
            Ok(()) => {
                let masqueraded: Vec<IpNetwork> = plans.iter().flat_map(|p| p.masquerade.iter().copied()).collect();
                let kept: Vec<IpNetwork> = plans.iter().flat_map(|p| p.keep.iter().copied()).collect();
                if plans.is_empty() {
                    tracing::info!(table = %self.table.name, "masquerade table removed (no subnets)");
                } else {
                    let rules: Vec<String> = plans.iter().flat_map(TablePlan::rules_text).collect();
                    tracing::info!(table = %self.table.name, ?rules, "masquerade table installed");
                }
                self.update_view(|v| {
                    v.families = plans.iter().map(|p| p.family).collect();
                    v.subnets = masqueraded;
                    v.kept = kept;
                    v.error = None;
                });
                gate.applied = Some(plans);
            }
            Err(e) => {
                gate.applied = None;
                self.report_error(e);
            }
        }
    }

    /// The agent's networks are being removed: no table is installed from now on. Removes the
    /// table (whether masquerading is on or not) and returns the families it was in.
    pub async fn close(&self) -> Vec<Family> {
        let mut gate = self.gate.lock().await;
        gate.closed = true;
        gate.applied = None;
        match self.table.remove().await {
            Ok(families) => {
                self.update_view(|v| {
                    v.families.clear();
                    v.subnets.clear();
                    v.kept.clear();
                });
                families
            }
            Err(e) => {
                self.report_error(e);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn masquerades_own_subnets_and_keeps_the_source_to_container_subnets() {
        let own = nets(&["198.18.3.0/24"]);
        let cluster = nets(&["198.18.3.0/24", "198.18.4.0/24", "198.18.20.0/24", "2001:db8:0:5::/64"]);
        let plans = plan("atoll0", &own, &cluster);
        assert_eq!(plans.len(), 1, "no IPv6 subnet of its own, no ip6 table: {plans:?}");
        assert_eq!(
            plans[0].rules_text(),
            [
                "ip daddr 198.18.3.0/24 return",
                "ip daddr 198.18.4.0/24 return",
                "ip daddr 198.18.20.0/24 return",
                "ip saddr 198.18.3.0/24 oifname != \"atoll0\" masquerade",
            ]
        );
        assert_eq!(plans[0].family, Family::Ip);
    }

    #[test]
    fn one_table_per_family_with_subnets() {
        let own = nets(&["2001:db8:0:3::/64", "198.18.3.0/24"]);
        let cluster = nets(&["198.18.4.0/24", "2001:db8:0:4::/64"]);
        let plans = plan("br7", &own, &cluster);
        let families: Vec<Family> = plans.iter().map(|p| p.family).collect();
        assert_eq!(families, [Family::Ip, Family::Ip6]);
        assert_eq!(
            plans[1].rules_text(),
            [
                "ip6 daddr 2001:db8:0:3::/64 return",
                "ip6 daddr 2001:db8:0:4::/64 return",
                "ip6 saddr 2001:db8:0:3::/64 oifname != \"br7\" masquerade",
            ]
        );
        assert!(plans[0].rules_text().iter().all(|r| r.starts_with("ip ")), "{plans:?}");
    }

    #[test]
    fn no_subnets_no_tables() {
        assert!(plan("atoll0", &[], &nets(&["198.18.4.0/24"])).is_empty());
        assert!(plan("atoll0", &[], &[]).is_empty());
    }

    #[test]
    fn subnets_are_canonical_sorted_and_minimal() {
        // Host bits, duplicates, a subnet inside a larger one and an unsorted input.
        let own = nets(&["198.18.3.7/24", "198.18.3.0/24"]);
        let cluster = nets(&["198.18.9.0/24", "198.18.8.0/22", "198.18.1.0/24", "198.18.9.128/25"]);
        let plans = plan("atoll0", &own, &cluster);
        assert_eq!(plans[0].masquerade, nets(&["198.18.3.0/24"]));
        assert_eq!(plans[0].keep, nets(&["198.18.1.0/24", "198.18.3.0/24", "198.18.8.0/22"]));
        // Same input in another order: the same plan (no needless update).
        let mut shuffled = cluster.clone();
        shuffled.reverse();
        assert_eq!(plan("atoll0", &own, &shuffled), plans);
    }

    #[test]
    fn the_batch_replaces_the_tables_as_a_whole() {
        let plans = plan("atoll0", &nets(&["198.18.3.0/24"]), &nets(&["198.18.4.0/24"]));
        let json = serde_json::to_value(replace_batch("atoll_1a2b3c4d", &plans)).unwrap();
        let commands = json["nftables"].as_array().unwrap();
        let kinds: Vec<String> = commands
            .iter()
            .map(|c| {
                let (cmd, body) = c.as_object().unwrap().iter().next().unwrap();
                let (object, fields) = body.as_object().unwrap().iter().next().unwrap();
                format!("{cmd} {object} {}", fields["family"].as_str().unwrap())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "add table ip",
                "delete table ip",
                "add table ip6",
                "delete table ip6",
                "add table ip",
                "add chain ip",
                "add rule ip",
                "add rule ip",
                "add rule ip",
            ]
        );
        assert!(commands.iter().all(|c| c.to_string().contains("\"atoll_1a2b3c4d\"")));
        assert_eq!(
            commands[5]["add"]["chain"],
            serde_json::json!({
                "family": "ip", "table": "atoll_1a2b3c4d", "name": "postrouting",
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"
            })
        );
        // The JSON `nft -j list ruleset` prints for these rules.
        assert_eq!(
            commands[7]["add"]["rule"]["expr"],
            serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": {"prefix": {"addr": "198.18.4.0", "len": 24}}}},
                {"return": null}
            ])
        );
        assert_eq!(
            commands[8]["add"]["rule"]["expr"],
            serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                           "right": {"prefix": {"addr": "198.18.3.0", "len": 24}}}},
                {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "atoll0"}},
                {"masquerade": null}
            ])
        );
        // No plans: the tables only go.
        let empty = serde_json::to_value(replace_batch("atoll_1a2b3c4d", &[])).unwrap();
        assert_eq!(empty["nftables"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn table_names_follow_the_agent_tag() {
        let dir = Path::new("/var/lib/atoll/agent");
        let name = table_name(dir);
        assert_eq!(name, format!("atoll_{}", super::super::agent_tag(dir)));
        assert_eq!(name.len(), "atoll_".len() + 8);
        assert_ne!(name, table_name(Path::new("/srv/agent2")));
    }

    #[test]
    fn a_missing_nft_is_named_and_removal_without_it_is_a_no_op() {
        let table = NftTable { name: "atoll_00000000".into(), nft: "/nonexistent/nft".into() };
        assert_eq!(table.remove_blocking(), Ok(vec![]));
        let err = table.apply_blocking(&[]).unwrap_err();
        assert!(err.contains("/nonexistent/nft") && err.contains("nftables"), "{err}");
    }
}
