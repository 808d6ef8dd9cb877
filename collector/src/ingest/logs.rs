//! OTLP logs: `LogsService/Export` over gRPC and `POST /v1/logs` over HTTP (the HTTP
//! side shares the metrics receiver's handling of auth, content types, gzip and size
//! in [`super::http`]). A request is translated to [`LogRecord`]s as the log contract
//! (`vigil_proto::logs`) says, appended to the log WAL and fsynced, and only then
//! answered: an acknowledged record survives a kill -9.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Value};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use vigil_proto::logs as contract;

use super::{Exported, Ingest, IngestError, Principal};
use crate::index::{LogIndex, LogRecord};

/// The OTLP answer to a stored logs request.
pub(crate) fn response(e: &Exported) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (e.rejected > 0 || !e.message.is_empty()).then(|| {
            ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(e.rejected).unwrap_or(i64::MAX),
                error_message: e.message.clone(),
            }
        }),
    }
}

/// An attribute value as JSON: strings, numbers and booleans as themselves, arrays and
/// key-value lists as arrays and objects, bytes as lowercase hex.
fn json_of(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(json_of).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        // A reference into a profiles dictionary; logs carry none.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}

fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, json_of),
            )
        })
        .collect()
}

fn string_attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

/// OTLP's severity number as text (`SeverityNumber` ranges).
fn severity_of(number: i32) -> &'static str {
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "",
    }
}

/// The records of a request, what was refused and why. A per-node token's request is
/// refused whole when a resource names another node.
pub(crate) fn translate(
    request: &ExportLogsServiceRequest,
    principal: &Principal,
    cutoff_ns: i64,
    now_ns: i64,
) -> Result<(Vec<LogRecord>, u64, String), IngestError> {
    let mut out = Vec::new();
    let mut too_old = 0u64;
    for rl in &request.resource_logs {
        let res_attrs: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let host = string_attr(res_attrs, "host.name");
        if let Principal::Node(node) = principal
            && host != Some(&**node)
        {
            return Err(IngestError::WrongNode {
                token_node: node.to_string(),
                claimed: host.map(str::to_owned),
            });
        }
        let service = string_attr(res_attrs, "service.name");
        for sl in &rl.scope_logs {
            for lr in &sl.log_records {
                let time_ns = [lr.time_unix_nano, lr.observed_time_unix_nano]
                    .into_iter()
                    .find(|&t| t > 0)
                    .map_or(now_ns, |t| i64::try_from(t).unwrap_or(i64::MAX));
                if time_ns < cutoff_ns {
                    too_old += 1;
                    continue;
                }
                let attrs = attributes(&lr.attributes);
                let source = string_attr(&lr.attributes, contract::SOURCE)
                    .or_else(|| string_attr(&lr.attributes, contract::FILE_PATH))
                    .or(service)
                    .unwrap_or("otlp")
                    .to_owned();
                let severity = if lr.severity_text.is_empty() {
                    severity_of(lr.severity_number).to_owned()
                } else {
                    lr.severity_text.to_ascii_lowercase()
                };
                let body = match lr.body.as_ref().and_then(|b| b.value.as_ref()) {
                    None => String::new(),
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(_) => lr
                        .body
                        .as_ref()
                        .map(json_of)
                        .unwrap_or_default()
                        .to_string(),
                };
                out.push(LogRecord {
                    time_ns,
                    node: host.unwrap_or_default().to_owned(),
                    source,
                    severity,
                    body,
                    attributes: attrs,
                });
            }
        }
    }
    let message = if too_old > 0 {
        format!("{too_old} log records refused: older than the log retention")
    } else {
        String::new()
    };
    Ok((out, too_old, message))
}

