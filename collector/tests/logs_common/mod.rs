//! Shared by the `logs_*` tests: a real collector through `run()` on loopback, OTLP
//! log requests as an SDK builds them, sending them over gRPC and HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil_collector::{CollectorConfig, CollectorError, Listeners};

pub struct Collector {
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), CollectorError>>>,
    pub dir: tempfile::TempDir,
}

impl Collector {
    /// `run()` over a fresh data dir with `config` otherwise; waits for /readyz.
    pub async fn start(mut config: CollectorConfig) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        config.data_dir = dir.path().to_path_buf();
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            http: bind().await?,
            otlp_grpc: bind().await?,
            otlp_http: bind().await?,
        };
        let api = listeners.http.local_addr()?;
        let grpc = listeners.otlp_grpc.local_addr()?;
        let http = listeners.otlp_http.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(vigil_collector::run(config, listeners, async move {
            let _ = rx.await;
        }));
        let c = Collector {
            api,
            grpc,
            http,
            stop: Some(tx),
            task: Some(task),
            dir,
        };
        for _ in 0..400 {
            if let Ok(r) = crate::api_common::request(api, "GET", "/readyz", None).await
                && r.status == 200
            {
                return Ok(c);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        bail!("collector did not become ready")
    }

    pub async fn get(&self, path: &str) -> Result<crate::api_common::Response> {
        crate::api_common::request(self.api, "GET", path, None).await
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().context("already stopped")?.await??;
        Ok(())
    }
}

pub fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A record at `t_ns` with a string body and attributes.
pub fn line(t_ns: i64, severity: &str, body: &str, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: t_ns as u64,
        observed_time_unix_nano: t_ns as u64,
        severity_text: severity.into(),
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes: attrs,
        ..Default::default()
    }
}

/// One resource (`host.name = node`) with `records`.
pub fn request(node: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("host.name", s(node))],
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

pub async fn send_grpc(addr: SocketAddr, req: ExportLogsServiceRequest) -> Result<()> {
    let mut client = LogsServiceClient::connect(format!("http://{addr}")).await?;
    let answer = client.export(req).await?.into_inner();
    if let Some(p) = answer.partial_success
        && p.rejected_log_records > 0
    {
        bail!("partial success: {p:?}");
    }
    Ok(())
}

/// POST /v1/logs as protobuf; returns the status.
pub async fn send_http(addr: SocketAddr, req: &ExportLogsServiceRequest) -> Result<u16> {
    let a = crate::ingest_common::post(
        addr,
        "/v1/logs",
        &[("content-type", "application/x-protobuf")],
        &req.encode_to_vec(),
    )
    .await?;
    Ok(a.status)
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
