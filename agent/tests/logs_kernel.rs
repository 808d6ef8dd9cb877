//! The kernel log: kmsg records and NVRM lines parsed from every captured line in
//! `testdata/kernel/`, and a running agent (simulated GPUs, a kmsg file) that maps Xid
//! lines to GPUs, ships them with their attributes and counts each Xid once when NVML
//! reports it too.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use regex::Regex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use vigil_agent::AgentConfig;
use vigil_agent::logs::kmsg::{RecordSplitter, parse_record};
use vigil_agent::logs::nvrm::{self, NvidiaEvent};
use vigil_agent::ship::spool::{RecordKind, Spool, SpoolOptions};
use vigil_proto::logs as attr;
use vigil_proto::otlp::any_value::Value;
use vigil_proto::otlp::decode_logs_request;

fn testdata(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/kernel")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("captured kernel log {} is missing: {e}", path.display()))
}

/// NVML's format of the address in a `PCI:dddd:bb:dd` group of the oracle regexes.
fn nvml(domain: &str, bus: &str, device: &str) -> String {
    format!(
        "{:08X}:{}:{}.0",
        u32::from_str_radix(domain, 16).unwrap(),
        bus.to_uppercase(),
        device.to_uppercase()
    )
}

#[test]
fn every_captured_nvrm_variant_parses_to_its_code_and_address() {
    // Oracles written as regexes, independent of the parser's own code.
    let xid = Regex::new(
        r"NVRM: Xid \(PCI:([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\): (\d+)(?:, (.*))?$",
    )
    .unwrap();
    let sxid =
        Regex::new(r"SXid \(PCI:([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.0\): (\d+), (.*)$")
            .unwrap();
    let text = testdata("nvrm-message-variants.txt");
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unparsed = Vec::new();
    let mut fallen = Vec::new();
    for line in text.lines() {
        let parsed = nvrm::parse(line);
        if let Some(c) = xid.captures(line) {
            let m = parsed.with_context(|| line.to_owned()).unwrap();
            assert_eq!(m.event, NvidiaEvent::Xid, "{line}");
            assert_eq!(m.code, Some(c[4].parse().unwrap()), "{line}");
            assert_eq!(
                m.pci.unwrap().to_string(),
                nvml(&c[1], &c[2], &c[3]),
                "{line}"
            );
            assert_eq!(
                m.message,
                c.get(5).map_or("", |g| g.as_str().trim()),
                "{line}"
            );
            *kinds.entry("xid").or_default() += 1;
        } else if let Some(c) = sxid.captures(line) {
            let m = parsed.with_context(|| line.to_owned()).unwrap();
            assert_eq!(m.event, NvidiaEvent::Sxid, "{line}");
            assert_eq!(m.code, Some(c[4].parse().unwrap()), "{line}");
            assert_eq!(
                m.pci.unwrap().to_string(),
                nvml(&c[1], &c[2], &c[3]),
                "{line}"
            );
            assert_eq!(m.message, c[5].trim(), "{line}");
            *kinds.entry("sxid").or_default() += 1;
        } else {
            match parsed {
                Some(m) => {
                    assert_eq!(m.event, NvidiaEvent::FallenOffBus, "{line}");
                    fallen.push((line, m.pci.map(|p| p.to_string())));
                }
                None => unparsed.push(line),
            }
        }
    }
    assert_eq!(kinds["xid"], 97, "{kinds:?}");
    assert_eq!(kinds["sxid"], 14, "{kinds:?}");
    assert_eq!(
        fallen,
        [
            ("GPU has fallen off the bus", None),
            (
                "NVRM: GPU 0000:29:00.0: GPU has fallen off the bus.",
                Some("00000000:29:00.0".to_owned())
            ),
            (
                "NVRM: GPU 18:00.0: GPU has fallen off the bus.",
                Some("00000000:18:00.0".to_owned())
            ),
            (
                "NVRM: fallen off the bus and is not responding to commands.",
                None
            ),
        ]
    );
    assert_eq!(
        unparsed,
        [
            "if the target GPU has fallen off the bus or is otherwise inaccessible",
            "nvidia-nvswitch0: SXid (PCI:0000:00:00.0): xyz, Fatal error",
        ]
    );
}

