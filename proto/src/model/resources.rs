//! Resource vectors: named scalars (`cpus`, `mem`, `disk`, …) and named port-like ranges.
//!
//! Scalars are kept in thousandths, as Mesos rounds them to three decimals, so that adding
//! and subtracting offers never drifts and "contains" is exact.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a resource string or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource `{item}`: expected NAME:VALUE")]
    MissingColon { item: String },
    #[error("resource `{name}`: empty name")]
    EmptyName { name: String },
    #[error("resource `{name}`: `{value}` is not a non-negative number")]
    BadScalar { name: String, value: String },
    #[error("resource `{name}`: `{value}` is not a range list like [31000-32000,33000-33010]")]
    BadRanges { name: String, value: String },
    #[error("resource `{name}`: range {begin}-{end} ends before it begins")]
    InvertedRange { name: String, begin: u64, end: u64 },
    #[error("resource `{name}` given twice")]
    Duplicate { name: String },
    #[error("resource `{name}` is a scalar in one place and ranges in another")]
    KindMismatch { name: String },
}

/// A non-negative amount with three decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(i64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);

    /// Rounds to the nearest thousandth, as Mesos does.
    pub fn from_f64(value: f64) -> Scalar {
        Scalar((value * 1000.0).round() as i64)
    }

    pub fn from_milli(milli: i64) -> Scalar {
        Scalar(milli)
    }

    pub fn milli(self) -> i64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = (self.0 % 1000).abs();
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// A set of u64 values kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new() -> Ranges {
        Ranges(Vec::new())
    }

    /// Builds a canonical set from any ranges; inverted ranges are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
        let mut set = Ranges::new();
        for (begin, end) in pairs {
            if begin <= end {
                set.insert(begin, end);
            }
        }
        set
    }

    pub fn single(value: u64) -> Ranges {
        Ranges(vec![(value, value)])
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(b, e)| (e - b).saturating_add(1)).fold(0u64, u64::saturating_add)
    }

    pub fn contains_value(&self, value: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= value && value <= e)
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other.0.iter().all(|&(ob, oe)| self.0.iter().any(|&(b, e)| b <= ob && oe <= e))
    }

    /// Every value, lowest first.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }

    pub fn insert(&mut self, begin: u64, end: u64) {
        let (mut begin, mut end) = (begin, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(b, e) in &self.0 {
            let touches = b <= end.saturating_add(1) && begin <= e.saturating_add(1);
            if touches {
                begin = begin.min(b);
                end = end.max(e);
            } else {
                kept.push((b, e));
            }
        }
        kept.push((begin, end));
        kept.sort_unstable();
        self.0 = kept;
    }

    pub fn union(&mut self, other: &Ranges) {
        for &(b, e) in &other.0 {
            self.insert(b, e);
        }
    }

    /// Removes every value of `other` that is present.
    pub fn remove(&mut self, other: &Ranges) {
        for &(rb, re) in &other.0 {
            let mut kept = Vec::with_capacity(self.0.len() + 1);
            for &(b, e) in &self.0 {
                if re < b || e < rb {
                    kept.push((b, e));
                    continue;
                }
                if b < rb {
                    kept.push((b, rb - 1));
                }
                if re < e {
                    kept.push((re + 1, e));
                }
            }
            self.0 = kept;
        }
    }

    /// The lowest `count` values, if there are that many.
    pub fn take_lowest(&self, count: u64) -> Option<Ranges> {
        let mut taken = Ranges::new();
        let mut left = count;
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let here = (e - b + 1).min(left);
            taken.insert(b, b + here - 1);
            left -= here;
        }
        (left == 0).then_some(taken)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// One named resource's amount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourceValue {
    Scalar(Scalar),
    Ranges(Ranges),
}

impl ResourceValue {
    fn is_empty(&self) -> bool {
        match self {
            ResourceValue::Scalar(s) => s.0 <= 0,
            ResourceValue::Ranges(r) => r.is_empty(),
        }
    }
}

