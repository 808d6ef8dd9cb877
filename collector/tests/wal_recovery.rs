//! A crash can leave the last WAL segment cut anywhere or followed by garbage. Reopening
//! must keep every batch before the damage, drop the damaged one whole, and go on
//! accepting appends — at every cut position, not just convenient ones.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use vigil_collector::store::{Store, StoreOptions};
use vigil_rules::promql::{Labels, MatchOp, Matcher, Matchers};

const BATCHES: i64 = 6;
const SERIES: usize = 5;

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "node_load1".to_string()),
        ("node", format!("n{i}")),
    ])
}

fn fill(dir: &Path) -> Result<()> {
    let store = Store::open(StoreOptions::new(dir))?;
    for k in 0..BATCHES {
        let batch: Vec<_> = (0..SERIES)
            .map(|i| (labels(i), k * 1_000, (k * 10 + i as i64) as f64))
            .collect();
        store.append_batch(&batch)?;
    }
    store.sync()?;
    Ok(())
}

fn last_segment(dir: &Path) -> Result<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.join("wal"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 8)
        })
        .filter(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    segs.sort();
    segs.pop().context("no non-empty segment")
}

/// Batches present per series; asserts every series holds the same prefix 0..n.
fn present_batches(store: &Store) -> Result<i64> {
    let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", "node_load1")]);
    let got = store.select(&m, i64::MIN, i64::MAX)?;
    let mut n = None;
    for s in &got {
        let i = (0..SERIES)
            .find(|&i| labels(i) == s.labels)
            .context("unknown series")?;
        for (k, &(t, v)) in s.samples.iter().enumerate() {
            let k = k as i64;
            ensure!(
                t == k * 1_000 && v == (k * 10 + i as i64) as f64,
                "series {i} sample {k}: ({t}, {v})"
            );
        }
        let len = s.samples.len() as i64;
        ensure!(n.is_none_or(|n| n == len), "batches are all-or-nothing");
        n = Some(len);
    }
    Ok(n.unwrap_or(0))
}

#[test]
fn every_cut_position_keeps_the_prefix() -> Result<()> {
    let template = tempfile::tempdir()?;
    fill(template.path())?;
    let seg = last_segment(template.path())?;
    let full = fs::read(&seg)?;
    let name = seg.file_name().context("segment name")?.to_owned();
    let mut previous = 0;
    for cut in 0..=full.len() {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("wal"))?;
        fs::write(dir.path().join("wal").join(&name), &full[..cut])?;
        let store = Store::open(StoreOptions::new(dir.path()))?;
        let n = present_batches(&store)?;
        ensure!(
            n >= previous,
            "cut {cut}: {n} batches, fewer than at a shorter cut"
        );
        previous = n;
        // The repaired store takes new appends and keeps them across another reopen.
        store.append(&labels(0), 1_000_000, 1.0)?;
        drop(store);
        let store = Store::open(StoreOptions::new(dir.path()))?;
        ensure!(
            store.stats().head_samples as i64 == n * SERIES as i64 + 1,
            "cut {cut}"
        );
    }
    ensure!(previous == BATCHES, "the uncut segment holds every batch");
    Ok(())
}

#[test]
fn garbage_after_the_last_record_is_truncated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fill(dir.path())?;
    let seg = last_segment(dir.path())?;
    let good_len = fs::metadata(&seg)?.len();
    OpenOptions::new()
        .append(true)
        .open(&seg)?
        .write_all(&[0x17, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])?;
    let log = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let store = tracing::subscriber::with_default(subscriber, || {
        Store::open(StoreOptions::new(dir.path()))
    })?;
    ensure!(present_batches(&store)? == BATCHES);
    ensure!(fs::metadata(&seg)?.len() == good_len, "tail not truncated");
    // The operator learns which file was cut, and where.
    let text = log.text();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN"))
        .context("no warning logged")?;
    ensure!(warning.contains(&seg.display().to_string()), "{warning}");
    ensure!(warning.contains(&format!("offset={good_len}")), "{warning}");
    Ok(())
}

/// Collects formatted log lines for assertions.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}