#[test]
fn captured_dmesg_output_gives_the_right_xid_and_gpu() {
    let mut codes = Vec::new();
    for line in testdata("dmesg-xid-119-gsp-timeout.log").lines() {
        match nvrm::parse(line) {
            Some(m) => {
                assert!(line.contains("NVRM: Xid"), "{line}");
                assert_eq!(m.pci.unwrap().to_string(), "00000000:9B:00.0");
                assert!(m.message.starts_with("pid="), "{line}");
                codes.push(m.code.unwrap());
            }
            None => assert!(!line.contains("Xid"), "{line}"),
        }
    }
    assert_eq!(codes, [119; 5]);

    let mut codes = Vec::new();
    for line in testdata("dmesg-decode-iso-xid13.log").lines() {
        if let Some(m) = nvrm::parse(line) {
            assert_eq!(m.pci.unwrap().to_string(), "00000000:38:00.0");
            codes.push(m.code.unwrap());
        } else {
            assert!(
                line.contains("oom") || line.contains("Out of memory"),
                "{line}"
            );
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 13).count(), 16);
    assert_eq!(codes.last(), Some(&43));
    assert_eq!(codes.len(), 17);

    for line in testdata("dmesg-decode-iso-nccl-segfault.log").lines() {
        assert_eq!(nvrm::parse(line), None, "{line}");
    }
}

