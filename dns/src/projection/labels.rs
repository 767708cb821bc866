//! DNS label sanitising exactly as Mesos-DNS does it (`records/labels`): task and framework
//! names are free text, so they are lowercased, stripped of characters a host name cannot
//! hold, cut to the label length of the chosen RFC and trimmed of leading/trailing hyphens
//! (RFC 952 also of leading digits).
//!
//! The cut is Mesos-DNS's, quirks included (a name whose cut ends in hyphens borrows
//! characters from after the cut), because the names it produces are what clients of an
//! existing Mesos-DNS already ask for.

use serde::{Deserialize, Serialize};

/// Which host-name rules labels follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSpec {
    /// Up to 63 characters, may start with a digit (Mesos-DNS's default).
    #[default]
    Rfc1123,
    /// Up to 24 characters, starts with a letter (Mesos-DNS's `EnforceRFC952`).
    Rfc952,
}

impl LabelSpec {
    /// One label from free text (Mesos-DNS `labels.RFC1123` / `labels.RFC952`); `.` becomes `-`.
    pub fn label(self, name: &str) -> String {
        // Characters outside [a-z0-9-] are dropped, never escaped: `a b` is `ab`.
        let mapped: Vec<u8> = name.chars().filter_map(map_char).collect();
        let cut = match self {
            LabelSpec::Rfc1123 => trim_cut(&mapped, 63, b"-", b"-"),
            LabelSpec::Rfc952 => trim_cut(&mapped, 24, b"-0123456789", b"-"),
        };
        // Only ASCII survives `map_char`.
        String::from_utf8(cut).unwrap_or_default()
    }

    /// A name that may span labels (Mesos-DNS `labels.DomainFrag` with `.`): each dot-separated
    /// part is sanitised, empty ones are dropped. Framework names go through this, so
    /// `chronos-2.0.1` keeps its dots under RFC 1123.
    pub fn domain_frag(self, name: &str) -> String {
        name.split('.').map(|part| self.label(part)).filter(|label| !label.is_empty()).collect::<Vec<_>>().join(".")
    }
}

/// Mesos-DNS `mapping`: lowercase letters and digits stay, `-`, `.` and `_` become `-`, the
/// rest (spaces, punctuation, any non-ASCII character) is dropped.
fn map_char(c: char) -> Option<u8> {
    match c {
        'A'..='Z' => Some(c.to_ascii_lowercase() as u8),
        'a'..='z' | '0'..='9' => Some(c as u8),
        '-' | '.' | '_' => Some(b'-'),
        _ => None,
    }
}

/// Mesos-DNS `trimCut`: trims `left` from the start, cuts at `maxlen`, trims `right` from the
/// end of the cut; when that trim shortened it, refills from what follows the cut (itself
/// trimmed of `right` at its start) up to the cut's length.
fn trim_cut(label: &[u8], maxlen: usize, left: &[u8], right: &[u8]) -> Vec<u8> {
    let start = label.iter().position(|b| !left.contains(b)).unwrap_or(label.len());
    let trim = &label[start..];
    let size = trim.len().min(maxlen);
    let head_len = trim[..size].iter().rposition(|b| !right.contains(b)).map_or(0, |i| i + 1);
    let mut out = trim[..head_len].to_vec();
    if head_len == size {
        return out;
    }
    let rest = &trim[size..];
    let tail_start = rest.iter().position(|b| !right.contains(b)).unwrap_or(rest.len());
    let tail = &rest[tail_start..];
    out.extend_from_slice(&tail[..tail.len().min(size - head_len)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cases of Mesos-DNS's own records/labels/labels_test.go.
    #[test]
    fn rfc952_matches_mesos_dns() {
        for (name, want) in [
            ("4abc123", "abc123"),
            ("-4abc123", "abc123"),
            ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            ("89fdgsf---gs7-fgs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            ("89fdgsf---gs7-fgs--d7fddg---123", "fdgsf---gs7-fgs--d7fddg1"),
            ("89fdgsf---gs7-fgs--d7fddg-", "fdgsf---gs7-fgs--d7fddg"),
            ("chronos with a space AND MIXED CASE-2.0.1", "chronoswithaspaceandmixe"),
            ("chronos with a space AND----------MIXED--", "chronoswithaspaceandmixe"),
            ("hello--------------------------------------------------------f", "hellof"),
        ] {
            assert_eq!(LabelSpec::Rfc952.label(name), want, "{name}");
        }
    }

    #[test]
    fn rfc1123_matches_mesos_dns() {
        for (name, want) in [
            ("4abc123", "4abc123"),
            ("-4abc123", "4abc123"),
            ("89fdgsf---gs7-fgs--d7fddg-123", "89fdgsf---gs7-fgs--d7fddg-123"),
            ("89fdgsf---gs7-fgs--d7fddg---123", "89fdgsf---gs7-fgs--d7fddg---123"),
            ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
            ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg-123"),
            (
                "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
                "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
            ),
            (
                "hello--------------------------------------------------------f",
                "hello--------------------------------------------------------f",
            ),
        ] {
            assert_eq!(LabelSpec::Rfc1123.label(name), want, "{name}");
        }
    }

    #[test]
    fn domain_fragments_keep_dots_between_sanitised_parts() {
        let name = "pod_123$abc.marathon-0.6.0-dev.mesos";
        assert_eq!(LabelSpec::Rfc952.domain_frag(name), "pod-123abc.marathon-0.dev.mesos");
        assert_eq!(LabelSpec::Rfc1123.domain_frag(name), "pod-123abc.marathon-0.6.0-dev.mesos");
        for spec in [LabelSpec::Rfc952, LabelSpec::Rfc1123] {
            for (name, want) in [("", ""), (".", ""), ("...", ""), ("a", "a"), ("abc.", "abc"), (".a.b.", "a.b")] {
                assert_eq!(spec.domain_frag(name), want, "{spec:?} {name:?}");
            }
        }
        assert_eq!(
            LabelSpec::Rfc1123.domain_frag("chronos with a space AND MIXED CASE-2.0.1"),
            "chronoswithaspaceandmixedcase-2.0.1"
        );
    }

    #[test]
    fn non_ascii_is_dropped_not_mangled() {
        assert_eq!(LabelSpec::Rfc1123.label("café_Ünïcode"), "caf-ncode");
    }
}
