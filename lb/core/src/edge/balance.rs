//! Choosing a backend for one request, pure: the shell passes the route, what it knows about
//! the backends (requests in flight, ejections, backends already tried for this request) and
//! its counter and random numbers.

use std::net::SocketAddr;

use super::{Balance, EdgeBackend, Route};
use crate::siphash::siphash24;

/// What the shell knows for one choice.
pub struct ChoiceInputs<'a> {
    /// A counter the shell advances per request of the route (round robin).
    pub counter: u64,
    /// Two random numbers (power of two choices).
    pub random: [u64; 2],
    /// The hash key (header or cookie value, client IP), when the route hashes and the
    /// request has one; without one a hashing route falls back to round robin.
    pub key: Option<&'a [u8]>,
    /// Requests in flight to a backend.
    pub in_flight: &'a dyn Fn(SocketAddr) -> u64,
    /// Backends not to use now: tried already for this request, or ejected as outliers.
    pub avoid: &'a dyn Fn(SocketAddr) -> bool,
}

/// A fixed key: the same backend for the same hash key on every edge and after restarts.
const HASH_KEY: [u8; 16] = *b"atoll-edge-hrw-1";

/// The backend for a request, among the route's active backends. Avoided ones are skipped
/// while any other is left (a route whose every backend is avoided still gets one: better a
/// suspect backend than a certain error).
pub fn choose<'r>(route: &'r Route, inputs: &ChoiceInputs<'_>) -> Option<&'r EdgeBackend> {
    let active: Vec<&EdgeBackend> = route.active().collect();
    if active.is_empty() {
        return None;
    }
    let preferred: Vec<&EdgeBackend> = active.iter().copied().filter(|b| !(inputs.avoid)(b.address)).collect();
    let candidates = if preferred.is_empty() { active } else { preferred };
    let n = candidates.len();
    let index = match (&route.balance, inputs.key) {
        (Balance::Hash(_), Some(key)) => rendezvous(&candidates, key),
        (Balance::LeastConnections, _) if n > 1 => {
            let a = (inputs.random[0] % n as u64) as usize;
            // A second, different backend.
            let b = (a + 1 + (inputs.random[1] % (n as u64 - 1)) as usize) % n;
            let (load_a, load_b) =
                ((inputs.in_flight)(candidates[a].address), (inputs.in_flight)(candidates[b].address));
            if load_b < load_a { b } else { a }
        }
        _ => (inputs.counter % n as u64) as usize,
    };
    Some(candidates[index])
}

