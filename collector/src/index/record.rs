//! A log record as the collector keeps it, and its binary form in the log WAL.
//!
//! The WAL payload of one accepted batch is `[seq: u64][count: u32]` and then per record
//! `[time_ns: i64]` and five length-prefixed strings (node, source, severity, body,
//! attributes as JSON text), all little-endian. The frame around it (length, CRC) is the
//! metric store's WAL framing.

use serde_json::{Map, Value};

/// One log line, with the fields the index keeps (see `vigil_proto::logs`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When it happened, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    pub node: String,
    pub source: String,
    /// Lower-case severity text (`error`, `warn`, ...); empty when the sender gave none.
    pub severity: String,
    pub body: String,
    /// Every attribute, keys as sent (dotted keys stay one key).
    pub attributes: Map<String, Value>,
}

/// An accepted batch: its WAL sequence number and its records.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) seq: u64,
    pub(crate) records: Vec<LogRecord>,
}

/// Records in one batch are numbered below this; a record's id is
/// `seq * MAX_BATCH_RECORDS + index`, unique and increasing in arrival order.
pub const MAX_BATCH_RECORDS: u64 = 1 << 24;

/// The id of the `index`th record of batch `seq`.
pub(crate) fn record_id(seq: u64, index: usize) -> u64 {
    seq * MAX_BATCH_RECORDS + index as u64
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a batch as its WAL payload.
pub(crate) fn encode(seq: u64, records: &[LogRecord]) -> Vec<u8> {
    let size: usize = records
        .iter()
        .map(|r| 40 + r.node.len() + r.source.len() + r.severity.len() + r.body.len())
        .sum();
    let mut out = Vec::with_capacity(12 + size);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut last = AttributesJson::default();
    for r in records {
        out.extend_from_slice(&r.time_ns.to_le_bytes());
        put_str(&mut out, &r.node);
        put_str(&mut out, &r.source);
        put_str(&mut out, &r.severity);
        put_str(&mut out, &r.body);
        put_str(&mut out, last.of(&r.attributes));
    }
    out
}

/// The JSON text of the last attributes given, kept while the next are equal: lines of
/// one file in a row carry the same attributes.
#[derive(Default)]
pub(crate) struct AttributesJson {
    last: Option<Map<String, Value>>,
    json: String,
}

impl AttributesJson {
    /// Takes `attributes`; true when they differ from the last ones.
    pub(crate) fn set(&mut self, attributes: &Map<String, Value>) -> bool {
        if self.last.as_ref() == Some(attributes) {
            return false;
        }
        self.json = if attributes.is_empty() {
            String::new()
        } else {
            // A map of JSON values always serialises.
            serde_json::to_string(attributes).unwrap_or_default()
        };
        self.last = Some(attributes.clone());
        true
    }

    /// The JSON text of the last attributes given; empty for none.
    pub(crate) fn json(&self) -> &str {
        &self.json
    }

    /// [`AttributesJson::set`], then [`AttributesJson::json`].
    pub(crate) fn of(&mut self, attributes: &Map<String, Value>) -> &str {
        self.set(attributes);
        &self.json
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Decodes a WAL payload; `None` when it is not one (the frame's CRC passed, so this
/// means a bug or a foreign file, and the batch is skipped with a warning).
pub(crate) fn decode(payload: &[u8]) -> Option<Batch> {
    let mut r = Reader { buf: payload };
    let seq = r.u64()?;
    let count = r.u32()? as usize;
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let time_ns = r.u64()? as i64;
        let node = r.str()?;
        let source = r.str()?;
        let severity = r.str()?;
        let body = r.str()?;
        let attrs = r.str()?;
        let attributes = if attrs.is_empty() {
            Map::new()
        } else {
            serde_json::from_str(&attrs).ok()?
        };
        records.push(LogRecord {
            time_ns,
            node,
            source,
            severity,
            body,
            attributes,
        });
    }
    Some(Batch { seq, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut attributes = Map::new();
        attributes.insert("nvidia.xid".into(), Value::from(79));
        let records = vec![
            LogRecord {
                time_ns: -5,
                node: "n1".into(),
                source: "kernel".into(),
                severity: "error".into(),
                body: "NVRM: Xid 79 ü".into(),
                attributes,
            },
            LogRecord {
                time_ns: 1_700_000_000_000_000_000,
                node: String::new(),
                source: "otlp".into(),
                severity: String::new(),
                body: String::new(),
                attributes: Map::new(),
            },
        ];
        let b = decode(&encode(42, &records)).unwrap();
        assert_eq!(b.seq, 42);
        assert_eq!(b.records, records);
        assert!(decode(&encode(1, &records)[..20]).is_none());
    }

    /// Equal attributes in a row share one serialisation; every change is seen.
    #[test]
    fn attributes_in_a_row() {
        let attrs = |pairs: &[(&str, Value)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Map<String, Value>>()
        };
        let file = attrs(&[("log.file.path", Value::from("/var/log/a.log"))]);
        let other = attrs(&[("log.file.path", Value::from("/var/log/b.log"))]);
        let split = attrs(&[
            ("log.file.path", Value::from("/var/log/a.log")),
            ("vigil.log.truncated", Value::from(true)),
        ]);
        let shapes = [
            &file,
            &file,
            &other,
            &Map::new(),
            &file,
            &split,
            &split,
            &file,
        ];
        let records: Vec<LogRecord> = shapes
            .iter()
            .enumerate()
            .map(|(i, a)| LogRecord {
                time_ns: i as i64,
                node: "n".into(),
                source: "s".into(),
                severity: String::new(),
                body: format!("line {i}"),
                attributes: (*a).clone(),
            })
            .collect();
        assert_eq!(decode(&encode(7, &records)).unwrap().records, records);
    }
}
