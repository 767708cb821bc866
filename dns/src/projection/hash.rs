//! The two fragments of a Mesos-DNS canonical task name `<task>-<id hash>-<agent tail>`: five
//! z-base-32 characters of the SHA-1 of the task id, and the last `-`-separated field of the
//! agent id. Both must match Mesos-DNS bit for bit: clients and configs hold these names.

/// The z-base-32 alphabet (Mesos-DNS uses github.com/tv42/zbase32: human-oriented base 32).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Mesos-DNS `hashString`: the first 5 z-base-32 characters of SHA-1(`text`), i.e. its top 25
/// bits, enough to tell apart the tasks sharing a name.
pub fn task_id_hash(text: &str) -> String {
    let digest = sha1_smol::Sha1::from(text).digest().bytes();
    let top = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (0..5).map(|i| ZBASE32[((top >> (27 - 5 * i)) & 0x1f) as usize] as char).collect()
}

/// Mesos-DNS `slaveIDTail`: the agent id's last `-`-separated field, lowercased
/// (`20140803-125133-3041283216-5050-2410-0` → `0`, Atoll's `<run>-S3` → `s3`).
pub fn agent_id_tail(agent_id: &str) -> String {
    agent_id.rsplit('-').next().unwrap_or_default().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_mesos_dns() {
        // Mesos-DNS's TestHashString, and canonical names of its fake.json.
        assert_eq!(task_id_hash("test"), "iffe9");
        assert_eq!(task_id_hash("toy-store.b8db9f73-562f-11e4-a088-c20493233aa5"), "go588");
        assert_eq!(task_id_hash("liquor-store.b8db9f73-562f-11e4-a088-c20493233aa5"), "4dfjd");
        assert_eq!(task_id_hash("liquor-store.b71166c1-562f-11e4-a088-c20493233aa5"), "zasmd");
    }

    #[test]
    fn agent_tails() {
        assert_eq!(agent_id_tail("20140803-125133-3041283216-5050-2410-0"), "0");
        assert_eq!(agent_id_tail("run-S3"), "s3");
        assert_eq!(agent_id_tail("plain"), "plain");
        assert_eq!(agent_id_tail(""), "");
    }
}
