//! The reconciler: desired app + observed tasks → what to launch and kill now.
//!
//! Deployments (start, scale, restart, upgrade, removal) are all the same loop: the shell
//! calls [`plan`] whenever a task of the app changes or the app does, carries out the plan
//! (launch `launch` new tasks of the app's current config version on offers, kill `kill`), and
//! the deployment is finished when the plan says `done`. Nothing is remembered between calls,
//! so a deployment continues where it was after a master restart.
//!
//! Vocabulary, for the tasks of one app:
//!
//! - *live*: not terminal. Live tasks hold capacity, including `TASK_KILLING` ones (their
//!   process may still run) and unreachable ones (they may come back).
//! - *healthy*: `TASK_RUNNING` and passing its health check (or without one).
//! - *active*: live and neither being killed nor unreachable/unknown: an instance that counts
//!   towards `instances`. A task killed by its health check, or lost with its agent, is
//!   replaced as soon as the capacity bound allows.
//! - *current*: launched for the app's `config_version` (task label [`super::matching::APP_VERSION_LABEL`]);
//!   other tasks are *old* and are replaced by a rolling upgrade.
//!
//! The rules, in the order applied:
//!
//! 1. Old tasks that do not serve (not running, or failing their check) are killed at once:
//!    killing them costs no healthy capacity.
//! 2. Current tasks beyond `instances` are killed, preferring those not yet running, then
//!    unhealthy ones, then the newest.
//! 3. Healthy old tasks are killed while the app keeps at least [`Bounds::min_healthy`]
//!    healthy tasks (old and new together). This is what makes a rolling upgrade roll: each
//!    new task that becomes healthy lets one old task go.
//! 4. New current tasks are launched up to `instances` active ones, as far as
//!    [`Bounds::max_total`] allows. Killed tasks count against that bound until they are
//!    terminal, so a launch never takes the app over it.
//!
//! Healthy tasks are only ever killed within the healthy budget (rules 2 and 3 share it), so
//! the reconciler never takes the app below `min_healthy` itself; failures can, and then it
//! only kills tasks that do not serve until health is back. A task being killed is never
//! killed again; an unreachable task is killed only when the app is removed (the master holds
//! the kill until its agent returns).
//!
//! The shell must include tasks it launched but has no status for yet (as `TASK_STAGING`):
//! otherwise the next plan would launch them again.

use std::cmp::Reverse;

use atoll_proto::model::{App, AppDefinition, Task, TaskId, TaskState, Time};

use super::constraints::Placement;
use super::matching::version_of;

/// A task of the app as the reconciler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub task_id: TaskId,
    /// The config version the task was launched for (from its task label).
    pub version: Time,
    pub state: TaskState,
    /// The health check verdict, if one arrived.
    pub healthy: Option<bool>,
    pub has_health_check: bool,
    pub placement: Placement,
    pub launched_at: Time,
}

impl Observed {
    /// The reconciler's view of a task; `None` when it lacks the version label (not the
    /// services framework's task).
    pub fn from_task(task: &Task, placement: Placement, launched_at: Time) -> Option<Observed> {
        Some(Observed {
            task_id: task.id.clone(),
            version: version_of(&task.labels)?,
            state: task.state,
            healthy: task.healthy,
            has_health_check: task.health_check.is_some(),
            placement,
            launched_at,
        })
    }

    pub fn is_live(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Running and passing its health check, or running without one.
    pub fn is_healthy(&self) -> bool {
        self.state == TaskState::Running && (self.healthy == Some(true) || !self.has_health_check)
    }

    /// Counts as one of the app's instances.
    pub fn is_active(&self) -> bool {
        self.is_live() && !matches!(self.state, TaskState::Killing | TaskState::Unreachable | TaskState::Unknown)
    }

    /// Not yet running (staging or starting).
    fn is_starting(&self) -> bool {
        matches!(self.state, TaskState::Staging | TaskState::Starting)
    }
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New tasks of the current config version to launch now.
    pub launch: u32,
    /// Tasks to kill now, none of them already being killed.
    pub kill: Vec<TaskId>,
    /// The app matches its target: only current tasks, `instances` of them, all healthy.
    /// For a removed app: nothing is live.
    pub done: bool,
}

/// The rolling-upgrade bounds of an app, from its `upgradeStrategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// `ceil(instances × minimumHealthCapacity)` healthy tasks are kept through our kills.
    pub min_healthy: u32,
    /// `floor(instances × (1 + maximumOverCapacity))` live tasks at most, through our launches.
    pub max_total: u32,
}

