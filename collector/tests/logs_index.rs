//! The log index through its library API: search filters, pagination and order, bad
//! queries, retention by partition, and WAL replay after a simulated crash indexing
//! each acknowledged record exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Map, Value};
use vigil_collector::index::{IndexError, LogIndex, LogIndexOptions, LogRecord, SearchRequest};

const HOUR_NS: i64 = 3_600_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn record(t: i64, node: &str, severity: &str, body: &str) -> LogRecord {
    LogRecord {
        time_ns: t,
        node: node.into(),
        source: "/var/log/app.log".into(),
        severity: severity.into(),
        body: body.into(),
        attributes: Map::new(),
    }
}

fn options(dir: &std::path::Path) -> LogIndexOptions {
    let mut o = LogIndexOptions::in_dir(dir);
    o.commit_interval = Duration::from_millis(100);
    o.writer_memory_bytes = 15_000_000;
    o
}

/// Waits until a search finds `n` records (commits are asynchronous).
fn wait_total(index: &LogIndex, req: &SearchRequest, n: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = index.search(req)?.total;
        if total >= n || Instant::now() > deadline {
            return Ok(total);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all(limit: usize) -> SearchRequest {
    SearchRequest {
        limit,
        ..SearchRequest::default()
    }
}

#[test]
fn filters_pagination_and_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let index = LogIndex::open(options(dir.path()), None)?;
    let t0 = now_ns() - 2 * HOUR_NS;
    let mut xid = Map::new();
    xid.insert("nvidia.xid".into(), Value::from(79));
    xid.insert("nvidia.event".into(), Value::from("xid"));
    let mut batch = Vec::new();
    for i in 0..50i64 {
        let node = if i % 2 == 0 { "gpu-a" } else { "gpu-b" };
        let sev = if i % 5 == 0 { "error" } else { "info" };
        // Spread over two hours (two partitions), a few sharing a timestamp.
        let t = t0 + (i / 2) * (HOUR_NS / 20);
        batch.push(record(
            t,
            node,
            sev,
            &format!("line {i} cuda kernel launch"),
        ));
    }
    let mut r = record(
        t0 + HOUR_NS,
        "gpu-a",
        "error",
        "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus",
    );
    r.attributes = xid;
    batch.push(r);
    index.append(batch)?;
    ensure!(wait_total(&index, &all(10), 51)? == 51);
    ensure!(index.partitions().len() >= 2, "{:?}", index.partitions());

    // Newest first, ties broken by arrival (id), pages that cover everything once.
    let mut seen = Vec::new();
    let mut req = all(7);
    loop {
        let page = index.search(&req)?;
        ensure!(page.total == 51, "total {}", page.total);
        seen.extend(page.hits.iter().map(|h| (h.record.time_ns, h.id)));
        match page.next_cursor {
            Some(c) => req.cursor = Some(c),
            None => break,
        }
    }
    ensure!(seen.len() == 51, "{} records over the pages", seen.len());
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    ensure!(seen == sorted, "not newest first: {seen:?}");

    let count = |req: SearchRequest| -> Result<u64> { Ok(index.search(&req)?.total) };
    ensure!(
        count(SearchRequest {
            node: Some("gpu-a".into()),
            ..all(1)
        })? == 26
    );
    ensure!(
        count(SearchRequest {
            severity: Some("ERROR".into()),
            ..all(1)
        })? == 11
    );
    ensure!(
        count(SearchRequest {
            source: Some("/var/log/app.log".into()),
            ..all(1)
        })? == 51
    );
    ensure!(
        count(SearchRequest {
            query: "cuda launch".into(),
            ..all(1)
        })? == 50
    );
    ensure!(
        count(SearchRequest {
            query: "\"fallen off\"".into(),
            ..all(1)
        })? == 1
    );
    ensure!(
        count(SearchRequest {
            query: "attributes.nvidia.xid:79".into(),
            ..all(1)
        })? == 1
    );
    ensure!(
        count(SearchRequest {
            query: "body:line AND NOT body:cuda".into(),
            ..all(1)
        })? == 0
    );
    let first_hour = SearchRequest {
        start_ns: Some(t0),
        end_ns: Some(t0 + HOUR_NS / 2 - 1),
        ..all(100)
    };
    // Records i = 0..=19 fall in [t0, t0 + 10 * HOUR/20).
    ensure!(count(first_hour.clone())? == 20, "{}", count(first_hour)?);

    match index.search(&SearchRequest {
        query: "body:(unclosed".into(),
        ..all(1)
    }) {
        Err(IndexError::BadQuery(m)) => ensure!(m.contains("unclosed"), "{m}"),
        other => anyhow::bail!("bad query answered {other:?}"),
    }
    Ok(())
}

#[test]
fn retention_drops_whole_partitions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut o = options(dir.path());
    o.retention = Duration::from_secs(3 * 3600);
    let index = LogIndex::open(o, None)?;
    let now = now_ns();
    let this_hour = now - now.rem_euclid(HOUR_NS);
    index.append(vec![
        record(this_hour - 2 * HOUR_NS + 5, "n", "info", "two hours back"),
        record(this_hour - HOUR_NS + 5, "n", "info", "one hour back"),
        record(now, "n", "info", "now"),
    ])?;
    ensure!(wait_total(&index, &all(10), 3)? == 3);
    ensure!(index.partitions().len() == 3, "{:?}", index.partitions());
    // Two hours on, the oldest partition ended more than 3 h before; the next not.
    ensure!(index.apply_retention(now + 2 * HOUR_NS)? == 1);
    ensure!(index.partitions().len() == 2);
    ensure!(index.search(&all(10))?.total == 2);
    let dirs = std::fs::read_dir(dir.path().join("logs/index"))?.count();
    ensure!(dirs == 2, "{dirs} partition folders left");
    ensure!(index.apply_retention(now + 5 * HOUR_NS)? == 2);
    ensure!(index.search(&all(10))?.total == 0);
    Ok(())
}

