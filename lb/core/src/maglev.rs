//! Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4), with weights.
//!
//! A table has `M` entries (`M` prime). Each backend has a preference list, a permutation of
//! `0..M` derived from its name; backends take turns claiming the next free entry of their own
//! list until the table is full. The kernel picks an entry per connection (at random for TCP,
//! by socket cookie for UDP), so a backend's share of the traffic is its share of the entries.
//!
//! **Preference lists.** The paper's lists are `(offset + j·skip) mod M` with `offset` and
//! `skip` from two hashes of the name. With the small tables Atoll uses (`M` = 1021 by
//! default) two backends of a service often draw the same `skip` (probability about
//! `N²/2M`: 4% of 10-backend services), and their lists are then shifts of one another: they
//! claim entries in lockstep, and one change anywhere cascades along the shared cycle. Measured
//! here, removing one backend then moved up to `1/N + 33%` of the table instead of about `1/N`.
//! So each list is instead a keyed pseudo-random permutation ([`Preferences`]): a 4-round
//! Feistel network over the smallest even power of two ≥ `M`, cycle-walked into `0..M`, its
//! round keys derived from the same two hashes. The claiming procedure is the paper's; the
//! measured worst case is `1/N + 3.8%` over 10,000 random backend sets (see the property tests).
//!
//! **Hashes.** The two hashes are SipHash-2-4 of the backend's name (its `address:port`) under
//! two fixed keys, [`OFFSET_KEY`] and [`SKIP_KEY`], and the Feistel round function is the
//! SplitMix64 finalizer: the same table on every node, in every run, for every Rust release
//! (implemented in this crate, SipHash checked against the reference vectors).
//!
//! **Order.** Backends are sorted by name before they take turns, so the order they are given
//! in does not matter.
//!
//! **Weights and what is guaranteed.** The paper's procedure gives each of `N` equal backends
//! `⌊M/N⌋` or `⌈M/N⌉` entries: never 1 entry or more away from its share `M/N`. Weights here
//! keep exactly that bound: each backend `i` is first given a quota `q_i`, its weighted share
//! `M·w_i/W` rounded by the largest-remainder method (the quotas sum to `M`, and
//! `|q_i − M·w_i/W| < 1`), then backends take turns in proportion to their weights (a backend
//! with half the largest weight takes a turn every second round, as the paper suggests, so
//! weighted backends still claim entries in preference order; with equal weights this is the
//! paper's procedure exactly) and each stops at its quota. So every backend's entry count is
//! **less than one entry away from its weighted share `M·w_i/W`**; its relative error is below
//! `1/(M·w_i/W)`, which is at most 1% whenever its share is at least 100 entries — for equal
//! weights, whenever `M ≥ 100·N`. Weight 0 means draining: the backend is left out of the table
//! (existing connections are not the table's business; new ones never pick it).
//!
//! **Disruption.** Adding or removing one backend moves about `1/N` of the entries: the ones the
//! backend gains or loses, plus a few others whose owner changes because preference lists
//! interleave differently (the property tests bound it by `1/N + 5%`).
//!
//! **Size.** `M` must be a prime, as configured everywhere Maglev is (the paper's lists need
//! it; these lists would not, but the configuration stays interchangeable).

use std::collections::BTreeSet;

use crate::siphash::siphash24;

/// SipHash key of the first hash of a backend's name (16 ASCII bytes; the paper's offset).
pub const OFFSET_KEY: [u8; 16] = *b"atoll-maglev-off";
/// SipHash key of the second hash (16 ASCII bytes; the paper's skip).
pub const SKIP_KEY: [u8; 16] = *b"atoll-maglev-skp";
/// The largest table size accepted: `2^17 − 1` (a prime, and Cilium's largest), 512 KiB per
/// table; larger tables cost kernel memory for no gain in balance below ~1,300 backends.
pub const MAX_MAGLEV_SIZE: u32 = 131_071;

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size {0} is not a prime")]
    NotPrime(u32),
    #[error("Maglev table size {size} is larger than the largest supported, {max}")]
    TooLarge { size: u32, max: u32 },
    #[error("no backend has a weight above 0")]
    NoActiveBackends,
    #[error("{backends} backends with a weight above 0 do not fit a Maglev table of {size} entries")]
    TooManyBackends { backends: usize, size: u32 },
    #[error("backend `{0}` is given twice")]
    DuplicateBackend(String),
}

/// A validated table size: a prime `2 ≤ M ≤` [`MAX_MAGLEV_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaglevSize(u32);

impl TryFrom<u32> for MaglevSize {
    type Error = MaglevError;

    fn try_from(size: u32) -> Result<MaglevSize, MaglevError> {
        MaglevSize::new(size)
    }
}

impl From<MaglevSize> for u32 {
    fn from(size: MaglevSize) -> u32 {
        size.0
    }
}

