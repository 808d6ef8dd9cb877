//! Files under deploy/ that other programs read, checked by those programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use vigil_e2e::{ChildGuard, binary};

#[test]
fn prometheus_accepts_the_scrape_config_and_the_packs_it_loads() -> anyhow::Result<()> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/prometheus.yml");
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .context("running promtool (Debian's prometheus package; ./tests/run.sh installs it)")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "promtool check config failed:\n{report}"
    );
    // The packs were found and checked, not skipped.
    ensure!(
        report.contains("gpu.yml") && report.contains("node.yml"),
        "{report}"
    );
    Ok(())
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs a command; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} is missing", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// A stripped copy of a binary in `dir`: the debug builds are 100-250 MB, and the
/// installers copy them several times into scratch roots on a shared disk.
fn stripped(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join(name);
    let done = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(binary(name)?)
        .status()
        .is_ok_and(|s| s.success());
    if done { Ok(out) } else { binary(name) }
}

fn install_agent(root: &Path, bin: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    run(Command::new("bash")
        .arg(deploy_dir().join("install-agent.sh"))
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(bin)
        .args(args))
}

#[test]
fn install_agent_into_a_scratch_root_is_complete_idempotent_and_reversible() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let r = root.path();
    let src = tempfile::tempdir()?;
    let token_src = src.path().join("token");
    std::fs::write(&token_src, "s3cret-node-token\n")?;
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls/ca.pem");
    let bin = stripped("vigil-agent", src.path())?;

    // A dry run changes nothing.
    let (ok, out) = install_agent(r, &bin, &["--dry-run"])?;
    ensure!(ok, "dry run failed:\n{out}");
    ensure!(
        out.contains("would install /usr/local/bin/vigil-agent"),
        "{out}"
    );
    ensure!(
        std::fs::read_dir(r)?.next().is_none(),
        "the dry run wrote into the root"
    );

    let (ok, out) = install_agent(
        r,
        &bin,
        &[
            "--collector",
            "https://collector.example:4317",
            "--token-file",
            token_src.to_str().context("path")?,
            "--ca-file",
            ca.to_str().context("path")?,
        ],
    )?;
    ensure!(ok, "install failed:\n{out}");
    // It says what it found about the driver, either way.
    ensure!(
        out.contains("NVIDIA driver") && (out.contains("found") || out.contains("no NVIDIA")),
        "{out}"
    );
    ensure!(mode(&r.join("usr/local/bin/vigil-agent"))? == 0o755);
    ensure!(
        mode(&r.join("etc/vigil/agent.token"))? == 0o640,
        "token mode"
    );
    ensure!(mode(&r.join("etc/vigil/agent.toml"))? == 0o644);
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/vigil-agent.service"))?;
    ensure!(unit == std::fs::read_to_string(deploy_dir().join("systemd/vigil-agent.service"))?);
    ensure!(unit.contains("ExecStart=/usr/local/bin/vigil-agent --config /etc/vigil/agent.toml"));
    if have("systemctl") {
        let wants = r.join("etc/systemd/system/multi-user.target.wants/vigil-agent.service");
        ensure!(
            wants.is_symlink(),
            "the unit was not enabled in the root:\n{out}"
        );
    }
    // The config is the agent's own defaults with the three keys set.
    let config = std::fs::read_to_string(r.join("etc/vigil/agent.toml"))?;
    let parsed: toml::Table = toml::from_str(&config).context("installed agent.toml")?;
    let shipper = parsed["shipper"].as_table().context("[shipper]")?;
    ensure!(shipper["collector"].as_str() == Some("https://collector.example:4317"));
    ensure!(shipper["token_file"].as_str() == Some("/etc/vigil/agent.token"));
    ensure!(shipper["ca_file"].as_str() == Some("/etc/vigil/collector-ca.pem"));
    ensure!(
        std::fs::read(r.join("etc/vigil/collector-ca.pem"))? == std::fs::read(&ca)?,
        "CA not copied"
    );

    // Idempotent: a second run changes nothing, and keeps an edited config.
    std::fs::write(
        r.join("etc/vigil/agent.toml"),
        format!("{config}\n# edited by the admin\n"),
    )?;
    let (ok, out) = install_agent(r, &bin, &[])?;
    ensure!(ok, "second install failed:\n{out}");
    ensure!(out.contains("already installed, nothing changed"), "{out}");
    ensure!(
        std::fs::read_to_string(r.join("etc/vigil/agent.toml"))?.contains("edited by the admin")
    );

    // Uninstall keeps configuration and tokens; --purge removes them.
    let (ok, out) = install_agent(r, &bin, &["--uninstall"])?;
    ensure!(ok, "uninstall failed:\n{out}");
    ensure!(!r.join("usr/local/bin/vigil-agent").exists());
    ensure!(!r.join("etc/systemd/system/vigil-agent.service").exists());
    ensure!(
        !r.join("etc/systemd/system/multi-user.target.wants/vigil-agent.service")
            .is_symlink()
    );
    ensure!(r.join("etc/vigil/agent.toml").exists() && r.join("etc/vigil/agent.token").exists());
    let (ok, out) = install_agent(r, &bin, &["--uninstall", "--purge"])?;
    ensure!(ok, "purge failed:\n{out}");
    ensure!(!r.join("etc/vigil/agent.toml").exists() && !r.join("etc/vigil/agent.token").exists());

    // Bad input is named.
    let (ok, out) = install_agent(r, &bin, &["--ca-file", "/etc/hostname"])?;
    ensure!(
        !ok && out.contains("--ca-file /etc/hostname holds no PEM"),
        "{out}"
    );
    let (ok, out) = install_agent(r, &bin, &["--bogus"])?;
    ensure!(!ok && out.contains("unknown argument: --bogus"), "{out}");
    Ok(())
}