#[test]
fn size_cap_drops_the_oldest_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut o = options(dir.path());
    o.max_bytes = 1;
    let index = LogIndex::open(o, None)?;
    let now = now_ns();
    index.append(vec![
        record(now - 3 * HOUR_NS, "n", "info", "old"),
        record(now - 2 * HOUR_NS, "n", "info", "older"),
        record(now, "n", "info", "new"),
    ])?;
    ensure!(wait_total(&index, &all(10), 3)? == 3);
    ensure!(index.apply_retention(now)? == 2);
    let left = index.search(&all(10))?;
    ensure!(
        left.hits.len() == 1 && left.hits[0].record.body == "new",
        "{left:?}"
    );
    Ok(())
}

#[test]
fn wal_replay_after_a_crash_indexes_each_record_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let now = now_ns();
    let mut acked = 0usize;
    for round in 0..3 {
        let index = LogIndex::open(options(dir.path()), None)?;
        // Batches for 600 ms with 100 ms commits: some committed, the last ones not.
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            let batch: Vec<LogRecord> = (0..20)
                .map(|i| {
                    let n = acked + i;
                    record(now + n as i64, "n", "info", &format!("seq{n}"))
                })
                .collect();
            index.append(batch)?;
            acked += 20;
        }
        if round < 2 {
            index.abandon();
        } else {
            index.close();
        }
    }
    let index = LogIndex::open(options(dir.path()), None)?;
    ensure!(wait_total(&index, &all(1), acked as u64)? == acked as u64);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut req = all(10_000);
    loop {
        let page = index.search(&req)?;
        for h in &page.hits {
            *counts.entry(h.record.body.clone()).or_default() += 1;
        }
        match page.next_cursor {
            Some(c) => req.cursor = Some(c),
            None => break,
        }
    }
    ensure!(
        counts.len() == acked,
        "{} of {acked} records found",
        counts.len()
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "indexed more than once: {twice:?}");
    Ok(())
}