/// A resource vector. Empty amounts are never stored, so equal vectors compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources(BTreeMap<String, ResourceValue>);

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    pub fn with_scalar(mut self, name: &str, value: f64) -> Resources {
        self.add_scalar(name, Scalar::from_f64(value));
        self
    }

    pub fn with_ranges(mut self, name: &str, pairs: impl IntoIterator<Item = (u64, u64)>) -> Resources {
        self.add_ranges(name, &Ranges::from_pairs(pairs));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ResourceValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&ResourceValue> {
        self.0.get(name)
    }

    /// The scalar named, zero when absent or not a scalar.
    pub fn scalar(&self, name: &str) -> Scalar {
        match self.0.get(name) {
            Some(ResourceValue::Scalar(s)) => *s,
            _ => Scalar::ZERO,
        }
    }

    /// The ranges named, empty when absent or not ranges.
    pub fn ranges(&self, name: &str) -> Ranges {
        match self.0.get(name) {
            Some(ResourceValue::Ranges(r)) => r.clone(),
            _ => Ranges::new(),
        }
    }

    pub fn add_scalar(&mut self, name: &str, amount: Scalar) {
        if amount.0 <= 0 {
            return;
        }
        match self.0.get_mut(name) {
            Some(ResourceValue::Scalar(s)) => s.0 += amount.0,
            Some(ResourceValue::Ranges(_)) => {}
            None => {
                self.0.insert(name.to_owned(), ResourceValue::Scalar(amount));
            }
        }
    }

    pub fn add_ranges(&mut self, name: &str, ranges: &Ranges) {
        if ranges.is_empty() {
            return;
        }
        match self.0.get_mut(name) {
            Some(ResourceValue::Ranges(r)) => r.union(ranges),
            Some(ResourceValue::Scalar(_)) => {}
            None => {
                self.0.insert(name.to_owned(), ResourceValue::Ranges(ranges.clone()));
            }
        }
    }

    /// Adds every amount of `other`. A name that is a scalar here and ranges there keeps
    /// this side's kind; [`Resources::check_kinds`] refuses such input at the edges.
    pub fn add(&mut self, other: &Resources) {
        for (name, value) in &other.0 {
            match value {
                ResourceValue::Scalar(s) => self.add_scalar(name, *s),
                ResourceValue::Ranges(r) => self.add_ranges(name, r),
            }
        }
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        let mut sum = self.clone();
        sum.add(other);
        sum
    }

    /// Removes `other`, flooring scalars at zero and dropping absent range values.
    pub fn subtract(&mut self, other: &Resources) {
        for (name, value) in &other.0 {
            let Some(mine) = self.0.get_mut(name) else {
                continue;
            };
            match (mine, value) {
                (ResourceValue::Scalar(a), ResourceValue::Scalar(b)) => a.0 = (a.0 - b.0).max(0),
                (ResourceValue::Ranges(a), ResourceValue::Ranges(b)) => a.remove(b),
                _ => {}
            }
            if self.0.get(name).is_some_and(ResourceValue::is_empty) {
                self.0.remove(name);
            }
        }
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        let mut rest = self.clone();
        rest.subtract(other);
        rest
    }

    /// Whether every amount of `other` is available here.
    pub fn contains(&self, other: &Resources) -> bool {
        other.0.iter().all(|(name, value)| match (self.0.get(name), value) {
            (Some(ResourceValue::Scalar(a)), ResourceValue::Scalar(b)) => a.0 >= b.0,
            (Some(ResourceValue::Ranges(a)), ResourceValue::Ranges(b)) => a.contains(b),
            _ => value.is_empty(),
        })
    }

    /// Refuses a name used as a scalar on one side and as ranges on the other.
    pub fn check_kinds(&self, other: &Resources) -> Result<(), ResourceError> {
        for (name, value) in &other.0 {
            if let Some(mine) = self.0.get(name) {
                let same = matches!(
                    (mine, value),
                    (ResourceValue::Scalar(_), ResourceValue::Scalar(_))
                        | (ResourceValue::Ranges(_), ResourceValue::Ranges(_))
                );
                if !same {
                    return Err(ResourceError::KindMismatch { name: name.clone() });
                }
            }
        }
        Ok(())
    }

    /// Only the scalar parts (what DRF shares are computed over).
    pub fn scalars(&self) -> impl Iterator<Item = (&str, Scalar)> {
        self.0.iter().filter_map(|(k, v)| match v {
            ResourceValue::Scalar(s) => Some((k.as_str(), *s)),
            ResourceValue::Ranges(_) => None,
        })
    }
}