/// Highest random weight: each backend scores `hash(key, backend)`, the highest wins, so a
/// backend leaving moves only the keys it had.
fn rendezvous(candidates: &[&EdgeBackend], key: &[u8]) -> usize {
    let mut best = (0, 0u64);
    for (i, backend) in candidates.iter().enumerate() {
        let mut data = Vec::with_capacity(key.len() + 19);
        data.extend_from_slice(key);
        data.push(0);
        data.extend_from_slice(backend.address.to_string().as_bytes());
        let score = siphash24(&HASH_KEY, &data);
        if i == 0 || score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::edge::{BackendState, HashOn};

    fn route(balance: Balance, states: &[BackendState]) -> Route {
        Route {
            id: "/a:0".into(),
            app: "/a".into(),
            port_index: 0,
            hosts: vec!["a.example".into()],
            path: None,
            strip_prefix: false,
            balance,
            redirect_to_https: false,
            service_port: None,
            backends: states
                .iter()
                .enumerate()
                .map(|(i, state)| EdgeBackend {
                    address: SocketAddr::from(([10, 0, 0, i as u8 + 1], 8000)),
                    task: format!("t{i}"),
                    state: *state,
                })
                .collect(),
        }
    }

    fn inputs<'a>(counter: u64, key: Option<&'a [u8]>, avoid: &'a dyn Fn(SocketAddr) -> bool) -> ChoiceInputs<'a> {
        ChoiceInputs { counter, random: [counter * 7, counter * 13 + 5], key, in_flight: &|_| 0, avoid }
    }

    use BackendState::{Active, Draining, Unhealthy};

    #[test]
    fn round_robin_visits_active_backends_evenly() {
        let r = route(Balance::RoundRobin, &[Active, Draining, Active, Unhealthy, Active]);
        let mut seen = BTreeMap::new();
        for counter in 0..300 {
            *seen.entry(choose(&r, &inputs(counter, None, &|_| false)).unwrap().task.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen, BTreeMap::from([("t0".into(), 100), ("t2".into(), 100), ("t4".into(), 100)]));
    }

    #[test]
    fn no_active_backend_no_choice_and_avoided_ones_only_as_a_last_resort() {
        assert!(choose(&route(Balance::RoundRobin, &[Draining, Unhealthy]), &inputs(0, None, &|_| false)).is_none());
        let r = route(Balance::RoundRobin, &[Active, Active]);
        let first = r.backends[0].address;
        for counter in 0..10 {
            assert_eq!(choose(&r, &inputs(counter, None, &|a| a == first)).unwrap().task, "t1");
        }
        assert!(choose(&r, &inputs(0, None, &|_| true)).is_some());
    }

    #[test]
    fn least_connections_prefers_the_less_busy_of_two() {
        let r = route(Balance::LeastConnections, &[Active, Active]);
        let busy = r.backends[0].address;
        for counter in 0..50 {
            let choice = choose(
                &r,
                &ChoiceInputs {
                    counter,
                    random: [counter, counter * 3],
                    key: None,
                    in_flight: &|a| if a == busy { 10 } else { 1 },
                    avoid: &|_| false,
                },
            );
            assert_eq!(choice.unwrap().task, "t1");
        }
    }

    #[test]
    fn hashing_without_a_key_falls_back_to_round_robin() {
        let r = route(Balance::Hash(HashOn::Header("x-user".into())), &[Active, Active]);
        let a = choose(&r, &inputs(0, None, &|_| false)).unwrap().task.clone();
        let b = choose(&r, &inputs(1, None, &|_| false)).unwrap().task.clone();
        assert_ne!(a, b);
    }

    proptest! {
        /// The same key reaches the same backend; removing a backend moves only its keys.
        #[test]
        fn rendezvous_is_stable_and_minimal(n in 2usize..12, removed in 0usize..12, keys in prop::collection::vec(any::<u64>(), 1..200)) {
            let removed = removed % n;
            let all = route(Balance::Hash(HashOn::ClientIp), &vec![Active; n]);
            let mut fewer = all.clone();
            fewer.backends[removed].state = Draining;
            for key in keys {
                let key = key.to_le_bytes();
                let before = choose(&all, &inputs(0, Some(&key), &|_| false)).unwrap();
                let again = choose(&all, &inputs(99, Some(&key), &|_| false)).unwrap();
                prop_assert_eq!(before, again);
                let after = choose(&fewer, &inputs(0, Some(&key), &|_| false)).unwrap();
                if before.task != all.backends[removed].task {
                    prop_assert_eq!(&before.task, &after.task);
                }
            }
        }

        /// Power of two choices never picks the busier of its two, and spreads when all are equal.
        #[test]
        fn power_of_two_never_picks_an_inactive_backend(states in prop::collection::vec(0u8..3, 1..10), r0 in any::<u64>(), r1 in any::<u64>()) {
            let states: Vec<BackendState> = states.into_iter().map(|s| [Active, Draining, Unhealthy][s as usize]).collect();
            let r = route(Balance::LeastConnections, &states);
            let choice = choose(&r, &ChoiceInputs { counter: 0, random: [r0, r1], key: None, in_flight: &|_| 0, avoid: &|_| false });
            match choice {
                Some(backend) => prop_assert_eq!(backend.state, Active),
                None => prop_assert!(!states.contains(&Active)),
            }
        }
    }
}