#[test]
fn captured_kmsg_records_parse() {
    for (file, records, first_seq) in [
        ("kmsg-raw-nvswitch.log", 47, 3964),
        ("kmsg-raw-peermem.log", 8, 3973),
    ] {
        let mut text = testdata(file);
        for line in text.lines() {
            let r = parse_record(line.as_bytes())
                .with_context(|| line.to_owned())
                .unwrap();
            assert_eq!(r.level(), 6, "{line}");
            assert!(!r.message.is_empty());
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let mut out = Vec::new();
        let mut splitter = RecordSplitter::default();
        // In pieces, as reads of a FIFO would hand them out.
        for chunk in text.as_bytes().chunks(97) {
            splitter.feed(chunk, &mut |r| out.push(r));
        }
        splitter.finish(&mut |r| out.push(r));
        assert_eq!(out.len(), records, "{file}");
        assert_eq!(out[0].seq, first_seq, "{file}");
    }
    let text = testdata("kmsg-raw-nvswitch.log");
    let last = parse_record(text.lines().last().unwrap().as_bytes()).unwrap();
    assert_eq!((last.seq, last.usec), (4010, 57_631_398_464));
    assert_eq!(
        last.message,
        b"IPv6: ADDRCONF(NETDEV_CHANGE): calic24dd7712a6: link becomes ready"
    );
}

// --- a running agent ---------------------------------------------------------------

fn boottime_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn write_faults(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn metrics(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// The value of the first sample of `name` that has every label in `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// A port nothing listens on: the agent spools and never ships.
fn closed_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A spooled record: body, attributes, severity number.
type Spooled = (String, BTreeMap<String, Value>, i32);

fn kernel_records(state: &Path) -> Result<Vec<Spooled>> {
    let mut spool = Spool::open(&state.join("spool"), SpoolOptions::with_max_bytes(1 << 30))?;
    let batch = spool.peek(RecordKind::Logs, u64::MAX)?;
    let mut out = Vec::new();
    for record in batch.records {
        let req = decode_logs_request(&record.payload)?;
        for r in req
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            let attrs: BTreeMap<String, Value> = r
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
                .collect();
            let Some(Value::StringValue(body)) = r.body.clone().and_then(|b| b.value) else {
                bail!("body is not a string");
            };
            out.push((body, attrs, r.severity_number));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_xids_map_to_gpus_ship_and_count_once_with_nvml() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state: PathBuf = dir.path().join("state");
    let faults = dir.path().join("faults.toml");
    let kmsg = dir.path().join("kmsg");
    write_faults(&faults, "")?;
    // Ring-buffer history from before the agent ever ran: shipped, not counted.
    fs::write(
        &kmsg,
        "3,10,5000000,-;NVRM: Xid (PCI:0000:18:00): 48, pid=1, DBE\n",
    )?;
    let mut config = AgentConfig {
        state_dir: state.clone(),
        node_name: "node-kernel".into(),
        interval_secs: 0.25,
        source_timeout_secs: 0.25,
        ..AgentConfig::default()
    };
    config.gpu.simulate_gpus = 2;
    config.gpu.simulate_faults = faults.clone();
    config.logs.kmsg = kmsg.clone();
    config.shipper.collector = format!("http://127.0.0.1:{}", closed_port()?);
    config.shipper.retry_max_secs = 0.5;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Xid 79 on GPU 0 from both paths; Xid 13 on GPU 1 only in the kernel log; Xid 48 on
    // GPU 1 only from NVML.
    write_faults(
        &faults,
        "[[xid]]\ngpu = 0\ncode = 79\n\n[[xid]]\ngpu = 1\ncode = 48\n",
    )?;
    let usec = boottime_usec();
    append(
        &kmsg,
        &format!(
            "3,11,{usec},-;NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n \
             SUBSYSTEM=pci\n\
             4,12,{usec},-;NVRM: Xid (PCI:0000:2a:00): 13, pid=77, name=python3, Graphics SM Warp Exception\n\
             6,13,{usec},-;nvidia-nvswitch0: SXid (PCI:0000:a9:00.0): 20034, Fatal, Link 30 LTSSM Fault Up\n"
        ),
    )?;
    let xid = |body: &str, gpu: &str, code: &str| {
        sample(
            body,
            "vigil_gpu_xid_errors_total",
            &[("gpu", gpu), ("xid", code)],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = metrics(addr).await?;
        let seen = (
            xid(&body, "0", "79"),
            xid(&body, "1", "13"),
            xid(&body, "1", "48"),
        );
        if seen == (Some(1.0), Some(1.0), Some(1.0)) {
            break;
        }
        if Instant::now() > deadline {
            bail!("xid counters never reached 1 each: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a wrongly counted twin time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = metrics(addr).await?;
    ensure!(xid(&body, "0", "79") == Some(1.0), "Xid 79 counted twice");
    ensure!(
        xid(&body, "0", "48") == Some(0.0) || xid(&body, "0", "48").is_none(),
        "history counted"
    );
    let kernel = |event, code, pci| {
        sample(
            &body,
            "vigil_kernel_nvidia_events_total",
            &[("event", event), ("code", code), ("pci_bus_id", pci)],
        )
    };
    ensure!(kernel("xid", "79", "00000000:18:00.0") == Some(1.0));
    ensure!(kernel("sxid", "20034", "00000000:A9:00.0") == Some(1.0));
    ensure!(
        kernel("xid", "48", "00000000:18:00.0").is_none(),
        "history counted"
    );
    ensure!(
        sample(
            &body,
            "vigil_agent_log_lines_total",
            &[("source", "kernel")]
        ) == Some(4.0)
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .context("agent did not stop")???;

    let records = kernel_records(&state)?;
    ensure!(records.len() == 4, "{records:?}");
    let (body, attrs, severity) = &records[1];
    ensure!(body.starts_with("NVRM: Xid (PCI:0000:18:00): 79"));
    ensure!(*severity == 17);
    let s = |v: &str| Value::StringValue(v.to_owned());
    ensure!(attrs[attr::SOURCE] == s("kernel"));
    ensure!(attrs[attr::KERNEL_SEQ] == Value::IntValue(11));
    ensure!(attrs[attr::NVIDIA_EVENT] == s("xid"));
    ensure!(attrs[attr::NVIDIA_XID] == Value::IntValue(79));
    ensure!(attrs[attr::NVIDIA_PCI_BUS_ID] == s("00000000:18:00.0"));
    ensure!(attrs[attr::NVIDIA_GPU] == s("0"));
    ensure!(
        matches!(&attrs[attr::NVIDIA_GPU_UUID], Value::StringValue(u) if u.starts_with("GPU-"))
    );
    ensure!(
        attrs[attr::NVIDIA_MESSAGE]
            == s("pid='<unknown>', name=<unknown>, GPU has fallen off the bus.")
    );
    ensure!(attrs["kernel.subsystem"] == s("pci"));
    ensure!(records[2].1[attr::NVIDIA_GPU] == s("1"));
    ensure!(
        !records[3].1.contains_key(attr::NVIDIA_GPU),
        "an NVSwitch is no GPU"
    );

    // A restart does not ship the ring buffer again.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut config = AgentConfig {
        state_dir: state.clone(),
        node_name: "node-kernel".into(),
        interval_secs: 0.25,
        ..AgentConfig::default()
    };
    config.gpu.enabled = false;
    config.logs.kmsg = kmsg.clone();
    config.shipper.collector = format!("http://127.0.0.1:{}", closed_port()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    append(&kmsg, "6,14,1,-;after the restart\n")?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .context("agent did not stop")???;
    let records = kernel_records(&state)?;
    let bodies: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    ensure!(
        bodies.len() == 5 && bodies[4] == "after the restart",
        "{bodies:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_serves_as_the_kernel_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("kmsg.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().context("path")?)?;
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    ensure!(
        unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0,
        "mkfifo failed"
    );
    let mut config = AgentConfig {
        state_dir: dir.path().join("state"),
        interval_secs: 0.25,
        source_timeout_secs: 0.25,
        ..AgentConfig::default()
    };
    config.gpu.enabled = false;
    config.logs.kmsg = fifo.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A writer comes, writes in two pieces, goes, and comes back.
    for text in [
        "6,1,1000,-;first rec",
        "ord\n4,2,2000,-;second record\n",
        "3,3,3000,-;after the writer reopened\n",
    ] {
        let fifo = fifo.clone();
        let text = text.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut w = fs::OpenOptions::new().write(true).open(&fifo)?;
            w.write_all(text.as_bytes())?;
            Ok(())
        })
        .await??;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = metrics(addr).await?;
        let lines = sample(
            &body,
            "vigil_agent_log_lines_total",
            &[("source", "kernel")],
        );
        if lines == Some(3.0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "kernel lines from the FIFO: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .context("agent did not stop")???;
    Ok(())
}