impl MaglevSize {
    pub fn new(size: u32) -> Result<MaglevSize, MaglevError> {
        if size > MAX_MAGLEV_SIZE {
            return Err(MaglevError::TooLarge { size, max: MAX_MAGLEV_SIZE });
        }
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        Ok(MaglevSize(size))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaglevSize {
    fn default() -> MaglevSize {
        MaglevSize(atoll_ebpf_common::DEFAULT_MAGLEV_SIZE)
    }
}

/// Trial division: sizes are at most [`MAX_MAGLEV_SIZE`], so at most ~180 divisions.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend as the table sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend<T> {
    /// The identity hashed into the preference list; the same backend must have the same name
    /// everywhere (Atoll uses `address:port`).
    pub name: String,
    /// Relative share; 0 = draining (not in the table).
    pub weight: u32,
    /// What the table's entries hold for this backend (Atoll: its backend id).
    pub value: T,
}

/// A backend's preference list: a pseudo-random permutation of `0..M` keyed by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preferences {
    size: u32,
    /// Bits of each Feistel half (the network permutes `0..4^half`).
    half: u32,
    keys: [u64; 4],
}

impl Preferences {
    pub fn new(name: &str, size: MaglevSize) -> Preferences {
        let h1 = siphash24(&OFFSET_KEY, name.as_bytes());
        let h2 = siphash24(&SKIP_KEY, name.as_bytes());
        // The smallest even number of bits that covers 0..M, so both halves have equal width and
        // cycle walking needs fewer than 4 steps on average (fewer than 2 for most M).
        let bits = (32 - (size.get() - 1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        let keys = core::array::from_fn(|r| mix64(h1 ^ (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ h2);
        Preferences { size: size.get(), half, keys }
    }

    /// The `j`-th preferred entry (`j < M`); distinct `j` give distinct entries.
    pub fn nth(&self, j: u32) -> u32 {
        // Cycle walking: the network permutes a slightly larger domain; following it from `j`
        // until the value falls inside 0..M permutes 0..M.
        let mut x = self.encrypt(u64::from(j));
        while x >= u64::from(self.size) {
            x = self.encrypt(x);
        }
        x as u32
    }

    fn encrypt(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut left, mut right) = (x >> self.half, x & mask);
        for key in self.keys {
            (left, right) = (right, left ^ (mix64(right ^ key) & mask));
        }
        (left << self.half) | right
    }
}

/// The SplitMix64 finalizer (Steele, Lea and Flood, 2014): a fast bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Each backend's number of entries: its weighted share `size·w/W` rounded by the largest
/// remainder method (ties to the smaller name), so the quotas sum to `size` and each is less
/// than 1 away from its share. `weights` must be sorted by name, all above 0.
fn quotas(size: u32, weights: &[(&str, u32)]) -> Vec<u32> {
    let total: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
    let m = u128::from(size);
    let mut quotas: Vec<u32> = weights.iter().map(|(_, w)| (m * u128::from(*w) / total) as u32).collect();
    let given: u32 = quotas.iter().sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    // Larger remainder first; the index (= name order) breaks ties, so the result depends on
    // the set of backends only.
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(m * u128::from(weights[i].1) % total), i));
    for &i in by_remainder.iter().take((size - given) as usize) {
        quotas[i] += 1;
    }
    quotas
}

/// Builds the lookup table: `size` entries, each the `value` of the backend that owns it.
/// Backends with weight 0 are left out; at least one must have a weight above 0, and there
/// may be no more of those than entries.
pub fn build<T: Copy>(size: MaglevSize, backends: &[MaglevBackend<T>]) -> Result<Vec<T>, MaglevError> {
    let mut names = BTreeSet::new();
    for backend in backends {
        if !names.insert(backend.name.as_str()) {
            return Err(MaglevError::DuplicateBackend(backend.name.clone()));
        }
    }
    let mut active: Vec<&MaglevBackend<T>> = backends.iter().filter(|b| b.weight > 0).collect();
    if active.is_empty() {
        return Err(MaglevError::NoActiveBackends);
    }
    let m = size.get();
    if active.len() > m as usize {
        return Err(MaglevError::TooManyBackends { backends: active.len(), size: m });
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));

    let weights: Vec<(&str, u32)> = active.iter().map(|b| (b.name.as_str(), b.weight)).collect();
    let quotas = quotas(m, &weights);
    let w_max = u64::from(weights.iter().map(|(_, w)| *w).max().expect("at least one backend"));
    let lists: Vec<Preferences> = active.iter().map(|b| Preferences::new(&b.name, size)).collect();

