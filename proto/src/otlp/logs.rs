//! Log lines as an OTLP `ExportLogsServiceRequest`, following the contract in
//! [`crate::logs`]: one `ResourceLogs` with the agent's resource (the same as its
//! metrics) and one scope holding the batch's records.
//!
//! The agent ships tens of MB of log text a second, so records are written straight
//! into protobuf wire format as they are pushed: no `LogRecord` struct, no `String` per
//! body or attribute. Only the enclosing resource and scope go through prost, once per
//! batch. The tests decode the result with prost to hold it to the generated types.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use prost::Message as _;

use super::encode::{AgentResource, agent_resource, agent_scope};

/// An attribute value the agent puts on a log record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// One log record to encode; borrowed, so pushing one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct LogLine<'a> {
    /// When the event happened (see [`crate::logs`]).
    pub time_unix_nano: u64,
    /// When the agent read it.
    pub observed_time_unix_nano: u64,
    /// OTLP's severity number; 0 (unspecified) leaves the field and the text out.
    pub severity_number: i32,
    pub severity_text: &'a str,
    /// The line without its newline.
    pub body: &'a str,
    pub attributes: &'a [(&'a str, LogValue<'a>)],
}

/// OTLP severity number and the kernel's name for a kernel log priority (0–7), as
/// [`crate::logs`] maps them.
pub fn kernel_severity(priority: u8) -> (i32, &'static str) {
    match priority & 7 {
        0 => (21, "emerg"),
        1 => (21, "alert"),
        2 => (21, "crit"),
        3 => (17, "err"),
        4 => (13, "warning"),
        5 => (9, "notice"),
        6 => (9, "info"),
        _ => (5, "debug"),
    }
}

/// Accumulates encoded log records; [`LogsEncoder::finish`] wraps them in a request.
#[derive(Debug, Default)]
pub struct LogsEncoder {
    /// `ScopeLogs.log_records` fields (tag, length, record), back to back.
    records: Vec<u8>,
    scratch: Vec<u8>,
    count: usize,
}

// Field keys: (field number << 3) | wire type; 0 varint, 1 fixed64, 2 length-delimited.
const LOG_TIME: u8 = (1 << 3) | 1;
const LOG_SEVERITY_NUMBER: u8 = 2 << 3;
const LOG_SEVERITY_TEXT: u8 = (3 << 3) | 2;
const LOG_BODY: u8 = (5 << 3) | 2;
const LOG_ATTRIBUTE: u8 = (6 << 3) | 2;
const LOG_OBSERVED_TIME: u8 = (11 << 3) | 1;
const KV_KEY: u8 = (1 << 3) | 2;
const KV_VALUE: u8 = (2 << 3) | 2;
const ANY_STRING: u8 = (1 << 3) | 2;
const ANY_BOOL: u8 = 2 << 3;
const ANY_INT: u8 = 3 << 3;
const SCOPE_LOGS_RECORD: u8 = (2 << 3) | 2;
const SCOPE_LOGS_SCOPE: u8 = (1 << 3) | 2;
const RESOURCE_LOGS_RESOURCE: u8 = (1 << 3) | 2;
const RESOURCE_LOGS_SCOPE_LOGS: u8 = (2 << 3) | 2;
const REQUEST_RESOURCE_LOGS: u8 = (1 << 3) | 2;

impl LogsEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one record.
    pub fn push(&mut self, line: &LogLine<'_>) {
        let r = &mut self.scratch;
        r.clear();
        if line.time_unix_nano != 0 {
            r.push(LOG_TIME);
            r.extend_from_slice(&line.time_unix_nano.to_le_bytes());
        }
        if line.severity_number != 0 {
            r.push(LOG_SEVERITY_NUMBER);
            put_varint(r, line.severity_number as u64);
        }
        if !line.severity_text.is_empty() {
            put_bytes(r, LOG_SEVERITY_TEXT, line.severity_text.as_bytes());
        }
        // AnyValue { string_value }
        let body = line.body.as_bytes();
        r.push(LOG_BODY);
        put_varint(r, (1 + varint_len(body.len() as u64) + body.len()) as u64);
        put_bytes(r, ANY_STRING, body);
        for (key, value) in line.attributes {
            put_attribute(r, key, value);
        }
        if line.observed_time_unix_nano != 0 {
            r.push(LOG_OBSERVED_TIME);
            r.extend_from_slice(&line.observed_time_unix_nano.to_le_bytes());
        }
        put_bytes(&mut self.records, SCOPE_LOGS_RECORD, &self.scratch);
        self.count += 1;
    }

    /// Records pushed since the last finish.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes of the records pushed so far (the request adds a few hundred).
    pub fn encoded_bytes(&self) -> usize {
        self.records.len()
    }

    /// The `ExportLogsServiceRequest` holding every record pushed since the last call,
    /// with the agent's resource; the encoder is empty afterwards.
    pub fn finish(&mut self, resource: &AgentResource<'_>) -> Vec<u8> {
        let resource_bytes = agent_resource(resource).encode_to_vec();
        let scope_bytes = agent_scope(resource).encode_to_vec();
        let scope_logs_len = field_len(scope_bytes.len()) + self.records.len();
        let resource_logs_len = field_len(resource_bytes.len()) + field_len(scope_logs_len);
        let mut out = Vec::with_capacity(field_len(resource_logs_len));
        out.push(REQUEST_RESOURCE_LOGS);
        put_varint(&mut out, resource_logs_len as u64);
        put_bytes(&mut out, RESOURCE_LOGS_RESOURCE, &resource_bytes);
        out.push(RESOURCE_LOGS_SCOPE_LOGS);
        put_varint(&mut out, scope_logs_len as u64);
        put_bytes(&mut out, SCOPE_LOGS_SCOPE, &scope_bytes);
        out.extend_from_slice(&self.records);
        self.records.clear();
        self.count = 0;
        out
    }
}