#[test]
fn install_collector_generates_tokens_the_collector_accepts() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let r = root.path();
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls");
    let src = tempfile::tempdir()?;
    let bin = stripped("vigil-collector", src.path())?;
    let (ok, out) = run(Command::new("bash")
        .arg(deploy_dir().join("install-collector.sh"))
        .arg("--root")
        .arg(r)
        .arg("--binary")
        .arg(&bin)
        .arg("--tls-cert")
        .arg(tls.join("collector.pem"))
        .arg("--tls-key")
        .arg(tls.join("collector.key")))?;
    ensure!(ok, "install failed:\n{out}");
    let api = std::fs::read_to_string(r.join("etc/vigil/collector-api-tokens"))?;
    let otlp = std::fs::read_to_string(r.join("etc/vigil/collector-tokens"))?;
    // The values are never printed.
    for line in api
        .lines()
        .chain(otlp.lines())
        .filter(|l| !l.starts_with('#'))
    {
        let token = line.split_whitespace().last().context("empty line")?;
        ensure!(token.len() == 64, "{line:?}");
        ensure!(!out.contains(token), "the installer printed a token");
    }
    ensure!(
        api.lines().any(|l| l.starts_with("admin ")) && api.lines().any(|l| l.starts_with("read "))
    );
    ensure!(mode(&r.join("etc/vigil/collector-api-tokens"))? == 0o640);
    ensure!(mode(&r.join("etc/vigil/tls/collector.key"))? == 0o640);
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(
        r.join("etc/vigil/collector.toml"),
    )?)?;
    ensure!(config["token_file"].as_str() == Some("/etc/vigil/collector-tokens"));
    ensure!(config["api_token_file"].as_str() == Some("/etc/vigil/collector-api-tokens"));
    ensure!(config["tls"]["cert_file"].as_str() == Some("/etc/vigil/tls/collector.pem"));

    // The collector reads the installed config, with its paths moved under the root,
    // and starts on 0.0.0.0 without --insecure because it has tokens.
    let text = std::fs::read_to_string(r.join("etc/vigil/collector.toml"))?
        .replace("\"/etc/vigil/", &format!("\"{}/etc/vigil/", r.display()))
        .replace("0.0.0.0:9436", "127.0.0.1:0")
        .replace("0.0.0.0:4317", "0.0.0.0:0")
        .replace("0.0.0.0:4318", "127.0.0.1:0");
    let moved = r.join("collector-test.toml");
    std::fs::write(&moved, text)?;
    let data = tempfile::tempdir()?;
    let mut child = ChildGuard(
        Command::new(r.join("usr/local/bin/vigil-collector"))
            .arg("--config")
            .arg(&moved)
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = child.0.try_wait()? {
        let mut err = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        anyhow::bail!("the collector refused the installed config ({status}):\n{err}");
    }
    Ok(())
}

