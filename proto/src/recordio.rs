//! RecordIO, the framing of Mesos's HTTP event streams: each record is its length in decimal,
//! a newline, then that many bytes. One codec for every stream Atoll writes (the scheduler and
//! operator APIs) and reads (Mesos masters followed by `atoll dns` and `atoll lb`).

/// The largest record accepted by default: a whole cluster's SUBSCRIBED state fits easily.
pub const MAX_RECORD: usize = 256 << 20;

/// Why a RecordIO stream cannot be split (it is then abandoned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("bad RecordIO framing: `{0}` is not a record length")]
    BadLength(String),
    #[error("bad RecordIO framing: no record length within 20 bytes")]
    NoLength,
    #[error("RecordIO record of {length} bytes is over the {max}-byte limit")]
    TooLong { length: usize, max: usize },
}

/// `<length>\n<record>`.
pub fn frame(record: &[u8]) -> Vec<u8> {
    let mut framed = format!("{}\n", record.len()).into_bytes();
    framed.extend_from_slice(record);
    framed
}

/// Splits a RecordIO byte stream into records, whatever the chunks it arrives in.
#[derive(Debug)]
pub struct RecordIo {
    buffer: Vec<u8>,
    max_record: usize,
}

impl Default for RecordIo {
    fn default() -> RecordIo {
        RecordIo::with_limit(MAX_RECORD)
    }
}

impl RecordIo {
    /// A splitter refusing records over `max_record` bytes.
    pub fn with_limit(max_record: usize) -> RecordIo {
        RecordIo { buffer: Vec::new(), max_record }
    }

    /// Feeds bytes; returns the records they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordIoError> {
        self.buffer.extend_from_slice(bytes);
        let mut records = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.buffer[start..];
            let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > 20 {
                    return Err(RecordIoError::NoLength);
                }
                break;
            };
            let line = String::from_utf8_lossy(&rest[..newline]);
            let length: usize = line.trim().parse().map_err(|_| RecordIoError::BadLength(line.clone().into_owned()))?;
            if length > self.max_record {
                return Err(RecordIoError::TooLong { length, max: self.max_record });
            }
            if rest.len() < newline + 1 + length {
                break;
            }
            records.push(rest[newline + 1..newline + 1 + length].to_vec());
            start += newline + 1 + length;
        }
        // One drain per chunk, not per record: a chunk holding many small records stays linear.
        self.buffer.drain(..start);
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_across_chunks_and_bad_framing_is_named() {
        let mut io = RecordIo::default();
        assert_eq!(io.feed(b"5\nhel").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(io.feed(b"lo3\nabc2").unwrap(), vec![b"hello".to_vec(), b"abc".to_vec()]);
        assert_eq!(io.feed(b"\nhi").unwrap(), vec![b"hi".to_vec()]);
        assert_eq!(io.feed(b"x\n"), Err(RecordIoError::BadLength("x".into())));
        assert_eq!(RecordIo::default().feed(&[b'1'; 21]), Err(RecordIoError::NoLength));
        assert_eq!(RecordIo::with_limit(4).feed(b"5\n"), Err(RecordIoError::TooLong { length: 5, max: 4 }));
        let mut io = RecordIo::default();
        let framed = [frame(b"{}"), frame(b""), frame(&[b'z'; 300])].concat();
        assert_eq!(io.feed(&framed).unwrap(), vec![b"{}".to_vec(), Vec::new(), vec![b'z'; 300]]);
    }
}
