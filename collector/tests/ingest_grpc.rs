//! The OTLP/gRPC receiver, against a real store: an agent's snapshots land with their
//! names and labels, series missing from the next snapshot go stale, a counter with a
//! start time gets its zero, and unauthenticated or oversized requests are refused
//! (and counted) while the server keeps serving.

mod ingest_common;

use anyhow::{Context, Result, ensure};
use ingest_common::*;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vigil_collector::ingest::{Outcome, Protocol};
use vigil_proto::MetricFamily;
use vigil_proto::otlp::metrics_service_client::MetricsServiceClient;
use vigil_proto::otlp::*;
use vigil_rules::promql::is_stale_nan;

/// Adds the bearer token to each call.
type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client = MetricsServiceClient<InterceptedService<Channel, Auth>>;

async fn client(c: &Collector, token: Option<&str>) -> Result<Client> {
    let channel = Channel::from_shared(format!("http://{}", c.grpc))?
        .connect()
        .await?;
    let header: Option<MetadataValue<_>> =
        token.map(|t| format!("Bearer {t}").parse()).transpose()?;
    let auth: Auth = Box::new(move |mut req: tonic::Request<()>| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    });
    Ok(MetricsServiceClient::with_interceptor(channel, auth)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20))
}

fn snapshot(t_ms: i64, with_gpu1: bool) -> ExportMetricsServiceRequest {
    let mut temp = MetricFamily::gauge("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).");
    temp.push(
        &[
            ("gpu", "0"),
            ("UUID", "GPU-aaaa"),
            ("pci_bus_id", "00000000:17:00.0"),
            ("modelName", "NVIDIA H100 80GB HBM3"),
        ],
        41.0,
    );
    if with_gpu1 {
        temp.push(
            &[
                ("gpu", "1"),
                ("UUID", "GPU-bbbb"),
                ("pci_bus_id", "00000000:2A:00.0"),
                ("modelName", "NVIDIA H100 80GB HBM3"),
            ],
            43.0,
        );
    }
    let mut up = MetricFamily::gauge("vigil_gpu_up", "GPU answers.");
    up.push(&[("gpu", "0")], 1.0);
    // As the agent does when a GPU falls off the bus: up 0, no DCGM series.
    up.push(&[("gpu", "1")], if with_gpu1 { 1.0 } else { 0.0 });
    let mut xid = MetricFamily::counter("vigil_gpu_xid_errors_total", "Xid errors.");
    xid.push_counter(&[("gpu", "0"), ("xid", "79")], 1.0, 1_700_000_000.0);
    let res = AgentResource {
        node: "gpu-node-1",
        agent_version: "0.1.0",
        interval_secs: 1.0,
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![snapshot_to_resource_metrics(&[temp, up, xid], &res, t_ms)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_snapshots_land_go_stale_and_fill_the_registry() -> Result<()> {
    let c = Collector::start(16 << 20).await?;
    let mut cl = client(&c, Some(TOKEN)).await?;
    let t0 = 1_700_000_010_000;
    let answer = cl.export(snapshot(t0, true)).await?.into_inner();
    ensure!(answer.partial_success.is_none(), "{answer:?}");

    let temps = c.select("DCGM_FI_DEV_GPU_TEMP")?;
    ensure!(temps.len() == 2, "{temps:?}");
    let l = &temps[0].labels;
    for (n, v) in [
        ("job", "vigil-agent"),
        ("instance", "gpu-node-1"),
        ("node", "gpu-node-1"),
        ("gpu", "0"),
        ("UUID", "GPU-aaaa"),
        ("modelName", "NVIDIA H100 80GB HBM3"),
    ] {
        ensure!(l.get(n) == Some(v), "{n} in {l}");
    }
    ensure!(
        temps[0].samples == vec![(t0, 41.0)],
        "{:?}",
        temps[0].samples
    );

    // The counter started before its first sample: a zero at the start time.
    let xid = c.select("vigil_gpu_xid_errors_total")?;
    ensure!(
        xid[0].samples == vec![(1_700_000_000_000, 0.0), (t0, 1.0)],
        "{:?}",
        xid[0].samples
    );

    // GPU 1 falls off: its series are stale at the next snapshot's time.
    let t1 = t0 + 1_000;
    cl.export(snapshot(t1, false)).await?;
    let temps = c.select("DCGM_FI_DEV_GPU_TEMP")?;
    let gpu1 = temps
        .iter()
        .find(|s| s.labels.get("gpu") == Some("1"))
        .context("gpu 1")?;
    ensure!(
        gpu1.samples.len() == 2 && gpu1.samples[1].0 == t1 && is_stale_nan(gpu1.samples[1].1),
        "{:?}",
        gpu1.samples
    );
    let gpu0 = temps
        .iter()
        .find(|s| s.labels.get("gpu") == Some("0"))
        .context("gpu 0")?;
    ensure!(
        gpu0.samples == vec![(t0, 41.0), (t1, 41.0)],
        "{:?}",
        gpu0.samples
    );
    // The same start time again: no second zero.
    ensure!(c.select("vigil_gpu_xid_errors_total")?[0].samples.len() == 3);

    // A replayed older snapshot (from the agent's spool) marks nothing stale.
    cl.export(snapshot(t0 + 500, true)).await?;
    let gpu1 = c
        .select("DCGM_FI_DEV_GPU_TEMP")?
        .into_iter()
        .find(|s| s.labels.get("gpu") == Some("1"))
        .context("gpu 1")?;
    ensure!(gpu1.samples.len() == 3, "{:?}", gpu1.samples);

    let nodes = c.registry.nodes();
    ensure!(nodes.len() == 1, "{nodes:?}");
    let n = &nodes[0];
    ensure!(
        n.node == "gpu-node-1" && n.agent_version == "0.1.0" && n.interval_secs == Some(1.0),
        "{n:?}"
    );
    ensure!(n.up, "{n:?}");
    ensure!(n.gpus.len() == 2, "inventory keeps GPUs: {n:?}");
    ensure!(
        n.gpus[1].up == Some(false) && n.gpus[1].uuid.as_deref() == Some("GPU-bbbb"),
        "a lost GPU keeps its identity: {n:?}"
    );
    ensure!(
        n.gpus[0].uuid.as_deref() == Some("GPU-aaaa")
            && n.gpus[0].pci_bus_id.as_deref() == Some("00000000:17:00.0"),
        "{n:?}"
    );
    ensure!(c.ingest.requests(Protocol::Grpc, Outcome::Success) == 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_oversized_requests_are_refused_and_counted() -> Result<()> {
    let c = Collector::start(64 << 10).await?;
    let t = now_ms();
    for token in [None, Some("wrong"), Some("")] {
        let err = client(&c, token)
            .await?
            .export(sdk_gauge("g", "", t, 1.0))
            .await
            .unwrap_err();
        ensure!(err.code() == tonic::Code::Unauthenticated, "{err:?}");
    }
    ensure!(c.ingest.requests(Protocol::Grpc, Outcome::Unauthenticated) == 3);
    let fams = c.ingest.metric_families();
    let unauth = fams
        .iter()
        .find(|f| f.name == "vigil_ingest_unauthenticated_total")
        .context("family")?;
    ensure!(unauth.samples.iter().any(|s| s.value == 3.0), "{unauth:?}");

    // Larger than the limit once decompressed (the compressed message is small).
    let big = sdk_gauge(&"x".repeat(200 << 10), "", t, 1.0);
    let err = client(&c, Some(TOKEN))
        .await?
        .export(big)
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
        ),
        "{err:?}"
    );
    // Over the limit as sent (uncompressed, random enough not to matter): refused on
    // its declared length.
    let big = sdk_gauge(&"y".repeat(200 << 10), "", t, 1.0);
    let plain = MetricsServiceClient::new(
        Channel::from_shared(format!("http://{}", c.grpc))?
            .connect()
            .await?,
    )
    .max_encoding_message_size(64 << 20);
    let mut req = tonic::Request::new(big);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let err = plain.clone().export(req).await.unwrap_err();
    ensure!(err.code() == tonic::Code::OutOfRange, "{err:?}");
    // tonic refuses both before the handler; both are counted as too large.
    let too_large = c.ingest.requests(Protocol::Grpc, Outcome::TooLarge);
    ensure!(too_large == 2, "{too_large} counted as too large");

    // Still serving; a foreign SDK gauge lands normalised.
    let ok = client(&c, Some(TOKEN))
        .await?
        .export(sdk_gauge("process.memory.usage", "By", t, 5.0))
        .await?;
    ensure!(ok.into_inner().partial_success.is_none());
    let s = c.select("process_memory_usage_bytes")?;
    ensure!(s.len() == 1 && s[0].samples == vec![(t, 5.0)], "{s:?}");
    ensure!(s[0].labels.get("job") == Some("app") && s[0].labels.get("node") == Some("host"));
    ensure!(
        c.registry.nodes().is_empty(),
        "a foreign sender is not a node"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_points_come_back_as_partial_success() -> Result<()> {
    let c = Collector::start(16 << 20).await?;
    let t = now_ms();
    let mut req = sdk_gauge("ok", "", t, 1.0);
    req.resource_metrics[0].scope_metrics[0]
        .metrics
        .push(Metric {
            name: "delta.count".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: t as u64 * 1_000_000,
                    value: Some(number_data_point::Value::AsInt(3)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    let answer = client(&c, Some(TOKEN))
        .await?
        .export(req)
        .await?
        .into_inner();
    let partial = answer.partial_success.context("partial success")?;
    ensure!(
        partial.rejected_data_points == 1 && partial.error_message.contains("delta"),
        "{partial:?}"
    );
    ensure!(c.select("ok")?.len() == 1);
    ensure!(c.ingest.requests(Protocol::Grpc, Outcome::Partial) == 1);
    Ok(())
}