#[test]
fn install_fleet_runs_on_every_host_in_parallel_and_sums_up() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let w = work.path();
    // ssh stand-in: runs the remote command locally; hosts named bad-* are unreachable.
    let ssh = w.join("fake-ssh");
    std::fs::write(
        &ssh,
        "#!/usr/bin/env bash\nhost=$1; shift\ncase $host in bad-*) echo \"ssh: connect to host $host port 22: No route to host\" >&2; exit 255;; esac\nexec bash -c \"$*\"\n",
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(w.join("hosts"), "node-a\n# a comment\nbad-c\n\nnode-b\n")?;
    for h in ["node-a", "node-b", "bad-c"] {
        std::fs::create_dir(w.join(h))?;
    }
    let token = w.join("token");
    std::fs::write(&token, "t0ken\n")?;
    let (ok, out) = run(Command::new("bash")
        .arg(deploy_dir().join("install-fleet.sh"))
        .arg(w.join("hosts"))
        .arg("--binary")
        .arg(stripped("vigil-agent", w)?)
        .arg("--ssh")
        .arg(&ssh)
        .arg("--no-sudo")
        .arg("--log-dir")
        .arg(w.join("logs"))
        .args(["--", "--root"])
        .arg(w.join("%h"))
        .args(["--collector", "http://collector:4317", "--token-file"])
        .arg(&token))?;
    ensure!(!ok, "a failed host must fail the run:\n{out}");
    ensure!(
        out.contains("summary: 2 succeeded, 1 failed (of 3)"),
        "{out}"
    );
    ensure!(
        out.contains("ok     node-a") && out.contains("ok     node-b"),
        "{out}"
    );
    ensure!(
        out.contains("FAILED bad-c (exit 255): ssh: connect to host bad-c"),
        "{out}"
    );
    for h in ["node-a", "node-b"] {
        let t = std::fs::read_to_string(w.join(h).join("etc/vigil/agent.token"))?;
        ensure!(t == "t0ken\n", "{h}: token {t:?}");
        ensure!(w.join(h).join("usr/local/bin/vigil-agent").exists());
        ensure!(
            std::fs::read_to_string(w.join("logs").join(format!("{h}.log")))?
                .contains("installed vigil-agent into")
        );
    }
    Ok(())
}

