use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::*;

fn record(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(len.max(4), (i % 251) as u8);
    v
}

fn ids(batch: &Batch) -> Vec<u32> {
    batch
        .records
        .iter()
        .map(|r| u32::from_le_bytes(r.payload[..4].try_into().unwrap()))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn options(max_bytes: u64, segment_max_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_max_bytes,
    }
}

#[test]
fn append_ack_reopen_keeps_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    for i in 0..5 {
        assert!(spool.append(RecordKind::Metrics, &record(i, 100)).unwrap());
    }
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 5);
    assert_eq!(spool.stats(RecordKind::Metrics).queued_bytes, 5 * 108);
    assert_eq!(spool.stats(RecordKind::Logs), KindStats::default());

    // A byte limit of 250 takes two 100-byte records.
    let batch = spool.peek(RecordKind::Metrics, 250).unwrap();
    assert_eq!(ids(&batch), [0, 1]);
    // Peeking does not consume.
    assert_eq!(ids(&spool.peek(RecordKind::Metrics, 250).unwrap()), [0, 1]);
    spool.ack(&batch).unwrap();
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 3);
    drop(spool);

    let mut spool = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 3);
    let batch = spool.peek(RecordKind::Metrics, u64::MAX).unwrap();
    assert_eq!(ids(&batch), [2, 3, 4]);
    spool.ack(&batch).unwrap();
    // Acknowledging twice is harmless.
    spool.ack(&batch).unwrap();
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 0);
    assert!(
        spool
            .peek(RecordKind::Metrics, u64::MAX)
            .unwrap()
            .records
            .is_empty()
    );
    spool.append(RecordKind::Metrics, &record(5, 10)).unwrap();
    drop(spool);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [5]
    );
}

#[test]
fn a_torn_tail_is_truncated_and_appends_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    for i in 0..3 {
        spool.append(RecordKind::Metrics, &record(i, 50)).unwrap();
    }
    drop(spool);
    let segment = segments(&dir.path().join("metrics")).pop().unwrap();
    let good_len = fs::metadata(&segment).unwrap().len();

    // A crash mid-append: a frame header promising 50 bytes and 20 of them.
    let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
    f.write_all(&50u32.to_le_bytes()).unwrap();
    f.write_all(&[0; 24]).unwrap();
    drop(f);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(fs::metadata(&segment).unwrap().len(), good_len);
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 3);
    spool.append(RecordKind::Metrics, &record(3, 50)).unwrap();
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [0, 1, 2, 3]
    );
    drop(spool);

    // A complete frame whose payload was not all written (checksum fails).
    let len = fs::metadata(&segment).unwrap().len();
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&segment, &bytes).unwrap();
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(fs::metadata(&segment).unwrap().len(), len - 58);
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [0, 1, 2]
    );
}

#[test]
fn records_stay_in_order_across_segments_and_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // About three 100-byte records per segment.
    let opts = options(1 << 20, 8 + 3 * 108);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    for i in 0..20 {
        spool.append(RecordKind::Metrics, &record(i, 100)).unwrap();
    }
    let metrics_dir = dir.path().join("metrics");
    assert_eq!(segments(&metrics_dir).len(), 7);
    let mut seen = Vec::new();
    loop {
        let batch = spool.peek(RecordKind::Metrics, 450).unwrap();
        if batch.records.is_empty() {
            break;
        }
        assert!(batch.records.len() <= 4);
        seen.extend(ids(&batch));
        spool.ack(&batch).unwrap();
        if seen.len() == 8 {
            // A restart halfway resumes where the acknowledgements stopped.
            drop(spool);
            spool = Spool::open(dir.path(), opts).unwrap();
            assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 12);
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    // Only the segment appends go to is left.
    assert_eq!(segments(&metrics_dir).len(), 1);
    assert_eq!(spool.stats(RecordKind::Metrics).queued_bytes, 0);
}

