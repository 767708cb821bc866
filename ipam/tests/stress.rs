//! Concurrent stress: several agent threads, each owning its `Leases`, allocate, release,
//! restart and give back subnets while one admin thread changes the pools, all through the
//! master's `Pools` behind a mutex (as the master's single owner task would serialize them). A
//! shared registry of live addresses catches any address handed to two tasks at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread;

use atoll_ipam::{IpNetwork, IpamError, Leases, PoolSpec, Pools};

const AGENTS: usize = 6;
const ROUNDS: usize = 1500;
const POOLS: [&str; 2] = ["atoll", "six"];

/// Deterministic per-thread pseudo-random numbers (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Small pools, so subnets run out and get reused by other agents.
fn pools() -> (PoolSpec, PoolSpec) {
    let mut atoll = PoolSpec::new("atoll", vec![net("198.18.0.0/27")]);
    atoll.subnet_len_v4 = 29; // 4 subnets of 5 task addresses for 6 agents
    let mut six = PoolSpec::new("six", vec![net("2001:db8::/122")]);
    six.subnet_len_v6 = 125; // 8 subnets of 5 task addresses
    (atoll, six)
}

type Registry = Arc<Mutex<BTreeMap<IpAddr, String>>>;

/// Removes addresses from the registry before the agent frees them, so the registry never
/// misses a live address.
fn unregister(registry: &Registry, agent: &str, ips: impl IntoIterator<Item = IpAddr>) {
    let mut reg = registry.lock().unwrap();
    for ip in ips {
        assert_eq!(reg.remove(&ip).as_deref(), Some(agent), "{ip} was not registered to {agent}");
    }
}

fn agent_thread(id: usize, master: Arc<Mutex<Pools>>, registry: Registry) -> Leases {
    let me = format!("agent-{id}");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1));
    let mut leases = Leases::default();
    let mut next_task = 0u64;
    for _ in 0..ROUNDS {
        // Ask the master for a subnet of each pool (idempotent) and take its current view.
        {
            let mut m = master.lock().unwrap();
            for pool in POOLS {
                match m.lease_subnet(pool, &me) {
                    Ok(_) | Err(IpamError::PoolExhausted { .. }) | Err(IpamError::UnknownPool { .. }) => {}
                    Err(e) => panic!("{me}: {e}"),
                }
            }
            // Only on a change, as an agent reacts to events (set_subnets rebuilds the free sets).
            let (subnets, reserved) = (m.subnets_of(&me), m.reserved_of(&me));
            if !leases.subnets().eq(subnets.iter()) || !leases.reserved().eq(reserved.iter()) {
                leases.set_subnets(subnets, reserved).expect("the master keeps subnets in use");
            }
        }
        let pool = POOLS[rng.below(2) as usize];
        match rng.below(10) {
            0..=4 => {
                let task = format!("{me}-t{next_task}");
                next_task += 1;
                match leases.allocate(pool, &task, None) {
                    Ok(lease) => {
                        let prev = registry.lock().unwrap().insert(lease.ip, me.clone());
                        assert_eq!(prev, None, "{} handed to {me} while {prev:?} holds it", lease.ip);
                    }
                    Err(IpamError::SubnetExhausted { .. }) => assert_eq!(leases.free_count(pool), 0),
                    Err(IpamError::NoSubnet { .. }) => {}
                    Err(e) => panic!("{me}: {e}"),
                }
            }
            5..=7 => {
                let tasks: Vec<String> = leases.leases().map(|l| l.task.clone()).collect();
                if !tasks.is_empty() {
                    let task = &tasks[rng.below(tasks.len() as u64) as usize];
                    let ips: Vec<IpAddr> = leases.leases_of(task).iter().map(|l| l.ip).collect();
                    unregister(&registry, &me, ips.clone());
                    let released: Vec<IpAddr> = leases.release(task).iter().map(|l| l.ip).collect();
                    assert_eq!(released, ips);
                }
            }
            8 => {
                // Restart: reload from disk, then keep roughly half of the tasks.
                let json = serde_json::to_vec(&leases).unwrap();
                let back: Leases = serde_json::from_slice(&json).unwrap();
                assert_eq!(back, leases);
                leases = back;
                let live: BTreeSet<String> =
                    leases.leases().filter(|_| rng.below(2) == 0).map(|l| l.task.clone()).collect();
                let dead: Vec<IpAddr> = leases.leases().filter(|l| !live.contains(&l.task)).map(|l| l.ip).collect();
                unregister(&registry, &me, dead.clone());
                let released: Vec<IpAddr> = leases.retain_tasks(&live).iter().map(|l| l.ip).collect();
                assert_eq!(released, dead);
            }
            _ => {
                // Leave the pool: the tasks on it end, the agent drops the subnet, the master
                // takes it back and may hand it to another agent.
                let tasks: BTreeSet<String> =
                    leases.leases().filter(|l| l.pool == pool).map(|l| l.task.clone()).collect();
                let ips: Vec<IpAddr> = leases.leases().filter(|l| l.pool == pool).map(|l| l.ip).collect();
                unregister(&registry, &me, ips);
                for task in &tasks {
                    leases.release(task);
                }
                let mut m = master.lock().unwrap();
                let keep = m.subnets_of(&me).into_iter().filter(|s| s.pool != pool).collect();
                leases.set_subnets(keep, m.reserved_of(&me)).expect("no task left on the pool");
                match m.release_subnet(pool, &me) {
                    Ok(_) | Err(IpamError::UnknownPool { .. }) => {}
                    Err(e) => panic!("{me}: {e}"),
                }
            }
        }
    }
    leases
}