/// The same request through prost's types, for callers that want structs (and for the
/// tests): every record pushed is decoded back.
pub fn decode_logs_request(bytes: &[u8]) -> Result<ExportLogsServiceRequest, prost::DecodeError> {
    ExportLogsServiceRequest::decode(bytes)
}

/// An empty request shape, for callers building `ResourceLogs` themselves.
pub fn empty_resource_logs(resource: &AgentResource<'_>) -> ResourceLogs {
    ResourceLogs {
        resource: Some(agent_resource(resource)),
        scope_logs: vec![ScopeLogs {
            scope: Some(agent_scope(resource)),
            log_records: Vec::new(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn put_attribute(out: &mut Vec<u8>, key: &str, value: &LogValue<'_>) {
    let value_len = match value {
        LogValue::Str(s) => field_len(s.len()),
        LogValue::Int(i) => 1 + varint_len(*i as u64),
        LogValue::Bool(_) => 2,
    };
    let kv_len = field_len(key.len()) + field_len(value_len);
    out.push(LOG_ATTRIBUTE);
    put_varint(out, kv_len as u64);
    put_bytes(out, KV_KEY, key.as_bytes());
    out.push(KV_VALUE);
    put_varint(out, value_len as u64);
    match value {
        LogValue::Str(s) => put_bytes(out, ANY_STRING, s.as_bytes()),
        LogValue::Int(i) => {
            out.push(ANY_INT);
            // int64 is encoded as the two's complement varint, as prost does.
            put_varint(out, *i as u64);
        }
        LogValue::Bool(b) => {
            out.push(ANY_BOOL);
            out.push(u8::from(*b));
        }
    }
}

/// Bytes a length-delimited field of `len` payload bytes takes, key included.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn resource() -> AgentResource<'static> {
        AgentResource {
            node: "gpu-node-07",
            agent_version: "0.1.0",
            interval_secs: 5.0,
        }
    }

    #[test]
    fn varint_lengths_match_prost() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
        }
    }

    #[test]
    fn records_decode_with_prost() {
        let mut enc = LogsEncoder::new();
        let long = "x".repeat(300);
        let (sev, sev_text) = kernel_severity(3);
        enc.push(&LogLine {
            time_unix_nano: 1_700_000_000_123_456_789,
            observed_time_unix_nano: 1_700_000_001_000_000_000,
            severity_number: sev,
            severity_text: sev_text,
            body: "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
            attributes: &[
                (logs::SOURCE, LogValue::Str(logs::SOURCE_KERNEL)),
                (logs::KERNEL_SEQ, LogValue::Int(4_010)),
                (logs::NVIDIA_XID, LogValue::Int(79)),
                (logs::TRUNCATED, LogValue::Bool(true)),
                ("negative", LogValue::Int(-3)),
            ],
        });
        enc.push(&LogLine {
            time_unix_nano: 5,
            observed_time_unix_nano: 6,
            severity_number: 0,
            severity_text: "",
            body: &long,
            attributes: &[(logs::FILE_PATH, LogValue::Str("/var/log/app.log"))],
        });
        assert_eq!(enc.len(), 2);
        let bytes = enc.finish(&resource());
        assert!(enc.is_empty() && enc.encoded_bytes() == 0);
        let req = decode_logs_request(&bytes).unwrap();
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let expected = empty_resource_logs(&resource());
        assert_eq!(rl.resource, expected.resource);
        assert_eq!(rl.scope_logs[0].scope, expected.scope_logs[0].scope);
        let records = &rl.scope_logs[0].log_records;
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(r.observed_time_unix_nano, 1_700_000_001_000_000_000);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "err"));
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(Value::StringValue(
                "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.".into()
            ))
        );
        let attr = |i: usize| {
            (
                r.attributes[i].key.as_str(),
                r.attributes[i]
                    .value
                    .as_ref()
                    .unwrap()
                    .value
                    .clone()
                    .unwrap(),
            )
        };
        assert_eq!(attr(0), (logs::SOURCE, Value::StringValue("kernel".into())));
        assert_eq!(attr(1), (logs::KERNEL_SEQ, Value::IntValue(4_010)));
        assert_eq!(attr(2), (logs::NVIDIA_XID, Value::IntValue(79)));
        assert_eq!(attr(3), (logs::TRUNCATED, Value::BoolValue(true)));
        assert_eq!(attr(4), ("negative", Value::IntValue(-3)));
        let r = &records[1];
        assert_eq!(r.severity_number, 0);
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(Value::StringValue(long.clone()))
        );
        // The same record built with prost encodes to the same bytes.
        let again = ExportLogsServiceRequest {
            resource_logs: vec![rl.clone()],
        }
        .encode_to_vec();
        assert_eq!(again, bytes);
    }

    #[test]
    fn kernel_priorities_map_as_the_contract_says() {
        let numbers: Vec<i32> = (0..8).map(|p| kernel_severity(p).0).collect();
        assert_eq!(numbers, [21, 21, 21, 17, 13, 9, 9, 5]);
        assert_eq!(kernel_severity(4).1, "warning");
        assert_eq!(
            kernel_severity(8 + 6),
            kernel_severity(6),
            "facility bits ignored"
        );
    }
}