/// A copy of `unit` whose ExecStart runs `bin` (so systemd-analyze finds it).
fn unit_copy(dir: &Path, unit: &str, bin: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(deploy_dir().join("systemd").join(unit))?;
    let name = unit.trim_end_matches(".service");
    let text = text.replace(
        &format!("ExecStart=/usr/local/bin/{name} "),
        &format!("ExecStart={} ", bin.display()),
    );
    ensure!(
        text.contains(&format!("ExecStart={}", bin.display())),
        "{unit}: no ExecStart"
    );
    let path = dir.join(unit);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[test]
fn systemd_accepts_both_units_and_rates_them_hardened() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (unit, bin) in [
        ("vigil-agent.service", "vigil-agent"),
        ("vigil-collector.service", "vigil-collector"),
    ] {
        let path = unit_copy(dir.path(), unit, &binary(bin)?)?;
        let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path))
            .context("systemd-analyze (the systemd package)")?;
        // Unknown keys are only warned about: any output at all is a failure.
        ensure!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{out}"
        );
        // Exposure 0 (locked down) to 10 (unsafe), ×10 for --threshold.
        let (ok, out) = run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
            .arg(&path))?;
        ensure!(ok, "systemd-analyze security {unit} above 3.0:\n{out}");
    }
    // Each permission the agent gets has its reason in a comment just above it.
    let text = std::fs::read_to_string(deploy_dir().join("systemd/vigil-agent.service"))?;
    let lines: Vec<&str> = text.lines().collect();
    for (key, reason) in [
        ("DeviceAllow=char-nvidia*", "nvidia"),
        ("DeviceAllow=/dev/kmsg", "kmsg"),
        ("CapabilityBoundingSet=CAP_SYSLOG", "CAP_SYSLOG"),
        ("ProtectKernelLogs=no", "kmsg"),
    ] {
        let i = lines
            .iter()
            .position(|l| l.starts_with(key))
            .with_context(|| format!("vigil-agent.service has no {key}"))?;
        let explained = lines[i.saturating_sub(10)..i]
            .iter()
            .any(|l| l.starts_with('#') && l.contains(reason));
        ensure!(
            explained,
            "vigil-agent.service: {key} without a comment on {reason}"
        );
    }
    Ok(())
}

/// `--recovery`: the recovery directory with the example scripts, modes the agent
/// accepts, the drop-in; idempotent; `--uninstall` takes the drop-in away with the unit
/// and keeps the scripts.
#[test]
fn install_agent_with_recovery_sets_up_the_directory_and_the_drop_in() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let r = root.path();
    let src = tempfile::tempdir()?;
    let bin = stripped("vigil-agent", src.path())?;
    let (ok, out) = install_agent(r, &bin, &["--recovery", "--no-start"])?;
    ensure!(ok, "install failed:\n{out}");
    let dir = r.join("etc/vigil/recovery.d");
    ensure!(mode(&dir)? == 0o755, "recovery.d mode {:o}", mode(&dir)?);
    for script in ["reset-gpu", "restart-service", "drain-node"] {
        let installed = dir.join(script);
        ensure!(mode(&installed)? == 0o755, "{script} mode");
        ensure!(
            std::fs::read(&installed)?
                == std::fs::read(deploy_dir().join("recovery").join(script))?
        );
    }
    ensure!(!dir.join("README.md").exists());
    let drop_in = r.join("etc/systemd/system/vigil-agent.service.d/recovery.conf");
    ensure!(
        std::fs::read_to_string(&drop_in)?
            == std::fs::read_to_string(deploy_dir().join("systemd/vigil-agent-recovery.conf"))?
    );
    let (ok, out) = install_agent(r, &bin, &["--recovery", "--no-start"])?;
    ensure!(
        ok && !out.contains("installed /"),
        "second run changed something:\n{out}"
    );
    let (ok, out) = install_agent(r, &bin, &["--uninstall"])?;
    ensure!(ok, "uninstall failed:\n{out}");
    ensure!(!drop_in.exists(), "the drop-in outlived its unit");
    ensure!(
        dir.join("reset-gpu").exists(),
        "the scripts went without --purge"
    );
    Ok(())
}

/// The recovery drop-in, applied to the agent's unit as systemd would (its lines after
/// the unit's, `ExecStart=` emptied first), still verifies clean and stays hardened.
#[test]
fn systemd_accepts_the_agent_with_its_recovery_drop_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = binary("vigil-agent")?;
    let path = unit_copy(dir.path(), "vigil-agent.service", &bin)?;
    let drop_in = std::fs::read_to_string(deploy_dir().join("systemd/vigil-agent-recovery.conf"))?;
    ensure!(drop_in.contains("--recovery-dir /etc/vigil/recovery.d"));
    let drop_in = drop_in.replace("/usr/local/bin/vigil-agent", &bin.display().to_string());
    let mut unit = std::fs::read_to_string(&path)?;
    unit.push('\n');
    unit.push_str(&drop_in);
    std::fs::write(&path, unit)?;
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path))?;
    ensure!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify with the recovery drop-in:\n{out}"
    );
    // Root with three capabilities costs some exposure; the rest of the sandbox holds.
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=45", "--no-pager"])
        .arg(&path))?;
    ensure!(
        ok,
        "the agent with the recovery drop-in is above 4.5:\n{out}"
    );
    Ok(())
}

