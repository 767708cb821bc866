//! The master as IPAM authority: IP pools and the subnet each agent holds of each pool.
//!
//! Agents allocate task addresses locally from their subnets, so the master never sits in the
//! launch path; it hands out subnets (when an agent registers, when a pool is added) and keeps
//! pool changes in the event log (POOL_*) and agent subnets in the agents' events. Every
//! operation works on a copy of the pools and commits only when all of it succeeded.

use std::collections::BTreeSet;
use std::net::IpAddr;

use atoll_ipam::{IpamError, PoolSpec, Pools};
use atoll_proto::model::{AgentId, AgentState, AgentSubnet, EventKind, Task, Time};

use super::{AgentCommand, Master, MasterError, Output};

/// What the agent needs of its networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentNetworks {
    pub subnets: Vec<AgentSubnet>,
    pub reserved: Vec<IpAddr>,
}

/// A live task address, as `/v1/ipam/leases` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TaskLease {
    pub ip: IpAddr,
    pub pool: String,
    pub subnet: ipnetwork::IpNetwork,
    pub agent_id: AgentId,
    pub task_id: atoll_proto::model::TaskId,
}

/// A pool's spec with how much of it is used.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PoolView {
    pub pool: PoolSpec,
    pub subnets_total: u128,
    pub subnets_leased: u128,
    pub subnets_free: u128,
    pub subnets: Vec<SubnetView>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SubnetView {
    pub network: ipnetwork::IpNetwork,
    pub gateway: IpAddr,
    pub agent_id: String,
    /// Live task addresses in it.
    pub leases: u128,
    /// Addresses still free for tasks (host addresses minus gateway, leases and reserved).
    pub free: u128,
}

fn to_model(subnet: &atoll_ipam::Subnet) -> AgentSubnet {
    AgentSubnet { pool: subnet.pool.clone(), network: subnet.network, gateway: subnet.gateway }
}

/// Host addresses a task can get in a subnet: all but network, gateway and (as the IPAM core
/// keeps it out for both families) the last address.
fn usable(network: &ipnetwork::IpNetwork) -> u128 {
    let bits = match network {
        ipnetwork::IpNetwork::V4(_) => 32,
        ipnetwork::IpNetwork::V6(_) => 128,
    };
    let host_bits = bits - u32::from(network.prefix());
    let size = if host_bits >= 128 { u128::MAX } else { 1u128 << host_bits };
    size.saturating_sub(3)
}

impl Master {
    /// The IP pools.
    pub fn pools(&self) -> &Pools {
        &self.ipam
    }

    /// What an agent currently holds.
    pub fn agent_networks(&self, agent_id: &AgentId) -> AgentNetworks {
        let agent = agent_id.as_str();
        AgentNetworks {
            subnets: self.ipam.subnets_of(agent).iter().map(to_model).collect(),
            reserved: self.ipam.reserved_of(agent),
        }
    }

    /// Creates the pool a fresh cluster starts with.
    pub fn ensure_pool(&mut self, spec: PoolSpec, now: Time) -> Result<(), MasterError> {
        if self.ipam.pool(&spec.name).is_some() {
            return Ok(());
        }
        self.add_pool(spec, now)
    }

    /// Adds a pool and leases a subnet of it to every agent.
    pub fn add_pool(&mut self, spec: PoolSpec, now: Time) -> Result<(), MasterError> {
        let mut pools = self.ipam.clone();
        pools.add_pool(spec.clone()).map_err(MasterError::Ipam)?;
        self.commit_pools(pools, now);
        self.emit(now, EventKind::PoolAdded { pool: spec });
        Ok(())
    }

    /// Changes a pool (growing, exclusions, reservations); refused when leased subnets would
    /// fall outside it.
    pub fn update_pool(&mut self, spec: PoolSpec, now: Time) -> Result<(), MasterError> {
        let mut pools = self.ipam.clone();
        pools.update_pool(spec.clone()).map_err(MasterError::Ipam)?;
        self.commit_pools(pools, now);
        self.emit(now, EventKind::PoolUpdated { pool: spec });
        Ok(())
    }

    /// Removes a pool that no live task has an address from; the agents' subnets of it are
    /// released with it.
    pub fn remove_pool(&mut self, name: &str, now: Time) -> Result<PoolSpec, MasterError> {
        let spec = self
            .ipam
            .pool(name)
            .cloned()
            .ok_or_else(|| MasterError::Ipam(IpamError::UnknownPool { pool: name.to_owned() }))?;
        let in_use: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .filter(|t| t.ip_addresses.iter().any(|ip| spec.cidrs.iter().any(|c| c.contains(*ip))))
            .collect();
        if !in_use.is_empty() {
            let tasks: Vec<String> = in_use.iter().take(5).map(|t| t.id.to_string()).collect();
            return Err(MasterError::PoolInUse { pool: name.to_owned(), count: in_use.len(), tasks: tasks.join(", ") });
        }
        let mut pools = self.ipam.clone();
        for subnet in pools.subnets().into_iter().filter(|s| s.pool == name) {
            pools.release_subnet(name, &subnet.agent).map_err(MasterError::Ipam)?;
        }
        let removed = pools.remove_pool(name).map_err(MasterError::Ipam)?;
        self.commit_pools(pools, now);
        self.emit(now, EventKind::PoolRemoved { name: name.to_owned() });
        Ok(removed)
    }

