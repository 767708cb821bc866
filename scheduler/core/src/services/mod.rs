//! The built-in Marathon-style services framework's decision logic, free of I/O.
//!
//! The framework keeps long-running apps alive. Its shell (in `atoll-scheduler`) receives
//! offers and task updates and asks these modules what to do:
//!
//! - [`validate`]: Marathon app JSON → a checked [`AppDefinition`] and its normalized
//!   [`atoll_proto::model::AppId`], or every problem with its JSON path.
//! - [`constraints`]: the typed `constraints` of a definition and whether a new task may go on
//!   an agent, given where the app's live tasks already are.
//! - [`matching`]: one offer (or what is left of it) → the [`atoll_proto::model::TaskInfo`] of
//!   one new instance, or the reason it does not fit (summarised for "declined offers").
//! - [`reconcile`]: desired app + observed tasks → how many to launch and which to kill now,
//!   within the upgrade strategy's bounds; the heart of deployments.
//! - [`backoff`]: exponential launch delay of a crash-looping app.
//!
//! Versions are [`Time`]s (milliseconds since the epoch), as Marathon's versions are
//! timestamps. They are written as ISO 8601 UTC with milliseconds (`2024-05-01T12:00:00.000Z`),
//! the form Marathon shows and the one task labels carry; [`format_version`] and
//! [`parse_version`] convert.

pub mod backoff;
pub mod constraints;
pub mod matching;
pub mod reconcile;
pub mod validate;

use atoll_proto::model::{AppDefinition, Time};

/// Whether going from `old` to `new` needs new tasks (a new `config_version`), rather than
/// being a scale: Marathon replaces tasks for any change except `instances`.
pub fn config_changed(old: &AppDefinition, new: &AppDefinition) -> bool {
    let mut scaled = old.clone();
    scaled.instances = new.instances;
    scaled != *new
}

/// `Time(1714564800123)` → `2024-05-01T12:00:00.123Z`.
pub fn format_version(version: Time) -> String {
    let millis = version.0 % 1000;
    let secs = version.0 / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Reads a version written by [`format_version`] (fractions of any length, `Z` required) or
/// as plain milliseconds since the epoch.
pub fn parse_version(text: &str) -> Option<Time> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Time);
    }
    let body = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, clock) = body.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = number(date_parts.next()?, 4)?;
    let month: u32 = number(date_parts.next()?, 2)?;
    let day: u32 = number(date_parts.next()?, 2)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut clock_parts = hms.splitn(3, ':');
    let hour: u64 = number(clock_parts.next()?, 2)?;
    let minute: u64 = number(clock_parts.next()?, 2)?;
    let second: u64 = number(clock_parts.next()?, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 || year < 1970 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Milliseconds are all a version holds; finer digits are dropped, not rounded, so a
    // value written with more precision still names the same version.
    let millis = format!("{fraction:0<3}")[..3].parse::<u64>().ok()?;
    let days = days_from_civil(year, month, day);
    let secs = days as u64 * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Time(secs * 1000 + millis))
}

fn number<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian, days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
pub(crate) mod test_support {
    use atoll_proto::model::{App, AppDefinition, AppId, Time};

    /// A definition from Marathon JSON, with the defaults serde fills in.
    pub fn definition(json: serde_json::Value) -> AppDefinition {
        serde_json::from_value(json).expect("test definition parses")
    }

    pub fn app(json: serde_json::Value, config_version: Time) -> App {
        let definition = definition(json);
        App { id: AppId::parse(&definition.id).expect("test id"), definition, version: config_version, config_version }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn versions_print_as_marathon_timestamps() {
        assert_eq!(format_version(Time(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_version(Time(1_714_564_800_123)), "2024-05-01T12:00:00.123Z");
        assert_eq!(format_version(Time(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_version("2024-05-01T12:00:00.123Z"), Some(Time(1_714_564_800_123)));
        assert_eq!(parse_version("2024-05-01T12:00:00Z"), Some(Time(1_714_564_800_000)));
        assert_eq!(parse_version("2024-05-01T12:00:00.1234567Z"), Some(Time(1_714_564_800_123)));
        assert_eq!(parse_version("1714564800123"), Some(Time(1_714_564_800_123)));
        for bad in
            ["", "2024-02-30T00:00:00Z", "2024-05-01T12:00:00", "2024-5-1T12:00:00Z", "x", "2024-05-01T24:00:00Z"]
        {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn scaling_is_not_a_config_change() {
        let old = test_support::definition(json!({"id": "/a", "cmd": "sleep 1", "instances": 1}));
        let mut new = old.clone();
        new.instances = 5;
        assert!(!config_changed(&old, &new));
        new.cmd = Some("sleep 2".into());
        assert!(config_changed(&old, &new));
    }

    proptest! {
        #[test]
        fn versions_round_trip(millis in 0u64..253_402_300_799_999) {
            let text = format_version(Time(millis));
            prop_assert_eq!(parse_version(&text), Some(Time(millis)), "{}", text);
        }
    }
}
