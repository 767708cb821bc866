//! Placement constraints, with Marathon's semantics.
//!
//! A definition writes constraints as string arrays (`["rack", "GROUP_BY", "3"]`); they are
//! parsed once into [`Constraint`]s. Each constrains one *field* of an agent: `hostname`, or
//! an agent attribute (its value as text: `r1`, `3`, `[1-4]`). Whether a new task may go on an
//! agent depends on that agent and on where the app's live tasks already are:
//!
//! - `UNIQUE`: no live task of the app has the agent's value.
//! - `CLUSTER v`: the agent's value is `v`.
//! - `GROUP_BY [n]`: spread evenly over the values seen: a value not yet used is always fine,
//!   a used one only if it has the fewest tasks, and (with `n`) only once `n` values are used.
//! - `LIKE re` / `UNLIKE re`: the value does / does not fully match the regular expression.
//! - `MAX_PER n`: fewer than `n` live tasks already have the agent's value.
//!
//! An agent without the attribute fails every operator except `UNLIKE` (Marathon's rule: it
//! cannot be unlike something it does not have).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use atoll_proto::model::Attributes;
use regex::{Regex, RegexBuilder};

/// Where a task is (or would be): the agent's hostname and attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub hostname: String,
    pub attributes: Attributes,
}

/// What a constraint looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Hostname,
    Attribute(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Hostname => f.write_str("hostname"),
            Field::Attribute(name) => f.write_str(name),
        }
    }
}

/// A regular expression matched against the whole value.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    anchored: Regex,
}

impl Pattern {
    // Bounded so that a definition cannot make the framework build a huge automaton.
    const SIZE_LIMIT: usize = 1 << 20;

    pub fn new(source: &str) -> Result<Pattern, String> {
        let anchored = RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map_err(|e| regex_reason(&e))?;
        Ok(Pattern { source: source.to_owned(), anchored })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_full_match(&self, text: &str) -> bool {
        self.anchored.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

// regex errors render as several lines with a caret diagram; one line reads better in an API
// error and in a log.
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim().to_owned())
}

/// A constraint operator with its value.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    Unique,
    Cluster(String),
    /// The minimum number of groups, if given.
    GroupBy(Option<u32>),
    Like(Pattern),
    Unlike(Pattern),
    MaxPer(u32),
}

impl Operator {
    pub fn name(&self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster(_) => "CLUSTER",
            Operator::GroupBy(_) => "GROUP_BY",
            Operator::Like(_) => "LIKE",
            Operator::Unlike(_) => "UNLIKE",
            Operator::MaxPer(_) => "MAX_PER",
        }
    }
}

/// Why a constraint array was refused. [`ConstraintError::element`] says which element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("a constraint is [field, operator] or [field, operator, value]")]
    Shape,
    #[error("the field must be hostname or an agent attribute name, not empty")]
    EmptyField,
    #[error("unknown operator `{0}`: use UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE or MAX_PER")]
    UnknownOperator(String),
    #[error("{0} takes no value")]
    UnexpectedValue(&'static str),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{operator} needs a positive integer, not `{value}`")]
    NotPositive { operator: &'static str, value: String },
    #[error("`{pattern}` is not a valid regular expression: {reason}")]
    BadPattern { pattern: String, reason: String },
}

impl ConstraintError {
    /// The index of the offending element in the constraint array (`None`: the whole array).
    pub fn element(&self) -> Option<usize> {
        match self {
            ConstraintError::Shape | ConstraintError::MissingValue(_) => None,
            ConstraintError::EmptyField => Some(0),
            ConstraintError::UnknownOperator(_) => Some(1),
            ConstraintError::UnexpectedValue(_)
            | ConstraintError::NotPositive { .. }
            | ConstraintError::BadPattern { .. } => Some(2),
        }
    }
}

/// One placement constraint.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub field: Field,
    pub op: Operator,
}