fn admin_thread(master: Arc<Mutex<Pools>>) {
    let mut rng = Rng(42);
    let (atoll, six) = pools();
    let mut grown = atoll.clone();
    grown.cidrs.push(net("198.18.1.0/29"));
    for _ in 0..ROUNDS {
        let mut m = master.lock().unwrap();
        let before = m.clone();
        let result = match rng.below(6) {
            0 => m.reserve("atoll", format!("198.18.0.{}", rng.below(32)).parse().unwrap()).map(drop),
            1 => m.unreserve("atoll", format!("198.18.0.{}", rng.below(32)).parse().unwrap()).map(drop),
            2 => m.update_pool(grown.clone()),
            // Shrinking back fails while an agent holds the grown part.
            3 => m.update_pool(atoll.clone()),
            // Refused while any agent holds a subnet; re-added when it went through.
            4 => m.remove_pool("six").and_then(|_| m.add_pool(six.clone())),
            _ => m.add_pool(PoolSpec::new("clash", vec![net("198.18.0.0/16")])),
        };
        if result.is_err() {
            assert_eq!(*m, before, "a failed admin change altered the pools: {result:?}");
        }
        drop(m);
        thread::yield_now();
    }
}

#[test]
fn no_duplicate_address_across_agents() {
    let master = Arc::new(Mutex::new(Pools::new()));
    let (atoll, six) = pools();
    master.lock().unwrap().add_pool(atoll).unwrap();
    master.lock().unwrap().add_pool(six).unwrap();
    let registry: Registry = Arc::default();

    let admin = {
        let master = master.clone();
        thread::spawn(move || admin_thread(master))
    };
    let agents: Vec<_> = (0..AGENTS)
        .map(|id| {
            let (master, registry) = (master.clone(), registry.clone());
            thread::spawn(move || agent_thread(id, master, registry))
        })
        .collect();
    admin.join().unwrap();
    let finals: Vec<Leases> = agents.into_iter().map(|h| h.join().unwrap()).collect();

    // Every address live at the end is held once, by the agent whose subnet it is in.
    let master = master.lock().unwrap();
    let mut seen = BTreeMap::new();
    for (id, leases) in finals.iter().enumerate() {
        let me = format!("agent-{id}");
        let subnets = master.subnets_of(&me);
        for lease in leases.leases() {
            assert_eq!(seen.insert(lease.ip, me.clone()), None, "{} held twice", lease.ip);
            assert!(
                subnets
                    .iter()
                    .any(|s| s.pool == lease.pool && s.network == lease.subnet && s.network.contains(lease.ip))
            );
        }
    }
    assert_eq!(seen, *registry.lock().unwrap());
    let all = master.subnets();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let disjoint = !a.network.contains(b.network.network()) && !b.network.contains(a.network.network());
            assert!(disjoint, "{a:?} and {b:?} overlap");
        }
    }
}
