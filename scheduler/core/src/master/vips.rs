//! The master as authority for named VIP addresses: the first time a task carries a
//! `VIP_n` label naming a VIP (`/web:80`), the name gets an address from the VIP pool, recorded
//! in the event log (VIP_ASSIGNED), so every node's load balancer and DNS use the same address
//! and it survives restarts. Addresses are kept (never reused for another name) until the
//! name is released.

use std::net::IpAddr;

use atoll_lb_core::vips::{VipAllocator, VipLabel, VipName, task_port_vips};
use atoll_proto::model::{EventKind, Task, Time, VipAssignment};

use super::{Master, Output};

impl Master {
    /// The allocator, rebuilt from recorded assignments at recovery.
    pub(super) fn vip_allocator(assignments: &[VipAssignment]) -> (VipAllocator, Vec<String>) {
        let mut allocator = VipAllocator::default();
        let mut problems = Vec::new();
        for vip in assignments {
            let IpAddr::V4(address) = vip.address else {
                problems.push(format!("VIP {}.{}: {} is not IPv4", vip.name, vip.framework, vip.address));
                continue;
            };
            if let Err(e) = allocator.record(VipName::new(&vip.framework, &vip.name), address) {
                problems.push(format!("VIP {}.{}: {e}", vip.name, vip.framework));
            }
        }
        (allocator, problems)
    }

    /// Assigns addresses to the named VIPs a task's labels name and that have none yet.
    pub(super) fn assign_vips_for(&mut self, task: &Task, now: Time) {
        let Some(framework) = self.frameworks.get(&task.framework_id).map(|f| f.view.info.name.clone()) else {
            return;
        };
        let (vips, problems) = task_port_vips(task);
        for problem in problems {
            self.outbox.push(Output::Warning(problem.to_string()));
        }
        for vip in vips {
            let VipLabel::Named { name, .. } = vip.label else { continue };
            let key = VipName::new(&framework, &name);
            if self.vip_allocator.get(&key).is_some() {
                continue;
            }
            match self.vip_allocator.assign(&key) {
                Ok(address) => {
                    let assignment = VipAssignment { framework: framework.clone(), name, address: address.into() };
                    self.vips.insert((assignment.framework.clone(), assignment.name.clone()), assignment.clone());
                    self.emit(now, EventKind::VipAssigned { vip: assignment });
                }
                Err(e) => self.outbox.push(Output::Warning(format!("VIP {key}: {e}"))),
            }
        }
    }
}
