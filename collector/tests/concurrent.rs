//! Writers, readers, syncs and checkpoints at once: readers only ever see ascending,
//! complete prefixes, and after the dust settles (and after a reopen) every sample is
//! there exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail, ensure};
use vigil_collector::store::{Store, StoreOptions, TimeRange};
use vigil_rules::promql::{Labels, MatchOp, Matcher, Matchers};

const WRITERS: usize = 4;
const SERIES_PER_WRITER: usize = 25;
const STEPS: i64 = 400;

fn labels(w: usize, i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "node_network_receive_bytes_total".to_string()),
        ("node", format!("w{w}")),
        ("device", format!("eth{i}")),
    ])
}

fn value(w: usize, i: usize, k: i64) -> f64 {
    (k * 1_000 + (w * 100 + i) as i64) as f64
}

fn check(store: &Store, complete: bool) -> Result<usize> {
    let m = Matchers::new(vec![Matcher::new(
        MatchOp::Equal,
        "__name__",
        "node_network_receive_bytes_total",
    )]);
    let got = store.select(&m, i64::MIN, i64::MAX)?;
    let mut total = 0;
    for s in &got {
        let node = s.labels.get("node").unwrap_or_default();
        let dev = s.labels.get("device").unwrap_or_default();
        let w: usize = node.trim_start_matches('w').parse()?;
        let i: usize = dev.trim_start_matches("eth").parse()?;
        for (k, &(t, v)) in s.samples.iter().enumerate() {
            let k = k as i64;
            ensure!(
                t == k * 10_000 && v == value(w, i, k),
                "{}: sample {k} is ({t}, {v})",
                s.labels
            );
        }
        if complete {
            ensure!(
                s.samples.len() as i64 == STEPS,
                "{}: {} samples",
                s.labels,
                s.samples.len()
            );
        }
        total += s.samples.len();
    }
    if complete {
        ensure!(
            got.len() == WRITERS * SERIES_PER_WRITER,
            "{} series",
            got.len()
        );
    }
    Ok(total)
}

#[test]
fn concurrent_writers_readers_and_checkpoints() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = StoreOptions::new(dir.path());
    opts.wal_segment_bytes = 32 << 10;
    let store = Arc::new(Store::open(opts.clone())?);
    let done = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<()> {
                for k in 0..STEPS {
                    let batch: Vec<_> = (0..SERIES_PER_WRITER)
                        .map(|i| (labels(w, i), k * 10_000, value(w, i, k)))
                        .collect();
                    let r = store.append_batch(&batch)?;
                    ensure!(r.accepted == SERIES_PER_WRITER, "{r:?}");
                    if k % 50 == 0 {
                        store.sync()?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut rounds = 0;
            let mut last_total = 0;
            while !done.load(Ordering::Relaxed) {
                let total = check(&store, false)?;
                ensure!(
                    total >= last_total,
                    "samples went from {last_total} to {total}"
                );
                last_total = total;
                let nodes = store.label_values("node", &[], TimeRange::ALL);
                ensure!(nodes.len() <= WRITERS, "{nodes:?}");
                rounds += 1;
            }
            Ok(rounds)
        })
    };
    let checkpointer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                store.checkpoint()?;
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(n)
        })
    };
    for w in writers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => bail!("writer panicked"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let (Ok(rounds), Ok(checkpoints)) = (reader.join(), checkpointer.join()) else {
        bail!("reader or checkpointer panicked");
    };
    let (rounds, checkpoints) = (rounds?, checkpoints?);
    ensure!(
        rounds > 0 && checkpoints > 0,
        "reader rounds {rounds}, checkpoints {checkpoints}"
    );

    let expected = WRITERS * SERIES_PER_WRITER * STEPS as usize;
    ensure!(check(&store, true)? == expected);
    ensure!(store.stats().samples_appended as usize == expected);
    drop(store);
    let store = Store::open(opts)?;
    ensure!(check(&store, true)? == expected, "after reopen");
    Ok(())
}