    /// Keeps an address from every task (the agent holding its subnet is told).
    pub fn reserve_address(&mut self, pool: &str, ip: IpAddr, now: Time) -> Result<(), MasterError> {
        if let Some(task) = self.tasks.values().find(|t| !t.state.is_terminal() && t.ip_addresses.contains(&ip)) {
            return Err(MasterError::Ipam(IpamError::AddressTaken {
                pool: pool.to_owned(),
                ip,
                task: task.id.to_string(),
            }));
        }
        let mut pools = self.ipam.clone();
        pools.reserve(pool, ip).map_err(MasterError::Ipam)?;
        let spec = pools.pool(pool).cloned().expect("reserved in it");
        self.commit_pools(pools, now);
        self.emit(now, EventKind::PoolUpdated { pool: spec });
        Ok(())
    }

    /// Live task addresses, from the tasks' own reports.
    pub fn task_leases(&self) -> Vec<TaskLease> {
        let mut leases = Vec::new();
        for task in self.tasks.values().filter(|t| !t.state.is_terminal()) {
            for ip in &task.ip_addresses {
                let subnet = self.ipam.subnets().into_iter().find(|s| s.network.contains(*ip));
                if let Some(subnet) = subnet {
                    leases.push(TaskLease {
                        ip: *ip,
                        pool: subnet.pool.clone(),
                        subnet: subnet.network,
                        agent_id: task.agent_id.clone(),
                        task_id: task.id.clone(),
                    });
                }
            }
        }
        leases.sort_by(|a, b| (&a.pool, a.ip).cmp(&(&b.pool, b.ip)));
        leases
    }

    /// A pool with its usage.
    pub fn pool_view(&self, name: &str) -> Result<PoolView, MasterError> {
        let usage = self.ipam.usage(name).map_err(MasterError::Ipam)?;
        let spec = self.ipam.pool(name).cloned().expect("usage found it");
        let leases = self.task_leases();
        let subnets = usage
            .subnets
            .iter()
            .map(|s| {
                let used = leases.iter().filter(|l| s.network.contains(l.ip)).count() as u128;
                let reserved = spec.reserved.iter().filter(|ip| s.network.contains(**ip)).count() as u128;
                SubnetView {
                    network: s.network,
                    gateway: s.gateway,
                    agent_id: s.agent.clone(),
                    leases: used,
                    free: usable(&s.network).saturating_sub(used + reserved),
                }
            })
            .collect();
        Ok(PoolView {
            pool: spec,
            subnets_total: usage.subnets_total,
            subnets_leased: usage.subnets_leased,
            subnets_free: usage.subnets_free,
            subnets,
        })
    }

    /// Leases the agent a subnet of every pool it lacks one of (at registration).
    pub(super) fn lease_subnets_for(&mut self, agent_id: &AgentId) {
        let mut pools = self.ipam.clone();
        let names: Vec<String> = pools.pools().map(|p| p.name.clone()).collect();
        for name in names {
            if let Err(e) = pools.lease_subnet(&name, agent_id.as_str()) {
                // The agent runs without that pool; its container tasks on it fail with this.
                self.outbox.push(Output::Warning(format!("agent {agent_id}: {e}")));
            }
        }
        self.ipam = pools;
        self.save_pools();
        if let Some(entry) = self.agents.get_mut(agent_id) {
            entry.view.subnets = self.ipam.subnets_of(agent_id.as_str()).iter().map(to_model).collect();
        }
    }

    /// Gives a gone agent's subnets back.
    pub(super) fn release_subnets_of(&mut self, agent_id: &AgentId) {
        let held = self.ipam.subnets_of(agent_id.as_str());
        if held.is_empty() {
            return;
        }
        for subnet in held {
            let _ = self.ipam.release_subnet(&subnet.pool, agent_id.as_str());
        }
        self.save_pools();
        if let Some(entry) = self.agents.get_mut(agent_id) {
            entry.view.subnets.clear();
        }
    }

    /// Takes new pools: every live agent gets its subnets of pools it lacks, changed agents
    /// are recorded and told.
    fn commit_pools(&mut self, pools: Pools, now: Time) {
        self.ipam = pools;
        let live: Vec<AgentId> =
            self.agents.iter().filter(|(_, a)| a.view.state != AgentState::Gone).map(|(id, _)| id.clone()).collect();
        let pool_names: BTreeSet<String> = self.ipam.pools().map(|p| p.name.clone()).collect();
        for agent_id in live {
            for name in &pool_names {
                if let Err(e) = self.ipam.lease_subnet(name, agent_id.as_str()) {
                    self.outbox.push(Output::Warning(format!("agent {agent_id}: {e}")));
                }
            }
            let subnets: Vec<AgentSubnet> = self.ipam.subnets_of(agent_id.as_str()).iter().map(to_model).collect();
            let networks = self.agent_networks(&agent_id);
            let Some(entry) = self.agents.get_mut(&agent_id) else { continue };
            let changed = entry.view.subnets != subnets;
            entry.view.subnets = subnets;
            if let Some(conn) = entry.conn {
                self.outbox.push(Output::ToAgent { conn, command: AgentCommand::Networks { networks } });
            }
            if changed && let Some(agent) = self.agent(&agent_id) {
                self.emit(now, EventKind::AgentUpdated { agent });
            }
        }
        self.save_pools();
    }

    /// The pools (with their subnet leases) go to the registry with this batch.
    pub(super) fn save_pools(&mut self) {
        self.outbox.push(Output::SavePools(Box::new(self.ipam.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_counts_leave_out_network_gateway_and_last() {
        assert_eq!(usable(&"198.18.3.0/24".parse().unwrap()), 253);
        assert_eq!(usable(&"198.18.3.0/30".parse().unwrap()), 1);
    }
}