    let n = active.len();
    let mut owner: Vec<Option<usize>> = vec![None; m as usize];
    let mut next = vec![0u32; n];
    let mut taken = vec![0u32; n];
    let mut credit = vec![0u64; n];
    let mut filled = 0u32;
    // Rounds of turns: each round a backend earns its weight in credit and takes a turn per
    // `w_max` of credit (so with equal weights every backend takes one turn per round: the
    // paper's procedure exactly), until it has its quota.
    while filled < m {
        let mut took = false;
        for i in 0..n {
            if taken[i] == quotas[i] {
                continue;
            }
            credit[i] += u64::from(weights[i].1);
            if credit[i] < w_max {
                continue;
            }
            credit[i] -= w_max;
            // The next free entry in i's preference list. One exists (filled < M, and the list
            // is a permutation of all entries), and each entry is passed over at most once.
            let slot = loop {
                let candidate = lists[i].nth(next[i]) as usize;
                next[i] += 1;
                if owner[candidate].is_none() {
                    break candidate;
                }
            };
            owner[slot] = Some(i);
            taken[i] += 1;
            filled += 1;
            took = true;
        }
        if !took && filled < m {
            // Only light backends are left (the heavy ones have their quotas): skip the rounds
            // in which none of them would take a turn, rather than loop up to w_max/w times.
            let unfinished = (0..n).filter(|&i| taken[i] < quotas[i]);
            let idle = unfinished
                .clone()
                .map(|i| (w_max - credit[i]).div_ceil(u64::from(weights[i].1)) - 1)
                .min()
                .expect("the quotas sum to M, so someone is unfinished");
            for i in unfinished {
                credit[i] += idle * u64::from(weights[i].1);
            }
        }
    }
    Ok(owner.into_iter().map(|i| active[i.expect("every entry is filled")].value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<MaglevBackend<usize>> {
        (0..n).map(|i| MaglevBackend { name: format!("198.18.0.{i}:80"), weight: 1, value: i }).collect()
    }

    #[test]
    fn sizes_must_be_prime_and_bounded() {
        assert_eq!(MaglevSize::new(1021).unwrap().get(), 1021);
        assert_eq!(MaglevSize::default().get(), 1021);
        assert_eq!(MaglevSize::new(1000), Err(MaglevError::NotPrime(1000)));
        assert_eq!(MaglevSize::new(0), Err(MaglevError::NotPrime(0)));
        assert_eq!(MaglevSize::new(1), Err(MaglevError::NotPrime(1)));
        assert!(MaglevSize::new(2).is_ok());
        assert!(MaglevSize::new(MAX_MAGLEV_SIZE).is_ok());
        assert_eq!(MaglevSize::new(262_139), Err(MaglevError::TooLarge { size: 262_139, max: MAX_MAGLEV_SIZE }));
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537) && !is_prime(65_535));
    }

    #[test]
    fn a_fixed_input_gives_a_fixed_table() {
        // Pinned so that a change of hash or procedure (which would make nodes of different
        // versions disagree) is noticed. Recompute deliberately if the procedure must change.
        let size = MaglevSize::new(13).unwrap();
        let table = build(size, &backends(3)).unwrap();
        let counts: Vec<usize> = (0..3).map(|b| table.iter().filter(|&&v| v == b).count()).collect();
        assert_eq!(counts.iter().sum::<usize>(), 13);
        assert!(counts.iter().all(|&c| c == 4 || c == 5), "{counts:?}");
        let preferences = Preferences::new("198.18.0.1:80", MaglevSize::default());
        let first: Vec<u32> = (0..6).map(|j| preferences.nth(j)).collect();
        assert_eq!(first, PINNED_PREFERENCES);
        assert_eq!(table, PINNED_TABLE);
    }

    const PINNED_PREFERENCES: [u32; 6] = [90, 884, 783, 136, 927, 228];
    // Both also computed by an independent implementation of this procedure.
    const PINNED_TABLE: [usize; 13] = [1, 1, 1, 1, 2, 2, 0, 2, 0, 0, 2, 0, 0];

    #[test]
    fn draining_backends_are_left_out_and_errors_are_precise() {
        let size = MaglevSize::new(7).unwrap();
        let mut list = backends(3);
        list[1].weight = 0;
        let table = build(size, &list).unwrap();
        assert!(!table.contains(&1));
        assert!(table.contains(&0) && table.contains(&2));
        for backend in &mut list {
            backend.weight = 0;
        }
        assert_eq!(build(size, &list), Err(MaglevError::NoActiveBackends));
        assert_eq!(build::<usize>(size, &[]), Err(MaglevError::NoActiveBackends));
        assert_eq!(build(size, &backends(8)), Err(MaglevError::TooManyBackends { backends: 8, size: 7 }));
        let mut twice = backends(2);
        twice[1].name = twice[0].name.clone();
        assert_eq!(build(size, &twice), Err(MaglevError::DuplicateBackend("198.18.0.0:80".into())));
    }

    #[test]
    fn weights_split_the_table_by_share() {
        let size = MaglevSize::default();
        let mut list = backends(3);
        list[0].weight = 1;
        list[1].weight = 2;
        list[2].weight = 7;
        let table = build(size, &list).unwrap();
        let counts: Vec<usize> = (0..3).map(|b| table.iter().filter(|&&v| v == b).count()).collect();
        // 1021 × (0.1, 0.2, 0.7) = (102.1, 204.2, 714.7): the remainder slot goes to the largest
        // fraction.
        assert_eq!(counts, [102, 204, 715]);
    }

    #[test]
    fn a_huge_weight_ratio_still_terminates_quickly() {
        let size = MaglevSize::default();
        let mut list = backends(2);
        list[0].weight = u32::MAX;
        list[1].weight = 1;
        let table = build(size, &list).unwrap();
        assert_eq!(table.iter().filter(|&&v| v == 0).count(), 1021);
    }
}
