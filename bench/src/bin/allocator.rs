//! Allocation rounds of the hierarchical DRF allocator at the size of Mesos's allocator
//! benchmark: 10,000 agents × 1,000 frameworks, against Mesos's published 1.06 s per round.
//!
//! Every round offers every agent with free resources; the frameworks then answer like busy
//! schedulers do: most decline with the default 5 s filter, some launch a small task and
//! return the rest (also filtered), a few decline without a filter, and tasks end a few rounds
//! after they start. So from the second round on, the allocator has to walk past filtered
//! frameworks to find takers, as in Mesos's benchmarks with declining frameworks.
//!
//! Run: `cargo run --release -p atoll-bench --bin allocator [-- ROUNDS]`.

use std::time::{Duration, Instant};

use atoll_bench::{Summary, machine, ms};
use atoll_proto::model::{AgentId, FrameworkId, Resources, Time};
use atoll_scheduler_core::allocator::{Allocation, Allocator, AllocatorConfig};

const AGENTS: usize = 10_000;
const FRAMEWORKS: usize = 1_000;
const DEFAULT_ROUNDS: usize = 10;
/// Mesos's published time for one allocation round at this size.
const MESOS_ROUND: Duration = Duration::from_millis(1_060);
/// Mesos's default `refuse_seconds`.
const REFUSE: Duration = Duration::from_secs(5);
/// Time between rounds (Mesos's default `--allocation_interval` is 1 s).
const INTERVAL: Duration = Duration::from_secs(1);
const TASK_ROUNDS: usize = 3;

const ROLES: [(&str, f64); 4] = [("*", 1.0), ("eng/web", 2.0), ("eng/batch", 1.0), ("analytics", 0.5)];

/// splitmix64: a fixed, seedless mixer so every run makes the same decisions.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

struct Task {
    agent: AgentId,
    framework: FrameworkId,
    resources: Resources,
    ends_after_round: usize,
}

#[derive(Default)]
struct Answers {
    launched: usize,
    declined_filtered: usize,
    declined: usize,
}

fn main() -> anyhow::Result<()> {
    let rounds = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| anyhow::anyhow!("ROUNDS must be a number: {e}"))?,
        None => DEFAULT_ROUNDS,
    };
    let agent_total: Resources = "cpus:16;mem:65536;disk:500000;ports:[31000-32000]".parse()?;
    let task: Resources = "cpus:1;mem:4096".parse()?;

    let setup = Instant::now();
    let mut alloc = Allocator::new(AllocatorConfig::default());
    for (role, weight) in ROLES {
        alloc.set_weight(role, weight);
    }
    let agents: Vec<AgentId> = (0..AGENTS).map(|i| AgentId::new(format!("agent-{i:05}"))).collect();
    for agent in &agents {
        alloc.add_agent(agent.clone(), agent_total.clone());
    }
    for i in 0..FRAMEWORKS {
        alloc.add_framework(FrameworkId::new(format!("fw-{i:04}")), ROLES[i % ROLES.len()].0, true);
    }
    let setup = setup.elapsed();

    println!("Allocator benchmark: {AGENTS} agents x {FRAMEWORKS} frameworks in {} roles", ROLES.len());
    println!("machine: {}", machine());
    println!("setup (add agents and frameworks): {}", ms(setup));
    println!();
    println!(
        "{:>5}  {:>7}  {:>12}  {:>8}  {:>9}  {:>8}  {:>12}",
        "round", "offers", "allocate()", "launched", "filtered", "declined", "answers"
    );

    let mut now = Time(1_700_000_000_000);
    let mut running: Vec<Task> = Vec::new();
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let offers = alloc.allocate(now);
        let took = started.elapsed();
        times.push(took);

        let started = Instant::now();
        let answers = answer(&mut alloc, &offers, &task, round, now, &mut running);
        running.retain(|t| {
            let done = t.ends_after_round <= round;
            if done {
                alloc.recover(&t.agent, &t.framework, &t.resources, None);
            }
            !done
        });
        let answered = started.elapsed();
        println!(
            "{round:>5}  {:>7}  {:>12}  {:>8}  {:>9}  {:>8}  {:>12}",
            offers.len(),
            ms(took),
            answers.launched,
            answers.declined_filtered,
            answers.declined,
            ms(answered)
        );
        now = now.saturating_add(INTERVAL);
    }

    let Some(summary) = Summary::of(&times) else {
        return Ok(());
    };
    println!();
    println!("{:<28} {:>12} {:>12} {:>12}", "allocation round", "min", "median", "max");
    println!("{:<28} {:>12} {:>12} {:>12}", "atoll", ms(summary.min), ms(summary.median), ms(summary.max));
    println!("{:<28} {:>12}", "mesos (published)", ms(MESOS_ROUND));
    let ratio = summary.median.as_secs_f64() / MESOS_ROUND.as_secs_f64();
    println!("ratio atoll/mesos (median): {ratio:.4}  ({:.0}x faster)", 1.0 / ratio);
    Ok(())
}

/// The frameworks' answers to one round's offers, decided by a hash of who and when.
fn answer(
    alloc: &mut Allocator,
    offers: &[Allocation],
    task: &Resources,
    round: usize,
    now: Time,
    running: &mut Vec<Task>,
) -> Answers {
    let mut answers = Answers::default();
    let refuse = Some(now.saturating_add(REFUSE));
    for (i, offer) in offers.iter().enumerate() {
        let roll =
            mix(((round as u64) << 32) ^ i as u64 ^ fnv(offer.agent.as_str()) ^ fnv(offer.framework.as_str())) % 10;
        match roll {
            0..=1 if offer.resources.contains(task) => {
                let mut used = task.clone();
                if let Some(port) = offer.resources.ranges("ports").take_lowest(1) {
                    used.add_ranges("ports", &port);
                }
                let rest = offer.resources.minus(&used);
                alloc.recover(&offer.agent, &offer.framework, &rest, refuse);
                running.push(Task {
                    agent: offer.agent.clone(),
                    framework: offer.framework.clone(),
                    resources: used,
                    ends_after_round: round + TASK_ROUNDS,
                });
                answers.launched += 1;
            }
            9 => {
                alloc.recover(&offer.agent, &offer.framework, &offer.resources, None);
                answers.declined += 1;
            }
            _ => {
                alloc.recover(&offer.agent, &offer.framework, &offer.resources, refuse);
                answers.declined_filtered += 1;
            }
        }
    }
    answers
}
