//! OTLP logs into a real collector and out of `/api/v1/logs/*`: over gRPC and HTTP a
//! record is searchable within 2 s; filters, newest-first pages, bad parameters; the
//! live tail; a log-derived counter queryable through PromQL.

mod api_common;
mod ingest_common;
mod logs_common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use api_common::enc;
use logs_common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vigil_collector::CollectorConfig;

fn config() -> CollectorConfig {
    let mut c = CollectorConfig::default();
    c.logs.writer_memory_bytes = 15_000_000;
    c.logs.commit_interval_ms = 200;
    c
}

async fn search(c: &Collector, params: &str) -> Result<Value> {
    let r = c.get(&format!("/api/v1/logs/search?{params}")).await?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    let v = r.json()?;
    ensure!(v["status"] == "success", "{v}");
    Ok(v["data"].clone())
}

/// Polls until the search finds `n` records; returns how long that took.
async fn until_found(c: &Collector, params: &str, n: u64) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let total = search(c, params).await?["total"].as_u64().unwrap_or(0);
        if total >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("{params}: {total} of {n} records after 5 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_records_are_searchable_within_2s() -> Result<()> {
    let c = Collector::start(config()).await?;
    let t = now_ns();
    send_grpc(
        c.grpc,
        request("gpu-1", vec![line(t, "ERROR", "over grpc: alpha", vec![])]),
    )
    .await?;
    let took = until_found(&c, &format!("q={}", enc("alpha")), 1).await?;
    ensure!(
        took < Duration::from_secs(2),
        "gRPC record searchable after {took:?}"
    );

    let status = send_http(
        c.http,
        &request(
            "gpu-2",
            vec![line(t + 1, "INFO", "over http: beta", vec![])],
        ),
    )
    .await?;
    ensure!(status == 200, "POST /v1/logs answered {status}");
    let took = until_found(&c, &format!("q={}", enc("beta")), 1).await?;
    ensure!(
        took < Duration::from_secs(2),
        "HTTP record searchable after {took:?}"
    );

    // JSON too, as the metrics receiver takes it.
    let json = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"host.name","value":{{"stringValue":"gpu-3"}}}}]}},"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","severityNumber":13,"body":{{"stringValue":"over json: gamma"}}}}]}}]}}]}}"#,
        t + 2
    );
    let a = ingest_common::post(
        c.http,
        "/v1/logs",
        &[("content-type", "application/json")],
        json.as_bytes(),
    )
    .await?;
    ensure!(a.status == 200, "{a:?}");
    until_found(&c, &format!("q={}", enc("gamma")), 1).await?;
    let data = search(&c, "node=gpu-3").await?;
    let hit = &data["hits"][0];
    ensure!(
        hit["severity"] == "warn" && hit["source"] == "otlp",
        "{hit}"
    );
    ensure!(hit["body"] == "over json: gamma", "{hit}");
    ensure!(
        hit["timestamp"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{hit}"
    );

    // A body that is not OTLP is a 400.
    let a = ingest_common::post(
        c.http,
        "/v1/logs",
        &[("content-type", "application/x-protobuf")],
        b"\xff\xff\xff",
    )
    .await?;
    ensure!(a.status == 400, "{a:?}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pages_and_bad_parameters() -> Result<()> {
    let c = Collector::start(config()).await?;
    let t = now_ns() - 60_000_000_000;
    let mut records = Vec::new();
    for i in 0..30i64 {
        let sev = if i % 3 == 0 { "ERROR" } else { "INFO" };
        let attrs = vec![
            kv("log.file.path", s("/var/log/train.log")),
            kv("step", any_value(i)),
        ];
        records.push(line(
            t + i * 1_000_000_000,
            sev,
            &format!("step {i} loss ok"),
            attrs,
        ));
    }
    send_grpc(c.grpc, request("gpu-1", records.clone())).await?;
    send_grpc(c.grpc, request("gpu-2", records)).await?;
    until_found(&c, "", 60).await?;

    let d = search(&c, "node=gpu-2&severity=error").await?;
    ensure!(d["total"] == 10, "{d}");
    let d = search(
        &c,
        &format!(
            "source={}&q={}",
            enc("/var/log/train.log"),
            enc("attributes.step:7")
        ),
    )
    .await?;
    ensure!(d["total"] == 2, "{d}");
    ensure!(d["hits"][0]["attributes"]["step"] == 7, "{d}");
    ensure!(
        d["hits"][0]["attributes"]["log.file.path"] == "/var/log/train.log",
        "{d}"
    );
    // The time range (end covers its whole millisecond): records 0 to 9 of one node.
    let start = t / 1_000_000_000;
    let d = search(&c, &format!("node=gpu-1&start={start}&end={}", start + 10)).await?;
    ensure!(d["total"] == 10, "{d}");
    let d = search(
        &c,
        &format!(
            "node=gpu-1&start={}",
            enc(&chrono::DateTime::from_timestamp(start + 25, 0)
                .context("time")?
                .to_rfc3339())
        ),
    )
    .await?;
    ensure!(d["total"] == 5, "{d}");

    // Pages of 7, newest first, every record once.
    let mut bodies = Vec::new();
    let mut times = Vec::new();
    let mut cursor = String::new();
    loop {
        let d = search(&c, &format!("node=gpu-1&limit=7&cursor={}", enc(&cursor))).await?;
        ensure!(d["total"] == 30, "{d}");
        for h in d["hits"].as_array().context("hits")? {
            bodies.push(h["body"].as_str().unwrap_or("").to_owned());
            times.push(h["timestamp"].as_str().unwrap_or("").to_owned());
        }
        match d["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    ensure!(bodies.len() == 30, "{bodies:?}");
    ensure!(
        bodies[0] == "step 29 loss ok" && bodies[29] == "step 0 loss ok",
        "{bodies:?}"
    );
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    ensure!(times == sorted, "not newest first: {times:?}");

    for (params, needle) in [
        ("query=body:(unclosed", "query"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("cursor=nonsense", "cursor"),
        ("start=yesterday", "start"),
    ] {
        let r = c
            .get(&format!(
                "/api/v1/logs/search?{}",
                params.replace('(', "%28")
            ))
            .await?;
        ensure!(r.status == 400, "{params}: {} {}", r.status, r.body);
        let v = r.json()?;
        ensure!(
            v["status"] == "error" && v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{params}: {v}"
        );
    }
    c.stop().await
}

fn any_value(i: i64) -> opentelemetry_proto::tonic::common::v1::any_value::Value {
    opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_new_matching_records() -> Result<()> {
    let c = Collector::start(config()).await?;
    let mut stream = tokio::net::TcpStream::connect(c.api).await?;
    let path = format!("/api/v1/logs/tail?node=gpu-7&q={}", enc("needle"));
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    // Wait for the response head before sending, so the stream is subscribed.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        ensure!(n > 0, "tail closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(head.contains("application/x-ndjson"), "{head}");
    let t = now_ns();
    send_grpc(
        c.grpc,
        request(
            "gpu-7",
            vec![
                line(t, "INFO", "hay one", vec![]),
                line(t + 1, "INFO", "needle one", vec![]),
            ],
        ),
    )
    .await?;
    send_grpc(
        c.grpc,
        request(
            "gpu-8",
            vec![line(t + 2, "INFO", "needle elsewhere", vec![])],
        ),
    )
    .await?;
    send_grpc(
        c.grpc,
        request("gpu-7", vec![line(t + 3, "WARN", "needle two", vec![])]),
    )
    .await?;
    let started = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if text.contains("needle two") && text.contains("needle one") {
            ensure!(
                !text.contains("hay one") && !text.contains("elsewhere"),
                "{text}"
            );
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3),
            "tail so far: {text}"
        );
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await??;
        ensure!(n > 0, "tail closed: {text}");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let one = text.find("needle one").context("one")?;
    let two = text.find("needle two").context("two")?;
    ensure!(one < two, "tail out of order: {text}");
    // A stopping collector ends open tails instead of waiting for them.
    tokio::time::timeout(Duration::from_secs(10), c.stop())
        .await
        .context("the collector did not stop while a tail was open")??;
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await??;
    ensure!(
        String::from_utf8_lossy(&got).ends_with("0\r\n\r\n"),
        "the tail did not end cleanly ({n} bytes more)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_counters_are_series_promql_reads() -> Result<()> {
    let c = Collector::start(config()).await?;
    let t = now_ns();
    let xid = |code: i64, gpu: &str| {
        vec![
            kv("vigil.log.source", s("kernel")),
            kv("nvidia.event", s("xid")),
            kv("nvidia.xid", any_value(code)),
            kv("nvidia.gpu", s(gpu)),
        ]
    };
    send_grpc(c.grpc, request("gpu-9", vec![
        line(t, "ERROR", "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.", xid(79, "0")),
        line(t + 1, "ERROR", "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.", xid(79, "0")),
        line(t + 2, "ERROR", "NVRM: Xid (PCI:0000:5e:00): 48, pid=1, DBE", xid(48, "1")),
        line(t + 3, "ERROR", "Out of memory: Killed process 4242 (python)", vec![kv("vigil.log.source", s("kernel"))]),
        line(t + 4, "ERROR", "[Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5, OpType=ALLREDUCE) ran for 600000 milliseconds before timing out.", vec![]),
        line(t + 5, "INFO", "python[77]: segfault at 0 ip 00007f sp 00007ffd error 4 in libc.so.6", vec![]),
        line(t + 6, "INFO", "an ordinary line", vec![]),
    ])).await?;
    let started = Instant::now();
    let want = [
        (
            "vigil_log_xid_errors_total{node=\"gpu-9\",xid=\"79\",gpu=\"0\"}",
            2.0,
        ),
        (
            "vigil_log_xid_errors_total{node=\"gpu-9\",xid=\"48\",gpu=\"1\"}",
            1.0,
        ),
        ("vigil_log_oom_kills_total{node=\"gpu-9\"}", 1.0),
        ("vigil_log_nccl_timeouts_total{node=\"gpu-9\"}", 1.0),
        ("vigil_log_segfaults_total{node=\"gpu-9\"}", 1.0),
    ];
    for (q, v) in want {
        loop {
            let r = c.get(&format!("/api/v1/query?query={}", enc(q))).await?;
            let body = r.json()?;
            let got = body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok());
            if got == Some(v) {
                break;
            }
            ensure!(started.elapsed() < Duration::from_secs(5), "{q}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = c.get("/metrics").await?;
    for name in [
        "vigil_logs_ingested_records_total 7",
        // The log metrics above are counted at commit: all 7 are in the index.
        "vigil_logs_indexed_records_total 7",
        "vigil_logs_index_partitions",
        "vigil_logs_wal_bytes",
        "vigil_logs_commit_duration_seconds_total",
    ] {
        ensure!(r.body.contains(name), "/metrics lacks {name}");
    }
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_tail_need_the_read_token() -> Result<()> {
    let tokens = tempfile::NamedTempFile::new()?;
    std::fs::write(tokens.path(), "read logs-reader-7d1\n")?;
    let mut cfg = config();
    cfg.api_token_file = tokens.path().to_path_buf();
    let c = Collector::start(cfg).await?;
    for path in ["/api/v1/logs/search?q=x", "/api/v1/logs/tail"] {
        let r = c.get(path).await?;
        ensure!(
            r.status == 401,
            "{path} without a token: {} {}",
            r.status,
            r.body
        );
    }
    let mut stream = tokio::net::TcpStream::connect(c.api).await?;
    stream
        .write_all(
            b"GET /api/v1/logs/search?query=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer logs-reader-7d1\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    c.stop().await
}