impl Constraint {
    /// Parses `[field, operator]` or `[field, operator, value]`. Operators are taken in any
    /// case; `@hostname` (Marathon 1.5+) is `hostname`.
    pub fn parse(parts: &[String]) -> Result<Constraint, ConstraintError> {
        let (field, operator, value) = match parts {
            [field, operator] => (field, operator, None),
            [field, operator, value] => (field, operator, Some(value.as_str())),
            _ => return Err(ConstraintError::Shape),
        };
        let field = match field.trim() {
            "" => return Err(ConstraintError::EmptyField),
            "hostname" | "@hostname" => Field::Hostname,
            name => Field::Attribute(name.to_owned()),
        };
        let op = match (operator.trim().to_ascii_uppercase().as_str(), value) {
            ("UNIQUE", None) => Operator::Unique,
            ("UNIQUE", Some(_)) => return Err(ConstraintError::UnexpectedValue("UNIQUE")),
            ("CLUSTER", Some(v)) if !v.is_empty() => Operator::Cluster(v.to_owned()),
            ("CLUSTER", _) => return Err(ConstraintError::MissingValue("CLUSTER")),
            ("GROUP_BY", None) => Operator::GroupBy(None),
            ("GROUP_BY", Some(v)) => Operator::GroupBy(Some(positive("GROUP_BY", v)?)),
            ("LIKE", Some(v)) => Operator::Like(pattern(v)?),
            ("UNLIKE", Some(v)) => Operator::Unlike(pattern(v)?),
            ("MAX_PER", Some(v)) => Operator::MaxPer(positive("MAX_PER", v)?),
            ("LIKE", None) => return Err(ConstraintError::MissingValue("LIKE")),
            ("UNLIKE", None) => return Err(ConstraintError::MissingValue("UNLIKE")),
            ("MAX_PER", None) => return Err(ConstraintError::MissingValue("MAX_PER")),
            _ => return Err(ConstraintError::UnknownOperator(operator.clone())),
        };
        Ok(Constraint { field, op })
    }

    /// Parses every constraint of a definition; the errors carry the index of their constraint.
    pub fn parse_all(raw: &[Vec<String>]) -> Result<Vec<Constraint>, Vec<(usize, ConstraintError)>> {
        let mut parsed = Vec::with_capacity(raw.len());
        let mut errors = Vec::new();
        for (i, parts) in raw.iter().enumerate() {
            match Constraint::parse(parts) {
                Ok(c) => parsed.push(c),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() { Ok(parsed) } else { Err(errors) }
    }

    fn value_of<'a>(&self, placement: &'a Placement) -> Option<Cow<'a, str>> {
        match &self.field {
            Field::Hostname => Some(Cow::Borrowed(placement.hostname.as_str())),
            Field::Attribute(name) => placement.attributes.0.get(name).map(|v| Cow::Owned(v.to_string())),
        }
    }

    /// Why a new task cannot go on `agent` under this constraint, given where the app's live
    /// tasks are. `None`: it may.
    pub fn problem(&self, agent: &Placement, placed: &[Placement]) -> Option<String> {
        let host = &agent.hostname;
        let Some(value) = self.value_of(agent) else {
            return match self.op {
                Operator::Unlike(_) => None,
                _ => Some(format!("constraint {self} not met on {host} (it has no attribute {})", self.field)),
            };
        };
        let count_with = |wanted: &str| placed.iter().filter(|p| self.value_of(p).as_deref() == Some(wanted)).count();
        match &self.op {
            Operator::Unique => {
                if count_with(&value) == 0 {
                    return None;
                }
                Some(match self.field {
                    Field::Hostname => format!("constraint {self} unsatisfiable on {host}"),
                    Field::Attribute(_) => {
                        format!("constraint {self} unsatisfiable on {host} ({} {value} is taken)", self.field)
                    }
                })
            }
            Operator::Cluster(wanted) => {
                (*value != **wanted).then(|| format!("constraint {self} not met ({} is {value})", self.field))
            }
            Operator::Like(pattern) => (!pattern.is_full_match(&value))
                .then(|| format!("constraint {self} not met ({} is {value})", self.field)),
            Operator::Unlike(pattern) => {
                pattern.is_full_match(&value).then(|| format!("constraint {self} not met ({} is {value})", self.field))
            }
            Operator::MaxPer(limit) => {
                let here = count_with(&value);
                (here >= *limit as usize)
                    .then(|| format!("constraint {self} not met ({} {value} already has {here} tasks)", self.field))
            }
            Operator::GroupBy(minimum) => self.group_by_problem(&value, host, minimum.unwrap_or(0), placed),
        }
    }

    // Marathon's rule: a value without tasks is always welcome; a used value only when at
    // least `minimum` values are in use and it is (one of) the least used.
    fn group_by_problem(&self, value: &str, host: &str, minimum: u32, placed: &[Placement]) -> Option<String> {
        let mut groups: BTreeMap<Cow<'_, str>, usize> = BTreeMap::new();
        for p in placed {
            if let Some(v) = self.value_of(p) {
                *groups.entry(v).or_default() += 1;
            }
        }
        let here = *groups.get(value)?;
        let least = groups.values().copied().min().unwrap_or(0);
        if groups.len() < minimum as usize {
            return Some(format!(
                "constraint {self} not met on {host} ({} {value} is in use; tasks are spread over {} of at least {minimum} {} values)",
                self.field,
                groups.len(),
                self.field
            ));
        }
        (here > least).then(|| {
            format!(
                "constraint {self} not met on {host} ({} {value} has {here} tasks, the least used has {least})",
                self.field
            )
        })
    }
}