impl fmt::Display for Resources {
    /// The Mesos `--resources` form: `cpus:2;mem:2048;ports:[31000-32000]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            match value {
                ResourceValue::Scalar(s) => write!(f, "{name}:{s}")?,
                ResourceValue::Ranges(r) => write!(f, "{name}:{r}")?,
            }
        }
        Ok(())
    }
}

impl FromStr for Resources {
    type Err = ResourceError;

    /// Parses the Mesos `--resources` form: `cpus:2;mem:2048;ports:[31000-32000,33000-33010]`.
    fn from_str(text: &str) -> Result<Resources, ResourceError> {
        let mut resources = Resources::new();
        let mut seen = std::collections::BTreeSet::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) =
                item.split_once(':').ok_or_else(|| ResourceError::MissingColon { item: item.to_owned() })?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                return Err(ResourceError::EmptyName { name: item.to_owned() });
            }
            if !seen.insert(name.to_owned()) {
                return Err(ResourceError::Duplicate { name: name.to_owned() });
            }
            if value.starts_with('[') {
                let ranges = parse_ranges(name, value)?;
                resources.add_ranges(name, &ranges);
            } else {
                let amount: f64 = value
                    .parse()
                    .map_err(|_| ResourceError::BadScalar { name: name.to_owned(), value: value.to_owned() })?;
                if !amount.is_finite() || amount < 0.0 {
                    return Err(ResourceError::BadScalar { name: name.to_owned(), value: value.to_owned() });
                }
                resources.add_scalar(name, Scalar::from_f64(amount));
            }
        }
        Ok(resources)
    }
}

fn parse_ranges(name: &str, value: &str) -> Result<Ranges, ResourceError> {
    let bad = || ResourceError::BadRanges { name: name.to_owned(), value: value.to_owned() };
    let inner = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).ok_or_else(bad)?;
    let mut ranges = Ranges::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (b, e) = part.split_once('-').unwrap_or((part, part));
        let begin: u64 = b.trim().parse().map_err(|_| bad())?;
        let end: u64 = e.trim().parse().map_err(|_| bad())?;
        if end < begin {
            return Err(ResourceError::InvertedRange { name: name.to_owned(), begin, end });
        }
        ranges.insert(begin, end);
    }
    Ok(ranges)
}