#[test]
fn prometheus_accepts_the_collector_scrape_snippet_with_real_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("api-read-token"), "read-token\n")?;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls/ca.pem"),
        d.join("ca.pem"),
    )?;
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/vigil-collector.yml"))?;
    ensure!(text.contains("/etc/prometheus/vigil/"));
    let config = d.join("prometheus.yml");
    std::fs::write(
        &config,
        text.replace("/etc/prometheus/vigil/", &format!("{}/", d.display())),
    )?;
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "config"])
        .arg(&config))
    .context("running promtool")?;
    ensure!(
        ok && out.contains("SUCCESS"),
        "promtool check config:\n{out}"
    );
    Ok(())
}

#[test]
fn example_configs_are_the_binaries_defaults() -> anyhow::Result<()> {
    for name in ["vigil-agent", "vigil-collector"] {
        let out = Command::new(binary(name)?)
            .arg("--print-default-config")
            .output()?;
        ensure!(out.status.success());
        let file = deploy_dir().join(format!("config/{}.toml", name.trim_start_matches("vigil-")));
        let example = std::fs::read(&file)?;
        ensure!(
            example == out.stdout,
            "{} drifted from the code's defaults: regenerate it with\n  target/debug/{name} --print-default-config > deploy/config/{}.toml",
            file.display(),
            name.trim_start_matches("vigil-")
        );
    }
    Ok(())
}

/// Every key of `sub` exists in `full`, in the same table, with the same type.
fn keys_within(sub: &toml::Table, full: &toml::Table, at: &str) -> anyhow::Result<()> {
    for (k, v) in sub {
        let here = format!("{at}{k}");
        let Some(d) = full.get(k) else {
            anyhow::bail!("{here} is not a key of the defaults");
        };
        ensure!(
            v.type_str() == d.type_str(),
            "{here}: a {} where the default is a {}",
            v.type_str(),
            d.type_str()
        );
        if let (Some(s), Some(f)) = (v.as_table(), d.as_table()) {
            keys_within(s, f, &format!("{here}."))?;
        }
    }
    Ok(())
}