#[test]
fn at_the_cap_metrics_go_oldest_first_before_any_log() {
    let dir = tempfile::tempdir().unwrap();
    // Room for ten 100-byte records (108 bytes framed).
    let opts = options(1080, 300);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    for i in 0..4 {
        spool
            .append(RecordKind::Logs, &record(100 + i, 100))
            .unwrap();
    }
    for i in 0..6 {
        spool.append(RecordKind::Metrics, &record(i, 100)).unwrap();
    }
    // Full. Two more logs push out the two oldest metrics, not a log.
    for i in 4..6 {
        spool
            .append(RecordKind::Logs, &record(100 + i, 100))
            .unwrap();
    }
    let metrics = spool.stats(RecordKind::Metrics);
    assert_eq!(
        (
            metrics.queued_records,
            metrics.dropped_records,
            metrics.dropped_bytes
        ),
        (4, 2, 216)
    );
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [2, 3, 4, 5]
    );
    assert_eq!(spool.stats(RecordKind::Logs).dropped_records, 0);

    // A new metrics record pushes out the oldest metrics record.
    assert!(spool.append(RecordKind::Metrics, &record(6, 100)).unwrap());
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [3, 4, 5, 6]
    );

    // Logs fill the rest: every metric goes first, then the oldest logs.
    for i in 6..12 {
        spool
            .append(RecordKind::Logs, &record(100 + i, 100))
            .unwrap();
    }
    assert_eq!(spool.stats(RecordKind::Metrics).queued_records, 0);
    assert_eq!(spool.stats(RecordKind::Logs).queued_records, 10);
    assert_eq!(spool.stats(RecordKind::Logs).dropped_records, 2);
    assert_eq!(
        ids(&spool.peek(RecordKind::Logs, u64::MAX).unwrap()),
        (102..112).collect::<Vec<_>>()
    );

    // With only logs queued, a metrics record does not displace a log: it is dropped.
    assert!(!spool.append(RecordKind::Metrics, &record(7, 100)).unwrap());
    assert_eq!(spool.stats(RecordKind::Metrics).dropped_records, 8);
    assert_eq!(spool.stats(RecordKind::Logs).queued_records, 10);

    // A record larger than the whole cap is refused and counted.
    assert!(matches!(
        spool.append(RecordKind::Logs, &record(0, 2000)),
        Err(SpoolError::TooLarge { .. })
    ));
    assert_eq!(spool.stats(RecordKind::Logs).dropped_records, 3);
    // The cap holds on disk within a segment per kind.
    let on_disk: u64 = ["metrics", "logs"]
        .iter()
        .flat_map(|k| segments(&dir.path().join(k)))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= 1080 + 2 * 300, "{on_disk} bytes on disk");
}

#[test]
fn an_ack_of_records_dropped_meanwhile_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), options(540, 300)).unwrap();
    for i in 0..5 {
        spool.append(RecordKind::Metrics, &record(i, 100)).unwrap();
    }
    let in_flight = spool.peek(RecordKind::Metrics, 250).unwrap();
    assert_eq!(ids(&in_flight), [0, 1]);
    // While it is in flight, the cap drops records 0..3.
    for i in 5..8 {
        spool.append(RecordKind::Metrics, &record(i, 100)).unwrap();
    }
    spool.ack(&in_flight).unwrap();
    assert_eq!(
        ids(&spool.peek(RecordKind::Metrics, u64::MAX).unwrap()),
        [3, 4, 5, 6, 7]
    );
}

#[test]
fn a_damaged_head_file_resends_rather_than_loses() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    for i in 0..3 {
        spool.append(RecordKind::Logs, &record(i, 10)).unwrap();
    }
    let batch = spool.peek(RecordKind::Logs, 10).unwrap();
    spool.ack(&batch).unwrap();
    drop(spool);
    fs::write(dir.path().join("logs/head"), b"garbage").unwrap();
    let mut spool = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(
        ids(&spool.peek(RecordKind::Logs, u64::MAX).unwrap()),
        [0, 1, 2]
    );
}