impl Bounds {
    /// Marathon's bounds. Where they leave no room at all (`min_healthy == max_total`, e.g.
    /// 3 instances with 0.9/0.1, or 1 instance with 0.5/0), `min_healthy` is one lower, as
    /// Marathon does, so that one old task can make room for a new one; otherwise such an
    /// upgrade could never progress. (1/0 is refused by validation for that reason.)
    pub fn of(def: &AppDefinition) -> Bounds {
        let instances = def.instances;
        let n = f64::from(instances);
        let fraction = |v: f64| if v.is_nan() { 1.0 } else { v.clamp(0.0, 1.0) };
        let strategy = &def.upgrade_strategy;
        // The epsilons keep 10 × 0.7 = 7.000000000000001 from rounding up to 8.
        let min_healthy =
            ((n * fraction(strategy.minimum_health_capacity) - 1e-9).ceil().max(0.0) as u32).min(instances);
        let max_total = ((n * (1.0 + fraction(strategy.maximum_over_capacity)) + 1e-9).floor() as u32).max(instances);
        let min_healthy = if instances > 0 && min_healthy >= max_total { max_total - 1 } else { min_healthy };
        Bounds { min_healthy, max_total }
    }
}

/// Desired app + observed tasks → what to do now. `app: None` means the app is being
/// removed: kill everything; done when nothing is live.
pub fn plan(app: Option<&App>, observed: &[Observed]) -> Plan {
    let live: Vec<&Observed> = observed.iter().filter(|o| o.is_live()).collect();
    let Some(app) = app else {
        let kill = live.iter().filter(|o| o.state != TaskState::Killing).map(|o| o.task_id.clone()).collect();
        return Plan { launch: 0, kill, done: live.is_empty() };
    };
    let instances = app.definition.instances as usize;
    let bounds = Bounds::of(&app.definition);
    let (current, old): (Vec<&Observed>, Vec<&Observed>) = live.iter().partition(|o| o.version == app.config_version);

    let healthy = live.iter().filter(|o| o.is_healthy()).count();
    let mut budget = healthy.saturating_sub(bounds.min_healthy as usize);
    let mut kill = Vec::new();

    // 1. Old tasks that do not serve.
    let mut idle_old: Vec<&Observed> = old.iter().copied().filter(|o| o.is_active() && !o.is_healthy()).collect();
    idle_old.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    kill.extend(idle_old.iter().map(|o| o.task_id.clone()));

    // 2. Current tasks beyond `instances`.
    let mut active: Vec<&Observed> = current.iter().copied().filter(|o| o.is_active()).collect();
    active.sort_by_key(|o| {
        let rank = if o.is_starting() {
            0
        } else if !o.is_healthy() {
            1
        } else {
            2
        };
        (rank, Reverse(o.launched_at), Reverse(o.task_id.clone()))
    });
    let surplus = active.len().saturating_sub(instances);
    let mut killed_current = 0;
    for task in active.iter().take(surplus) {
        if task.is_healthy() {
            // Sorted: every later candidate is healthy too.
            if budget == 0 {
                break;
            }
            budget -= 1;
        }
        kill.push(task.task_id.clone());
        killed_current += 1;
    }

    // 3. Healthy old tasks, oldest version first, then the most recently launched.
    let mut serving_old: Vec<&Observed> = old.iter().copied().filter(|o| o.is_active() && o.is_healthy()).collect();
    serving_old.sort_by_key(|o| (o.version, Reverse(o.launched_at), o.task_id.clone()));
    for task in serving_old.into_iter().take(budget) {
        kill.push(task.task_id.clone());
    }

    // 4. Launch, within the capacity bound (tasks being killed still hold capacity).
    let wanted = instances.saturating_sub(active.len() - killed_current);
    let headroom = (bounds.max_total as usize).saturating_sub(live.len());
    let launch = wanted.min(headroom) as u32;

    let done = old.is_empty() && current.len() == instances && current.iter().all(|o| o.is_healthy());
    Plan { launch, kill, done }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::test_support::app;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;

    const V1: Time = Time(1_000);
    const V2: Time = Time(2_000);

    fn web(instances: u32, min_health: f64, over: f64, health_check: bool, version: Time) -> App {
        let mut definition = json!({
            "id": "/web", "cmd": "serve", "instances": instances,
            "upgradeStrategy": {"minimumHealthCapacity": min_health, "maximumOverCapacity": over}
        });
        if health_check {
            definition["healthChecks"] = json!([{"protocol": "MESOS_TCP"}]);
        }
        app(definition, version)
    }

    /// A toy cluster: applies plans and moves tasks along.
    struct Sim {
        app: Option<App>,
        tasks: Vec<Observed>,
        next: u32,
        now: u64,
        /// Steps each task has waited in its current stage.
        waited: HashMap<TaskId, u32>,
    }

    impl Sim {
        fn new(app: Option<App>) -> Sim {
            Sim { app, tasks: Vec::new(), next: 0, now: 0, waited: HashMap::new() }
        }

        fn add(&mut self, version: Time, state: TaskState, healthy: Option<bool>) -> TaskId {
            self.next += 1;
            let task_id = TaskId(format!("t{:03}", self.next));
            let has_health_check = self.app.as_ref().is_none_or(|a| !a.definition.health_checks.is_empty());
            self.tasks.push(Observed {
                task_id: task_id.clone(),
                version,
                state,
                healthy,
                has_health_check,
                placement: Placement::default(),
                launched_at: Time(self.now),
            });
            task_id
        }

        fn healthy(&self) -> usize {
            self.tasks.iter().filter(|t| t.is_healthy()).count()
        }

        fn live(&self) -> usize {
            self.tasks.iter().filter(|t| t.is_live()).count()
        }

        fn count(&self, version: Time) -> usize {
            self.tasks.iter().filter(|t| t.is_live() && t.version == version).count()
        }

        /// Plans and applies the plan, checking the bounds.
        fn step(&mut self) -> Plan {
            self.now += 1;
            let plan = plan(self.app.as_ref(), &self.tasks);
            let bounds = self.app.as_ref().map(|a| Bounds::of(&a.definition));
            let healthy_before = self.healthy();
            for id in &plan.kill {
                let task = self.tasks.iter_mut().find(|t| &t.task_id == id).expect("kills a known task");
                assert!(task.is_live() && task.state != TaskState::Killing, "kills {id} in {:?}", task.state);
                task.state = TaskState::Killing;
            }
            let mut seen = plan.kill.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), plan.kill.len(), "kills a task twice in one plan: {:?}", plan.kill);
            if let (Some(bounds), Some(app)) = (bounds, &self.app) {
                if healthy_before >= bounds.min_healthy as usize {
                    assert!(
                        self.healthy() >= bounds.min_healthy as usize,
                        "kills took healthy from {healthy_before} to {} < {} ({plan:?})",
                        self.healthy(),
                        bounds.min_healthy
                    );
                }
                let version = app.config_version;
                for _ in 0..plan.launch {
                    self.add(version, TaskState::Staging, None);
                }
                if plan.launch > 0 {
                    assert!(self.live() <= bounds.max_total as usize, "launches took live to {}", self.live());
                }
            }
            plan
        }

        /// Every task moves one stage on: staging → running → healthy, killing → killed,
        /// unhealthy → healthy, unreachable → running.
        fn advance_all(&mut self) {
            for task in &mut self.tasks {
                advance(task);
            }
        }

        /// Like `advance_all`, but each task moves only when `lag` says so, or after waiting
        /// two steps: progress is uneven but bounded.
        fn advance_some(&mut self, lag: &mut impl FnMut() -> bool) {
            for task in &mut self.tasks {
                let waited = self.waited.entry(task.task_id.clone()).or_default();
                if *waited >= 2 || !lag() {
                    advance(task);
                    *waited = 0;
                } else {
                    *waited += 1;
                }
            }
        }
    }

    fn advance(task: &mut Observed) {
        match task.state {
            TaskState::Staging | TaskState::Starting | TaskState::Unreachable => task.state = TaskState::Running,
            TaskState::Running if task.has_health_check && task.healthy != Some(true) => task.healthy = Some(true),
            TaskState::Killing => task.state = TaskState::Killed,
            _ => {}
        }
    }

    fn run_to_done(sim: &mut Sim, max_steps: usize) -> usize {
        for step in 0..max_steps {
            if sim.step().done {
                return step;
            }
            sim.advance_all();
        }
        panic!("not done after {max_steps} steps: {:#?}", sim.tasks);
    }

    #[test]
    fn bounds_follow_marathon() {
        let bounds = |n, min, over| Bounds::of(&web(n, min, over, false, V1).definition);
        assert_eq!(bounds(4, 1.0, 1.0), Bounds { min_healthy: 4, max_total: 8 });
        assert_eq!(bounds(3, 0.5, 0.0), Bounds { min_healthy: 2, max_total: 3 });
        assert_eq!(bounds(10, 0.7, 0.3), Bounds { min_healthy: 7, max_total: 13 });
        assert_eq!(bounds(3, 0.9, 0.1), Bounds { min_healthy: 2, max_total: 3 }, "relaxed to make room");
        assert_eq!(bounds(1, 0.5, 0.0), Bounds { min_healthy: 0, max_total: 1 });
        assert_eq!(bounds(0, 1.0, 1.0), Bounds { min_healthy: 0, max_total: 0 });
    }

    #[test]
    fn starts_and_becomes_done_when_all_are_healthy() {
        let mut sim = Sim::new(Some(web(3, 1.0, 1.0, true, V1)));
        let plan = sim.step();
        assert_eq!(plan, Plan { launch: 3, kill: vec![], done: false });
        assert_eq!(sim.step().launch, 0, "launched tasks are not launched again");
        sim.advance_all();
        assert!(!sim.step().done, "running but not yet healthy");
        sim.advance_all();
        assert_eq!(sim.step(), Plan { launch: 0, kill: vec![], done: true });
    }

    #[test]
    fn scales_up_and_down_killing_the_least_useful_first() {
        let mut sim = Sim::new(Some(web(4, 1.0, 1.0, true, V1)));
        let healthy_old = sim.add(V1, TaskState::Running, Some(true));
        let unhealthy = sim.add(V1, TaskState::Running, Some(false));
        sim.now = 5;
        let healthy_new = sim.add(V1, TaskState::Running, Some(true));
        let staging = sim.add(V1, TaskState::Staging, None);
        let dead = sim.add(V1, TaskState::Failed, None);
        let _ = (healthy_old, dead);
        sim.app = Some(web(2, 0.0, 1.0, true, V1));
        assert_eq!(sim.step().kill, vec![staging.clone(), unhealthy.clone()]);
        sim.app = Some(web(1, 0.0, 1.0, true, V1));
        assert_eq!(sim.step().kill, vec![healthy_new], "then the newest");
        sim.app = Some(web(3, 0.0, 1.0, true, V1));
        assert_eq!(sim.step().launch, 2);
    }

    #[test]
    fn a_killing_task_is_replaced_within_capacity_and_never_killed_twice() {
        let mut sim = Sim::new(Some(web(2, 1.0, 0.0, false, V1)));
        sim.add(V1, TaskState::Running, None);
        let killing = sim.add(V1, TaskState::Killing, None);
        let plan = sim.step();
        assert_eq!(plan.launch, 0, "maximumOverCapacity 0: wait until it is gone");
        assert!(!plan.kill.contains(&killing));
        sim.advance_all();
        assert_eq!(sim.step().launch, 1);

        let mut sim = Sim::new(Some(web(2, 1.0, 0.5, false, V1)));
        sim.add(V1, TaskState::Running, None);
        sim.add(V1, TaskState::Killing, None);
        assert_eq!(sim.step().launch, 1, "room above instances: replace at once");
    }

    #[test]
    fn rolling_upgrade_with_full_capacity_keeps_every_old_task_until_a_new_one_is_healthy() {
        let mut sim = Sim::new(Some(web(3, 1.0, 1.0, true, V2)));
        for _ in 0..3 {
            sim.add(V1, TaskState::Running, Some(true));
        }
        let plan = sim.step();
        assert_eq!((plan.launch, plan.kill.len()), (3, 0));
        sim.advance_all();
        assert_eq!(sim.step().kill.len(), 0, "new tasks running, not yet healthy");
        sim.advance_all();
        let plan = sim.step();
        assert_eq!(plan.kill.len(), 3, "all three new ones healthy: the old go");
        sim.advance_all();
        assert!(sim.step().done);
    }

    #[test]
    fn rolling_upgrade_at_half_capacity_without_overcapacity() {
        let mut sim = Sim::new(Some(web(4, 0.5, 0.0, true, V2)));
        for _ in 0..4 {
            sim.add(V1, TaskState::Running, Some(true));
        }
        let plan = sim.step();
        assert_eq!((plan.launch, plan.kill.len()), (0, 2), "two old go to make room; none launch yet");
        sim.advance_all();
        assert_eq!(sim.step().launch, 2);
        let steps = run_to_done(&mut sim, 20);
        assert!(steps < 20);
        assert_eq!((sim.count(V1), sim.count(V2)), (0, 4));
    }

    #[test]
    fn restart_replaces_every_task_with_the_same_definition() {
        let mut sim = Sim::new(Some(web(2, 1.0, 1.0, false, V1)));
        run_to_done(&mut sim, 10);
        let mut restarted = sim.app.clone().unwrap();
        restarted.config_version = V2;
        restarted.version = V2;
        sim.app = Some(restarted);
        assert_eq!(sim.step().launch, 2);
        run_to_done(&mut sim, 10);
        assert_eq!((sim.count(V1), sim.count(V2)), (0, 2));
    }

    #[test]
    fn unhealthy_and_starting_old_tasks_go_at_once() {
        let mut sim = Sim::new(Some(web(3, 1.0, 0.5, true, V2)));
        let healthy = sim.add(V1, TaskState::Running, Some(true));
        let unhealthy = sim.add(V1, TaskState::Running, Some(false));
        let staging = sim.add(V1, TaskState::Staging, None);
        let plan = sim.step();
        assert_eq!(plan.kill, vec![unhealthy, staging]);
        assert!(!plan.kill.contains(&healthy), "below min_healthy already: the healthy one stays");
        assert_eq!(plan.launch, 1, "max_total 4 with 3 live");
    }

    #[test]
    fn removal_kills_everything_and_is_done_when_nothing_is_live() {
        let mut sim = Sim::new(Some(web(2, 1.0, 1.0, true, V1)));
        let running = sim.add(V1, TaskState::Running, Some(true));
        let killing = sim.add(V1, TaskState::Killing, None);
        let away = sim.add(V1, TaskState::Unreachable, None);
        sim.add(V1, TaskState::Finished, None);
        sim.app = None;
        let plan = sim.step();
        assert_eq!(plan, Plan { launch: 0, kill: vec![running, away], done: false });
        assert!(!plan.kill.contains(&killing));
        sim.advance_all();
        sim.advance_all();
        assert!(sim.step().done);
    }

    #[test]
    fn scale_to_zero() {
        let mut sim = Sim::new(Some(web(2, 1.0, 1.0, false, V1)));
        run_to_done(&mut sim, 10);
        sim.app = Some(web(0, 1.0, 1.0, false, V1));
        assert_eq!(sim.step().kill.len(), 2);
        run_to_done(&mut sim, 5);
        assert_eq!(sim.live(), 0);
    }

    #[test]
    fn unreachable_tasks_are_replaced_not_killed_and_surplus_goes_when_they_return() {
        let mut sim = Sim::new(Some(web(2, 1.0, 1.0, false, V1)));
        run_to_done(&mut sim, 10);
        sim.tasks[0].state = TaskState::Unreachable;
        let plan = sim.step();
        assert_eq!((plan.launch, plan.kill.len()), (1, 0));
        run_to_done(&mut sim, 10);
        assert_eq!(sim.count(V1), 2, "the returning task made a surplus, which was killed");
    }

    #[test]
    fn tasks_without_the_version_label_are_not_observed() {
        use atoll_proto::model::{AgentId, CommandInfo, FrameworkId, Labels, Resources, TaskInfo};
        let info = TaskInfo {
            name: "web".into(),
            task_id: TaskId::new("web.1"),
            agent_id: AgentId::new("a"),
            resources: Resources::new(),
            command: CommandInfo::shell("x"),
            labels: Labels::default(),
            discovery: None,
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
        };
        let mut task = Task::launched(FrameworkId::new("f"), info, Time(5));
        assert_eq!(Observed::from_task(&task, Placement::default(), Time(5)), None);
        task.labels = crate::services::matching::task_labels(&web(1, 1.0, 1.0, false, V2));
        let observed = Observed::from_task(&task, Placement::default(), Time(5)).unwrap();
        assert_eq!((observed.version, observed.state), (V2, TaskState::Staging));
    }

    /// A small deterministic generator, so the simulation is pure given proptest's seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_advance(task: &mut Observed, rng: &mut Rng, failures: bool) {
        let roll = rng.below(100);
        match task.state {
            TaskState::Staging | TaskState::Starting if roll < 50 => task.state = TaskState::Running,
            TaskState::Staging | TaskState::Starting if failures && roll < 60 => task.state = TaskState::Failed,
            TaskState::Running if task.has_health_check && task.healthy.is_none() => {
                if roll < 50 {
                    task.healthy = Some(true);
                } else if failures && roll < 65 {
                    task.healthy = Some(false);
                }
            }
            TaskState::Running if failures && roll < 5 => task.state = TaskState::Failed,
            TaskState::Running if failures && task.healthy == Some(true) && roll < 12 => task.healthy = Some(false),
            TaskState::Running if task.healthy == Some(false) && roll < 30 => task.healthy = Some(true),
            TaskState::Running if task.healthy == Some(false) && failures && roll < 50 => {
                task.state = TaskState::Killing;
            }
            TaskState::Killing if roll < 50 => task.state = TaskState::Killed,
            TaskState::Unreachable if roll < 20 => task.state = TaskState::Running,
            TaskState::Unreachable if failures && roll < 30 => task.state = TaskState::Gone,
            _ => {}
        }
    }

    fn arb_state() -> impl Strategy<Value = (TaskState, Option<bool>)> {
        prop_oneof![
            Just((TaskState::Staging, None)),
            Just((TaskState::Starting, None)),
            Just((TaskState::Running, None)),
            Just((TaskState::Running, Some(true))),
            Just((TaskState::Running, Some(true))),
            Just((TaskState::Running, Some(false))),
            Just((TaskState::Killing, None)),
            Just((TaskState::Unreachable, None)),
            Just((TaskState::Finished, None)),
        ]
    }

    fn arb_strategy() -> impl Strategy<Value = (f64, f64)> {
        let fractions = || prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(0.75), Just(0.9), Just(1.0)];
        (fractions(), fractions())
    }

    /// An app at V2 with tasks of V1 (and some of V2) in any state.
    fn setup(
        instances: u32,
        (min_health, over): (f64, f64),
        health_check: bool,
        old: &[(TaskState, Option<bool>)],
        new: &[(TaskState, Option<bool>)],
    ) -> Sim {
        let mut sim = Sim::new(Some(web(instances, min_health, over, health_check, V2)));
        for &(state, healthy) in old {
            sim.add(V1, state, healthy);
        }
        for &(state, healthy) in new {
            sim.add(V2, state, healthy);
        }
        sim
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Bounds hold under random progress and failures: `step` asserts that our kills keep
        /// healthy >= min_healthy (when it was) and launches keep live <= max_total.
        #[test]
        fn kills_and_launches_stay_within_the_bounds(
            instances in 0u32..7,
            strategy in arb_strategy(),
            health_check in any::<bool>(),
            old in proptest::collection::vec(arb_state(), 0..8),
            new in proptest::collection::vec(arb_state(), 0..4),
            seed in 1u64..u64::MAX,
            scale_to in proptest::option::of(0u32..7),
        ) {
            let mut sim = setup(instances, strategy, health_check, &old, &new);
            let mut rng = Rng(seed);
            for step in 0..60 {
                if step == 30 && let Some(n) = scale_to {
                    sim.app.as_mut().unwrap().definition.instances = n;
                }
                sim.step();
                for task in &mut sim.tasks {
                    random_advance(task, &mut rng, true);
                }
            }
        }

        /// Without failures, every deployment finishes, within a bound linear in the number
        /// of tasks involved, even when tasks progress unevenly.
        #[test]
        fn deployments_converge_without_failures(
            instances in 0u32..7,
            strategy in arb_strategy(),
            health_check in any::<bool>(),
            old in proptest::collection::vec(arb_state(), 0..8),
            new in proptest::collection::vec(arb_state(), 0..4),
            seed in 1u64..u64::MAX,
        ) {
            let mut sim = setup(instances, strategy, health_check, &old, &new);
            let max_steps = 10 * (instances as usize + old.len() + new.len()) + 20;
            let mut rng = Rng(seed);
            let mut done = false;
            for _ in 0..max_steps {
                if sim.step().done {
                    done = true;
                    break;
                }
                sim.advance_some(&mut || rng.below(2) == 0);
            }
            prop_assert!(done, "not done after {} steps: {:#?}", max_steps, sim.tasks);
            prop_assert_eq!(sim.count(V1), 0);
            prop_assert_eq!(sim.count(V2), instances as usize);
        }

        /// Removal always finishes.
        #[test]
        fn removal_converges(
            old in proptest::collection::vec(arb_state(), 0..8),
            seed in 1u64..u64::MAX,
        ) {
            let mut sim = setup(2, (1.0, 1.0), true, &old, &[]);
            sim.app = None;
            let mut rng = Rng(seed);
            let mut done = false;
            for _ in 0..40 {
                if sim.step().done {
                    done = true;
                    break;
                }
                sim.advance_some(&mut || rng.below(2) == 0);
            }
            prop_assert!(done);
        }
    }
}