impl fmt::Display for Constraint {
    /// `UNIQUE hostname`, `CLUSTER rack:r1`, `GROUP_BY rack:3`, `LIKE rack:r[12]`, `MAX_PER rack:2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.op.name();
        let field = &self.field;
        match &self.op {
            Operator::Unique | Operator::GroupBy(None) => write!(f, "{name} {field}"),
            Operator::Cluster(v) => write!(f, "{name} {field}:{v}"),
            Operator::GroupBy(Some(n)) | Operator::MaxPer(n) => write!(f, "{name} {field}:{n}"),
            Operator::Like(p) | Operator::Unlike(p) => write!(f, "{name} {field}:{}", p.as_str()),
        }
    }
}

fn positive(operator: &'static str, value: &str) -> Result<u32, ConstraintError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConstraintError::NotPositive { operator, value: value.to_owned() }),
    }
}

fn pattern(value: &str) -> Result<Pattern, ConstraintError> {
    Pattern::new(value).map_err(|reason| ConstraintError::BadPattern { pattern: value.to_owned(), reason })
}

/// Why a new task of this app cannot go on this agent, given where its live tasks already
/// run (the first constraint that refuses it). `None`: it may.
pub fn placement_problem(constraints: &[Constraint], agent: &Placement, placed: &[Placement]) -> Option<String> {
    constraints.iter().find_map(|c| c.problem(agent, placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(parts: &[&str]) -> Constraint {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn err(parts: &[&str]) -> ConstraintError {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err()
    }

    fn at(host: &str, attributes: &str) -> Placement {
        Placement { hostname: host.into(), attributes: attributes.parse().unwrap() }
    }

    #[test]
    fn parses_marathon_constraints() {
        assert_eq!(c(&["hostname", "UNIQUE"]), Constraint { field: Field::Hostname, op: Operator::Unique });
        assert_eq!(c(&["@hostname", "unique"]).field, Field::Hostname);
        assert_eq!(c(&["rack", "GROUP_BY"]).op, Operator::GroupBy(None));
        assert_eq!(c(&["rack", "GROUP_BY", "3"]).op, Operator::GroupBy(Some(3)));
        assert_eq!(c(&["rack", "MAX_PER", "2"]).op, Operator::MaxPer(2));
        assert_eq!(c(&["rack", "CLUSTER", "r1"]).to_string(), "CLUSTER rack:r1");
        assert_eq!(c(&["rack", "LIKE", "r[12]"]).to_string(), "LIKE rack:r[12]");
    }

    #[test]
    fn refuses_malformed_constraints_naming_the_element() {
        assert_eq!(err(&["hostname"]), ConstraintError::Shape);
        assert_eq!(err(&["a", "UNIQUE", "x", "y"]), ConstraintError::Shape);
        assert_eq!(err(&["", "UNIQUE"]).element(), Some(0));
        assert_eq!(err(&["rack", "NEAR"]), ConstraintError::UnknownOperator("NEAR".into()));
        assert_eq!(err(&["rack", "UNIQUE", "x"]).element(), Some(2));
        assert_eq!(err(&["rack", "CLUSTER"]), ConstraintError::MissingValue("CLUSTER"));
        assert_eq!(err(&["rack", "CLUSTER", ""]), ConstraintError::MissingValue("CLUSTER"));
        assert!(matches!(err(&["rack", "GROUP_BY", "0"]), ConstraintError::NotPositive { .. }));
        assert!(matches!(err(&["rack", "MAX_PER", "-1"]), ConstraintError::NotPositive { .. }));
        assert!(matches!(err(&["rack", "MAX_PER"]), ConstraintError::MissingValue(_)));
        let bad = err(&["rack", "LIKE", "r[1"]);
        assert_eq!(bad.element(), Some(2));
        assert!(!bad.to_string().contains('\n'), "{bad}");
        assert!(bad.to_string().contains("r[1"), "{bad}");
    }

    #[test]
    fn unique_hostname_and_attribute() {
        let unique = [c(&["hostname", "UNIQUE"])];
        let placed = [at("node-1", "")];
        assert_eq!(
            placement_problem(&unique, &at("node-1", ""), &placed).as_deref(),
            Some("constraint UNIQUE hostname unsatisfiable on node-1")
        );
        assert_eq!(placement_problem(&unique, &at("node-2", ""), &placed), None);

        let rack = [c(&["rack", "UNIQUE"])];
        let placed = [at("a", "rack:r1")];
        assert!(placement_problem(&rack, &at("b", "rack:r1"), &placed).unwrap().contains("rack r1 is taken"));
        assert_eq!(placement_problem(&rack, &at("b", "rack:r2"), &placed), None);
        assert!(placement_problem(&rack, &at("b", ""), &placed).unwrap().contains("has no attribute rack"));
    }

    #[test]
    fn cluster_like_unlike() {
        let cluster = [c(&["rack", "CLUSTER", "r1"])];
        assert_eq!(placement_problem(&cluster, &at("a", "rack:r1"), &[]), None);
        assert_eq!(
            placement_problem(&cluster, &at("a", "rack:r2"), &[]).as_deref(),
            Some("constraint CLUSTER rack:r1 not met (rack is r2)")
        );
        let host = [c(&["hostname", "CLUSTER", "node-1"])];
        assert!(placement_problem(&host, &at("node-2", ""), &[]).is_some());

        let like = [c(&["rack", "LIKE", "r[12]"])];
        assert_eq!(placement_problem(&like, &at("a", "rack:r2"), &[]), None);
        // Full match: `r1x` is not `r[12]`.
        assert!(placement_problem(&like, &at("a", "rack:r1x"), &[]).is_some());
        assert!(placement_problem(&like, &at("a", ""), &[]).is_some());

        let unlike = [c(&["rack", "UNLIKE", "r[12]"])];
        assert!(placement_problem(&unlike, &at("a", "rack:r2"), &[]).is_some());
        assert_eq!(placement_problem(&unlike, &at("a", "rack:r3"), &[]), None);
        assert_eq!(placement_problem(&unlike, &at("a", ""), &[]), None, "no attribute is unlike anything");

        let level = [c(&["level", "LIKE", "[0-9]+"])];
        assert_eq!(placement_problem(&level, &at("a", "level:3"), &[]), None, "scalars match as text");
    }

    #[test]
    fn max_per() {
        let max = [c(&["rack", "MAX_PER", "2"])];
        let placed = [at("a", "rack:r1"), at("b", "rack:r1"), at("c", "rack:r2")];
        assert!(placement_problem(&max, &at("d", "rack:r1"), &placed).unwrap().contains("already has 2 tasks"));
        assert_eq!(placement_problem(&max, &at("d", "rack:r2"), &placed), None);
        assert_eq!(placement_problem(&max, &at("d", "rack:r3"), &placed), None);
    }

    #[test]
    fn group_by_spreads_over_values_seen() {
        let group = [c(&["rack", "GROUP_BY"])];
        let placed = [at("a", "rack:r1"), at("b", "rack:r2"), at("c", "rack:r1")];
        assert!(placement_problem(&group, &at("d", "rack:r1"), &placed).is_some());
        assert_eq!(placement_problem(&group, &at("d", "rack:r2"), &placed), None);
        assert_eq!(placement_problem(&group, &at("d", "rack:r3"), &placed), None, "a new value is always fine");

        let three = [c(&["rack", "GROUP_BY", "3"])];
        let placed = [at("a", "rack:r1"), at("b", "rack:r2")];
        assert!(placement_problem(&three, &at("c", "rack:r1"), &placed).unwrap().contains("at least 3"));
        assert_eq!(placement_problem(&three, &at("c", "rack:r3"), &placed), None);
    }

    #[test]
    fn the_first_refusing_constraint_is_reported() {
        let both = [c(&["rack", "CLUSTER", "r1"]), c(&["hostname", "UNIQUE"])];
        let placed = [at("a", "rack:r1")];
        assert!(placement_problem(&both, &at("a", "rack:r1"), &placed).unwrap().starts_with("constraint UNIQUE"));
        assert!(placement_problem(&both, &at("a", "rack:r2"), &placed).unwrap().starts_with("constraint CLUSTER"));
    }

    proptest! {
        /// Once every value is in use, placing tasks one by one where GROUP_BY allows keeps
        /// the groups within one task of each other; MAX_PER is never exceeded.
        #[test]
        fn greedy_placement_respects_group_by_and_max_per(
            racks in proptest::collection::vec(0u8..4, 1..40),
            limit in 1u32..4,
        ) {
            let group = [c(&["rack", "GROUP_BY"])];
            let max = [c(&["rack", "MAX_PER", &limit.to_string()])];
            let mut grouped: Vec<Placement> = (0..4).map(|r| at(&format!("seed{r}"), &format!("rack:r{r}"))).collect();
            let mut capped = Vec::new();
            for (i, r) in racks.iter().enumerate() {
                let agent = at(&format!("n{i}"), &format!("rack:r{r}"));
                if placement_problem(&group, &agent, &grouped).is_none() {
                    grouped.push(agent.clone());
                }
                if placement_problem(&max, &agent, &capped).is_none() {
                    capped.push(agent);
                }
            }
            let mut counts = BTreeMap::new();
            for p in &grouped {
                *counts.entry(p.attributes.to_string()).or_insert(0usize) += 1;
            }
            let (lo, hi) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", counts);
            let mut counts = BTreeMap::new();
            for p in &capped {
                *counts.entry(p.attributes.to_string()).or_insert(0u32) += 1;
            }
            prop_assert!(counts.values().all(|n| *n <= limit), "{:?}", counts);
        }
    }
}