impl Ingest {
    /// Translates and stores a logs request; returns once it is durable. Blocks.
    pub fn export_logs_blocking_as(
        &self,
        request: &ExportLogsServiceRequest,
        principal: &Principal,
    ) -> Result<Exported, IngestError> {
        let logs = self.logs.as_ref().ok_or(IngestError::NoLogIndex)?;
        let (records, rejected, message) = translate(
            request,
            principal,
            logs.retention_cutoff_ns(),
            crate::index::now_ns(),
        )?;
        let accepted = records.len() as u64;
        if !records.is_empty() {
            logs.append(records)?;
        }
        Ok(Exported {
            accepted,
            rejected,
            message,
        })
    }

    /// The log index, when logs are received.
    pub fn log_index(&self) -> Option<&Arc<LogIndex>> {
        self.logs.as_ref()
    }
}

/// `LogsService` over the shared [`Ingest`].
struct LogsGrpc {
    ingest: Arc<Ingest>,
}

#[tonic::async_trait]
impl LogsService for LogsGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let started = Instant::now();
        let principal = super::grpc::principal_of(&request);
        let body = request.into_inner();
        let worker = Arc::clone(&self.ingest);
        let result =
            tokio::task::spawn_blocking(move || worker.export_logs_blocking_as(&body, &principal))
                .await
                .map_err(|e| IngestError::Task(e.to_string()))
                .and_then(|r| r);
        super::grpc::answer(&self.ingest, started, result, response, "logs")
    }
}

/// The gRPC `LogsService`, gzip accepted, messages up to the request limit.
pub(crate) fn grpc_service(ingest: Arc<Ingest>) -> LogsServiceServer<impl LogsService> {
    let max = ingest.max_request_bytes();
    LogsServiceServer::new(LogsGrpc { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request(host: &str, records: Vec<OtlpRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("host.name", any_value::Value::StringValue(host.into())),
                        kv(
                            "service.name",
                            any_value::Value::StringValue("trainer".into()),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn contract_fields() {
        let s = |v: &str| any_value::Value::StringValue(v.into());
        let req = request(
            "gpu-1",
            vec![
                OtlpRecord {
                    time_unix_nano: 5_000,
                    severity_number: 17,
                    body: Some(AnyValue {
                        value: Some(s("boom")),
                    }),
                    attributes: vec![
                        kv(contract::FILE_PATH, s("/var/log/x.log")),
                        kv(contract::NVIDIA_XID, any_value::Value::IntValue(79)),
                    ],
                    ..Default::default()
                },
                OtlpRecord {
                    observed_time_unix_nano: 7_000,
                    severity_text: "WARNING".into(),
                    attributes: vec![
                        kv(contract::SOURCE, s("kernel")),
                        kv(contract::FILE_PATH, s("/ignored")),
                    ],
                    ..Default::default()
                },
                OtlpRecord::default(),
            ],
        );
        let (records, rejected, _) = translate(&req, &Principal::Fleet, 0, 9_000).unwrap();
        assert_eq!(rejected, 0);
        assert_eq!(records[0].time_ns, 5_000);
        assert_eq!(records[0].node, "gpu-1");
        assert_eq!(records[0].source, "/var/log/x.log");
        assert_eq!(records[0].severity, "error");
        assert_eq!(records[0].body, "boom");
        assert_eq!(records[0].attributes["nvidia.xid"], Value::from(79));
        assert_eq!(records[1].time_ns, 7_000);
        assert_eq!(records[1].source, "kernel");
        assert_eq!(records[1].severity, "warning");
        assert_eq!(records[2].time_ns, 9_000);
        assert_eq!(records[2].source, "trainer");
        assert_eq!(records[2].severity, "");

        let (kept, rejected, msg) = translate(&req, &Principal::Fleet, 6_000, 9_000).unwrap();
        assert_eq!((kept.len(), rejected), (2, 1));
        assert!(msg.contains("retention"), "{msg}");

        let other = Principal::Node("gpu-2".into());
        assert!(matches!(
            translate(&req, &other, 0, 0),
            Err(IngestError::WrongNode { .. })
        ));
    }
}