#[test]
fn kubernetes_manifests_parse_build_and_configure_known_keys() -> anyhow::Result<()> {
    let k8s = deploy_dir().join("kubernetes");
    let mut files = Vec::new();
    let mut stack = vec![k8s.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    ensure!(files.len() >= 6, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        ensure!(!docs.is_empty(), "{}: no document", f.display());
        for doc in &docs {
            ensure!(
                doc.get("apiVersion").is_some() && doc.get("kind").is_some(),
                "{}: a document without apiVersion/kind",
                f.display()
            );
        }
    }
    // The DaemonSet: hostPID off, every hostPath explained by a comment above it.
    let ds = std::fs::read_to_string(k8s.join("agent-daemonset.yaml"))?;
    ensure!(ds.contains("hostPID: false"));
    let lines: Vec<&str> = ds.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "hostPath:" {
            let above = lines[..i]
                .iter()
                .rev()
                .take(4)
                .any(|l| l.trim_start().starts_with("# hostPath"));
            ensure!(
                above,
                "agent-daemonset.yaml line {}: a hostPath without its reason",
                i + 1
            );
        }
    }

    // The TOML the ConfigMaps carry uses only keys the binaries know.
    for (file, bin) in [
        ("agent.toml", "vigil-agent"),
        ("collector.toml", "vigil-collector"),
    ] {
        let defaults = Command::new(binary(bin)?)
            .arg("--print-default-config")
            .output()?;
        let full: toml::Table = toml::from_str(std::str::from_utf8(&defaults.stdout)?)?;
        let sub: toml::Table = toml::from_str(&std::fs::read_to_string(k8s.join(file))?)
            .with_context(|| format!("kubernetes/{file}"))?;
        keys_within(&sub, &full, &format!("kubernetes/{file}: "))?;
    }

    if !have("kubectl") {
        eprintln!("kubectl not installed: `kubectl kustomize` not run");
        return Ok(());
    }
    let (ok, out) = run(Command::new("kubectl").arg("kustomize").arg(&k8s))?;
    ensure!(ok, "kubectl kustomize:\n{out}");
    let built: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&out).map_err(|e| anyhow::anyhow!("kustomize output: {e}"))?;
    let kinds: Vec<&str> = built.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "DaemonSet",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ConfigMap",
    ] {
        ensure!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    for d in &built {
        ensure!(
            d["metadata"]["namespace"].as_str().is_some() || d["kind"] == "Namespace",
            "{d}"
        );
    }
    // The kmsg component builds too, and only it makes the agent privileged.
    ensure!(!out.contains("privileged: true"));
    let copy = tempfile::tempdir()?;
    let status = Command::new("cp")
        .arg("-r")
        .arg(&k8s)
        .arg(copy.path())
        .status()?;
    ensure!(status.success());
    let kust = copy.path().join("kubernetes/kustomization.yaml");
    let text = std::fs::read_to_string(&kust)?.replace(
        "# components:\n#   - components/kmsg",
        "components:\n  - components/kmsg",
    );
    ensure!(
        text.contains("\ncomponents:\n"),
        "the kmsg component line moved"
    );
    std::fs::write(&kust, text)?;
    let (ok, out) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(copy.path().join("kubernetes")))?;
    ensure!(ok, "kubectl kustomize with components/kmsg:\n{out}");
    ensure!(
        out.contains("privileged: true") && out.contains("path: /dev/kmsg"),
        "{out}"
    );
    Ok(())
}

#[test]
fn install_scripts_pass_shellcheck() -> anyhow::Result<()> {
    if !have("shellcheck") {
        eprintln!("shellcheck not installed (apt-get install shellcheck): skipped");
        return Ok(());
    }
    let d = deploy_dir();
    let (ok, out) = run(Command::new("shellcheck").arg("-x").current_dir(&d).args([
        "install-agent.sh",
        "install-collector.sh",
        "install-fleet.sh",
        "lib/common.sh",
    ]))?;
    ensure!(ok, "shellcheck:\n{out}");
    Ok(())
}

#[test]
fn install_agent_reports_the_nvidia_driver_it_finds() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let bin = binary("vigil-agent")?;
    let captured = deploy_dir().join("testdata/nvidia-driver-version-open-580.txt");
    let (ok, out) = run(Command::new("bash")
        .arg(deploy_dir().join("install-agent.sh"))
        .env("VIGIL_NVIDIA_VERSION_FILE", &captured)
        .args(["--dry-run", "--require-gpu", "--root"])
        .arg(root.path())
        .arg("--binary")
        .arg(&bin))?;
    ensure!(ok, "{out}");
    ensure!(out.contains("NVIDIA driver 580.159.04 found"), "{out}");

    // No driver: a warning, or with --require-gpu a failure naming what is missing.
    let missing = root.path().join("no-such-version-file");
    let install = |extra: &[&str]| {
        run(Command::new("bash")
            .arg(deploy_dir().join("install-agent.sh"))
            .env("VIGIL_NVIDIA_VERSION_FILE", &missing)
            .args(["--dry-run", "--root"])
            .arg(root.path())
            .arg("--binary")
            .arg(&bin)
            .args(extra))
    };
    let (ok, out) = install(&[])?;
    ensure!(
        ok && out.contains("warning: no NVIDIA driver found"),
        "{out}"
    );
    let (ok, out) = install(&["--require-gpu"])?;
    ensure!(
        !ok && out.contains("error: no NVIDIA driver found")
            && out.contains("no-such-version-file"),
        "{out}"
    );
    Ok(())
}