/// JSON form: `{"cpus": 2.0, "mem": 2048.0, "ports": [[31000, 32000]]}`.
impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            match value {
                ResourceValue::Scalar(s) => map.serialize_entry(name, &s.as_f64())?,
                ResourceValue::Ranges(r) => map.serialize_entry(name, &r.0)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Resources, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Amount {
            Scalar(f64),
            Ranges(Vec<(u64, u64)>),
        }
        let raw = BTreeMap::<String, Amount>::deserialize(deserializer)?;
        let mut resources = Resources::new();
        for (name, amount) in raw {
            match amount {
                Amount::Scalar(v) if v.is_finite() && v >= 0.0 => resources.add_scalar(&name, Scalar::from_f64(v)),
                Amount::Scalar(v) => {
                    return Err(D::Error::custom(format!("resource `{name}`: {v} is not a non-negative number")));
                }
                Amount::Ranges(pairs) => {
                    if let Some((b, e)) = pairs.iter().find(|(b, e)| e < b) {
                        return Err(D::Error::custom(format!(
                            "resource `{name}`: range {b}-{e} ends before it begins"
                        )));
                    }
                    resources.add_ranges(&name, &Ranges::from_pairs(pairs));
                }
            }
        }
        Ok(resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_mesos_resource_strings() {
        let r: Resources = "cpus:2;mem:2048;disk:10000;ports:[31000-32000]".parse().unwrap();
        assert_eq!(r.scalar("cpus"), Scalar::from_f64(2.0));
        assert_eq!(r.ranges("ports").len(), 1001);
        assert_eq!(r.to_string(), "cpus:2;disk:10000;mem:2048;ports:[31000-32000]");
        let r: Resources = "cpus:0.25; ports:[1-2, 4-4,3-3]".parse().unwrap();
        assert_eq!(r.to_string(), "cpus:0.25;ports:[1-4]");
    }

    #[test]
    fn refuses_bad_resource_strings_naming_the_part() {
        let err = "cpus:two".parse::<Resources>().unwrap_err();
        assert!(err.to_string().contains("cpus"), "{err}");
        assert!(matches!("cpus".parse::<Resources>(), Err(ResourceError::MissingColon { .. })));
        assert!(matches!("ports:[5-3]".parse::<Resources>(), Err(ResourceError::InvertedRange { .. })));
        assert!(matches!("cpus:1;cpus:2".parse::<Resources>(), Err(ResourceError::Duplicate { .. })));
        assert!(matches!("mem:-1".parse::<Resources>(), Err(ResourceError::BadScalar { .. })));
        assert!(matches!("ports:[a-b]".parse::<Resources>(), Err(ResourceError::BadRanges { .. })));
    }

    #[test]
    fn json_round_trip() {
        let r: Resources = "cpus:1.5;mem:64;ports:[10-20,30-30]".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"cpus":1.5,"mem":64.0,"ports":[[10,20],[30,30]]}"#);
        assert_eq!(serde_json::from_str::<Resources>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Resources>(r#"{"ports":[[5,3]]}"#).is_err());
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (0i64..5000, 0i64..5000, proptest::collection::vec((0u64..200, 0u64..20), 0..5)).prop_map(|(c, m, rs)| {
            let mut r = Resources::new();
            r.add_scalar("cpus", Scalar::from_milli(c));
            r.add_scalar("mem", Scalar::from_milli(m));
            r.add_ranges("ports", &Ranges::from_pairs(rs.into_iter().map(|(b, len)| (b, b + len))));
            r
        })
    }

    proptest! {
        #[test]
        fn add_then_subtract_restores(a in arb_resources(), b in arb_resources()) {
            let sum = a.plus(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            // Ranges may overlap, so subtracting b can remove shared values; scalars are exact.
            let back = sum.minus(&b);
            prop_assert_eq!(back.scalar("cpus"), a.scalar("cpus"));
            prop_assert_eq!(back.scalar("mem"), a.scalar("mem"));
        }

        #[test]
        fn ranges_stay_canonical(pairs in proptest::collection::vec((0u64..100, 0u64..10), 0..10),
                                 cut in proptest::collection::vec((0u64..100, 0u64..10), 0..5)) {
            let mut set = Ranges::from_pairs(pairs.iter().map(|&(b, l)| (b, b + l)));
            let removed = Ranges::from_pairs(cut.iter().map(|&(b, l)| (b, b + l)));
            let before: Vec<u64> = set.values().collect();
            set.remove(&removed);
            for w in set.pairs().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "not canonical: {:?}", set);
            }
            let after: Vec<u64> = set.values().collect();
            let expected: Vec<u64> = before.into_iter().filter(|v| !removed.contains_value(*v)).collect();
            prop_assert_eq!(after, expected);
        }

        #[test]
        fn display_parse_round_trip(r in arb_resources()) {
            let text = r.to_string();
            prop_assert_eq!(text.parse::<Resources>().unwrap(), r);
        }
    }
}
