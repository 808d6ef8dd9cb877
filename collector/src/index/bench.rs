//! Raw indexing for the benchmark: records straight into hourly partitions with the
//! index's schema, writer memory and commit cadence, without the WAL or the network —
//! the ceiling of what ingest can reach on this machine.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use tantivy::{IndexWriter, TantivyDocument};

use super::partition::{Partition, hour_of, payload, writer_threads};
use super::record::{MAX_BATCH_RECORDS, record_id};
use super::schema::{AttributesDoc, Fields};
use super::{IndexError, LogRecord};

/// What [`index_raw`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawIndexReport {
    pub records: u64,
    /// Bytes of bodies.
    pub bytes: u64,
    pub seconds: f64,
    pub commits: u64,
}

/// Indexes `records` into `<dir>/index/hour-N/`, committing every `commit_interval`
/// and once at the end, and waits for merges to finish (not counted in `seconds`).
/// Blocks.
pub fn index_raw(
    dir: &Path,
    records: impl Iterator<Item = LogRecord>,
    commit_interval: Duration,
    writer_memory_bytes: usize,
) -> Result<RawIndexReport, IndexError> {
    let fields = Fields::new();
    let root = dir.join("index");
    std::fs::create_dir_all(&root).map_err(|e| IndexError::io("create", &root, e))?;
    let mut writers: HashMap<i64, IndexWriter<TantivyDocument>> = HashMap::new();
    let mut dirty = BTreeSet::new();
    let mut report = RawIndexReport::default();
    let started = Instant::now();
    let mut last_commit = Instant::now();
    let mut seq = 1u64;
    let mut in_batch = 0usize;
    let mut attributes = AttributesDoc::default();
    let err = |what: &'static str| move |e| IndexError::tantivy(what.into(), e);
    let commit = |writers: &mut HashMap<i64, IndexWriter<TantivyDocument>>,
                  dirty: &mut BTreeSet<i64>,
                  seq: u64|
     -> Result<u64, IndexError> {
        let mut n = 0;
        for hour in std::mem::take(dirty) {
            if let Some(w) = writers.get_mut(&hour) {
                let mut p = w.prepare_commit().map_err(err("preparing a commit"))?;
                p.set_payload(&payload(seq));
                p.commit().map_err(err("committing"))?;
                n += 1;
            }
        }
        Ok(n)
    };
    for r in records {
        let hour = hour_of(r.time_ns);
        let w = match writers.entry(hour) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let p = Partition::open(&root, hour, &fields)?;
                v.insert(
                    p.index
                        .writer_with_num_threads(
                            writer_threads(writer_memory_bytes),
                            writer_memory_bytes,
                        )
                        .map_err(err("opening a writer"))?,
                )
            }
        };
        report.records += 1;
        report.bytes += r.body.len() as u64;
        w.add_document(fields.document(&r, record_id(seq, in_batch), &mut attributes))
            .map_err(err("adding a document"))?;
        dirty.insert(hour);
        in_batch += 1;
        if in_batch as u64 == MAX_BATCH_RECORDS / 2 {
            seq += 1;
            in_batch = 0;
        }
        if report.records % 1024 == 0 && last_commit.elapsed() >= commit_interval {
            report.commits += commit(&mut writers, &mut dirty, seq)?;
            last_commit = Instant::now();
            seq += 1;
            in_batch = 0;
        }
    }
    report.commits += commit(&mut writers, &mut dirty, seq)?;
    report.seconds = started.elapsed().as_secs_f64();
    for (_, w) in writers {
        w.wait_merging_threads().map_err(err("merging"))?;
    }
    Ok(report)
}

/// Indexes `bodies` into a fresh index in `<dir>` with the least an index can do — one
/// text field, tokenized with positions like `body`, nothing stored, no other field —
/// with the same writer memory, threads and commit cadence as [`index_raw`]: tantivy's
/// own floor on this machine, which no schema of ours can beat. Blocks.
pub fn index_floor<S: AsRef<str>>(
    dir: &Path,
    bodies: impl Iterator<Item = S>,
    commit_interval: Duration,
    writer_memory_bytes: usize,
) -> Result<RawIndexReport, IndexError> {
    let err = |what: &'static str| move |e| IndexError::tantivy(what.into(), e);
    std::fs::create_dir_all(dir).map_err(|e| IndexError::io("create", dir, e))?;
    let mut schema = tantivy::schema::Schema::builder();
    let body = schema.add_text_field("body", tantivy::schema::TEXT);
    let index = tantivy::Index::create_in_dir(dir, schema.build())
        .map_err(err("creating the floor index"))?;
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(writer_threads(writer_memory_bytes), writer_memory_bytes)
        .map_err(err("opening a writer"))?;
    let mut report = RawIndexReport::default();
    let started = Instant::now();
    let mut last_commit = Instant::now();
    for b in bodies {
        let b = b.as_ref();
        report.records += 1;
        report.bytes += b.len() as u64;
        writer
            .add_document(tantivy::doc!(body => b))
            .map_err(err("adding a document"))?;
        if report.records % 1024 == 0 && last_commit.elapsed() >= commit_interval {
            writer.commit().map_err(err("committing"))?;
            report.commits += 1;
            last_commit = Instant::now();
        }
    }
    writer.commit().map_err(err("committing"))?;
    report.commits += 1;
    report.seconds = started.elapsed().as_secs_f64();
    writer.wait_merging_threads().map_err(err("merging"))?;
    Ok(report)
}
