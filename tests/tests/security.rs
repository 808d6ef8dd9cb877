//! Secure defaults of the real `vigil-collector` and `vigil-agent` binaries: every API
//! route and both OTLP receivers refuse a missing or wrong token (401 /
//! `UNAUTHENTICATED`) and a read token on an admin route (403); a per-node token
//! cannot speak for another node; a non-loopback listener without a token is refused
//! unless `--insecure`; and the agent ships to the collector over TLS signed by a test
//! CA (agent/testdata/tls), with the HTTP API and OTLP/HTTP on TLS as well.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use vigil_e2e::collector::{Collector, TestDir};
use vigil_e2e::otlp::{self, export_grpc, gauge, point, post_protobuf};
use vigil_e2e::{ChildGuard, binary, free_port, http_get, http_request};

const FLEET: &str = "fleet-token-1";
const NODE_A: &str = "node-a-token";
const READ: &str = "read-token-2";
const ADMIN: &str = "admin-token-3";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    Read,
    Admin,
}

/// Every route of the HTTP API, with the role it needs (the auth layer answers before
/// routing, so a token is refused the same whatever the handler would say).
const ROUTES: &[(&str, &str, Needs)] = &[
    ("GET", "/metrics", Needs::Read),
    ("GET", "/api/v1/query?query=1", Needs::Read),
    ("POST", "/api/v1/query", Needs::Read),
    (
        "GET",
        "/api/v1/query_range?query=1&start=0&end=60&step=15",
        Needs::Read,
    ),
    ("POST", "/api/v1/query_range", Needs::Read),
    ("GET", "/api/v1/series?match%5B%5D=up", Needs::Read),
    ("POST", "/api/v1/series", Needs::Read),
    ("GET", "/api/v1/labels", Needs::Read),
    ("POST", "/api/v1/labels", Needs::Read),
    ("GET", "/api/v1/label/job/values", Needs::Read),
    ("GET", "/api/v1/status/buildinfo", Needs::Read),
    ("GET", "/api/v1/metadata", Needs::Read),
    (
        "GET",
        "/api/v1/query_exemplars?query=up&start=0&end=60",
        Needs::Read,
    ),
    ("GET", "/api/v1/format_query?query=up", Needs::Read),
    ("GET", "/api/v1/nodes", Needs::Read),
    ("GET", "/api/v1/rules", Needs::Read),
    ("POST", "/api/v1/rules", Needs::Read),
    ("GET", "/api/v1/alerts", Needs::Read),
    ("POST", "/api/v1/alerts", Needs::Read),
    ("GET", "/api/v1/alerts/history", Needs::Read),
    ("GET", "/api/v1/silences", Needs::Read),
    ("GET", "/api/v1/silences/0000", Needs::Read),
    ("GET", "/api/v1/notifications", Needs::Read),
    ("GET", "/api/v1/actions", Needs::Read),
    ("POST", "/api/v1/silences", Needs::Admin),
    ("DELETE", "/api/v1/silences/0000", Needs::Admin),
    ("POST", "/api/v1/actions/1/approve", Needs::Admin),
    ("POST", "/api/v1/actions/1/reject", Needs::Admin),
    ("POST", "/api/v1/actions/kill-switch", Needs::Admin),
    ("GET", "/api/v1/logs/search?q=x", Needs::Read),
    // Not a route at all: a state-changing method is admin by default.
    ("PUT", "/api/v1/no-such-route", Needs::Admin),
];

fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<u16> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let body: &[u8] = if method == "POST" { b"query=1" } else { b"" };
    Ok(http_request(addr, method, path, &headers, body)?.status)
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

fn sample_request(host: &str) -> otlp::collector_v1::ExportMetricsServiceRequest {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    otlp::request(
        &[("service.name", "security-test"), ("host.name", host)],
        vec![gauge("security_probe", vec![point(&[], now_ms, 1.0)])],
    )
}

#[test]
fn every_route_and_both_otlp_receivers_refuse_missing_wrong_and_weak_tokens() -> anyhow::Result<()>
{
    let dir = TestDir::new("security-auth")?;
    let result = (|| {
        let otlp_tokens = write(
            dir.path(),
            "otlp-tokens",
            &format!("# fleet\n{FLEET}\nnode=node-a {NODE_A}\n"),
        )?;
        let api_tokens = write(
            dir.path(),
            "api-tokens",
            &format!("read {READ}\nadmin {ADMIN}\n"),
        )?;
        let c = Collector::start(
            dir.path(),
            None,
            &[
                "--token-file",
                otlp_tokens.to_str().context("path")?,
                "--api-token-file",
                api_tokens.to_str().context("path")?,
            ],
        )?;

        // Probes need no token.
        for path in ["/healthz", "/readyz"] {
            let r = http_get(c.listen, path, &[])?;
            ensure!(r.status == 200, "{path} without a token: {}", r.status);
        }
        for &(method, path, needs) in ROUTES {
            let what = format!("{method} {path}");
            let r = http_request(c.listen, method, path, &[], b"")?;
            ensure!(r.status == 401, "{what} without a token: {}", r.status);
            ensure!(
                r.header("www-authenticate") == Some("Bearer"),
                "{what}: 401 without WWW-Authenticate: Bearer"
            );
            for wrong in ["nope", FLEET, NODE_A, &format!("{READ}x")] {
                let s = call(c.listen, method, path, Some(wrong))?;
                ensure!(s == 401, "{what} with token {wrong:?}: {s}");
            }
            let with_read = call(c.listen, method, path, Some(READ))?;
            let with_admin = call(c.listen, method, path, Some(ADMIN))?;
            match needs {
                Needs::Read => ensure!(
                    with_read != 401 && with_read != 403,
                    "{what} refused a read token: {with_read}"
                ),
                Needs::Admin => ensure!(
                    with_read == 403,
                    "{what} with a read token: {with_read}, expected 403"
                ),
            }
            ensure!(
                with_admin != 401 && with_admin != 403,
                "{what} refused the admin token: {with_admin}"
            );
        }
        // A real read answer, not only "not refused".
        let r = http_get(
            c.listen,
            "/api/v1/query?query=1",
            &[("Authorization", &format!("Bearer {READ}"))],
        )?;
        ensure!(r.status == 200, "query with a read token: {}", r.status);

        // OTLP/HTTP.
        let ok = sample_request("node-a");
        for token in [None, Some("nope"), Some(READ), Some(ADMIN)] {
            let r = post_protobuf(c.otlp_http, &ok, token, false)?;
            ensure!(r.status == 401, "OTLP/HTTP with {token:?}: {}", r.status);
        }
        let r = post_protobuf(c.otlp_http, &ok, Some(FLEET), false)?;
        ensure!(
            r.status == 200,
            "OTLP/HTTP with the fleet token: {}",
            r.status
        );
        let r = post_protobuf(c.otlp_http, &ok, Some(NODE_A), false)?;
        ensure!(
            r.status == 200,
            "OTLP/HTTP, node-a for itself: {}",
            r.status
        );
        let r = post_protobuf(c.otlp_http, &sample_request("node-b"), Some(NODE_A), false)?;
        ensure!(
            r.status == 403,
            "OTLP/HTTP, node-a's token for node-b: {}",
            r.status
        );

        // OTLP/gRPC.
        for token in [None, Some("nope"), Some(READ)] {
            match export_grpc(c.otlp_grpc, ok.clone(), token)? {
                Err(s) if s.code() == tonic::Code::Unauthenticated => {}
                other => bail!("OTLP/gRPC with {token:?}: {other:?}"),
            }
        }
        ensure!(export_grpc(c.otlp_grpc, ok.clone(), Some(FLEET))?.is_ok());
        ensure!(export_grpc(c.otlp_grpc, ok.clone(), Some(NODE_A))?.is_ok());
        match export_grpc(c.otlp_grpc, sample_request("node-b"), Some(NODE_A))? {
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                ensure!(s.message().contains("node-b"), "{}", s.message());
            }
            other => bail!("OTLP/gRPC, node-a's token for node-b: {other:?}"),
        }
        // What was refused was not stored: only node-a's probe exists.
        let r = http_get(
            c.listen,
            "/api/v1/query?query=count%20by%20(instance)%20(security_probe)",
            &[("Authorization", &format!("Bearer {READ}"))],
        )?;
        let text = r.text()?;
        ensure!(
            text.contains("node-a") && !text.contains("node-b"),
            "{text}"
        );
        // No secret in the log.
        let log = std::fs::read_to_string(dir.path().join("collector.log"))?;
        for secret in [FLEET, NODE_A, READ, ADMIN] {
            ensure!(!log.contains(secret), "the log shows a token");
        }
        Ok(())
    })();
    dir.finish(result)
}

/// Runs the collector binary until it exits or `timeout`; returns (exited, stderr).
fn run_collector(
    args: &[&str],
    data_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<(Option<i32>, ChildGuard)> {
    let log = std::fs::File::create(data_dir.with_extension("log"))?;
    let mut child = ChildGuard(
        Command::new(binary("vigil-collector")?)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting vigil-collector")?,
    );
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait()? {
            return Ok((Some(status.code().unwrap_or(-1)), child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((None, child))
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused_unless_insecure() -> anyhow::Result<()> {
    let dir = TestDir::new("security-exposure")?;
    let result = (|| {
        let port = |a: SocketAddr| format!("0.0.0.0:{}", a.port());
        let (grpc, http) = (free_port()?, free_port()?);
        let listen = free_port()?;
        let args = [
            "--listen".to_owned(),
            listen.to_string(),
            "--otlp-grpc".to_owned(),
            port(grpc),
            "--otlp-http".to_owned(),
            http.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = dir.path().join("refused");
        let (code, _child) = run_collector(&args, &data, Duration::from_secs(20))?;
        ensure!(code == Some(1), "expected exit 1, got {code:?}");
        let log = std::fs::read_to_string(data.with_extension("log"))?;
        ensure!(
            log.contains(&port(grpc)) && log.contains("--otlp-grpc") && log.contains("--insecure"),
            "the refusal should name the address, its flag and --insecure:\n{log}"
        );

        // The API on a non-loopback address without an API token: refused too, even
        // with OTLP tokens.
        let tokens = write(dir.path(), "tokens", "t\n")?;
        let api_args = [
            "--listen".to_owned(),
            port(listen),
            "--otlp-grpc".to_owned(),
            grpc.to_string(),
            "--otlp-http".to_owned(),
            http.to_string(),
            "--token-file".to_owned(),
            tokens.display().to_string(),
        ];
        let api_args: Vec<&str> = api_args.iter().map(String::as_str).collect();
        let data = dir.path().join("refused-api");
        let (code, _child) = run_collector(&api_args, &data, Duration::from_secs(20))?;
        ensure!(code == Some(1), "expected exit 1, got {code:?}");
        let log = std::fs::read_to_string(data.with_extension("log"))?;
        ensure!(
            log.contains("--api-token-file") && log.contains(&port(listen)),
            "{log}"
        );

        // --insecure: it starts, and says what it allowed.
        let mut insecure = args.clone();
        insecure.push("--insecure");
        let data = dir.path().join("insecure");
        let (code, child) = run_collector(&insecure, &data, Duration::from_secs(2))?;
        ensure!(code.is_none(), "with --insecure it exited: {code:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(listen, "/readyz", &[]).is_ok_and(|r| r.status == 200) {
                break;
            }
            ensure!(Instant::now() < deadline, "not ready with --insecure");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(child);
        let log = std::fs::read_to_string(data.with_extension("log"))?;
        ensure!(log.contains("--insecure"), "no warning logged:\n{log}");
        Ok(())
    })();
    dir.finish(result)
}

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls")
}

/// curl against the TLS listeners: a real client, and the one an operator would use.
fn curl(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .context("running curl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

fn wait_ready_tls(port: u16, ca: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let url = format!("https://localhost:{port}/readyz");
    loop {
        let (code, text) = curl(&["--cacert", ca.to_str().context("path")?, &url])?;
        if code == 0 && text.ends_with("200") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "collector not ready over TLS: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agent_ships_to_the_collector_over_tls_signed_by_a_test_ca() -> anyhow::Result<()> {
    let dir = TestDir::new("security-tls")?;
    let result = (|| {
        let tls = tls_dir();
        let ca = tls.join("ca.pem");
        let ca_s = ca.to_str().context("path")?;
        let otlp_tokens = write(
            dir.path(),
            "otlp-tokens",
            &format!("node=tls-node {NODE_A}\n"),
        )?;
        let api_tokens = write(dir.path(), "api-tokens", &format!("read {READ}\n"))?;
        let (listen, grpc, http) = (free_port()?, free_port()?, free_port()?);
        let log = std::fs::File::create(dir.path().join("collector.log"))?;
        let _collector = ChildGuard(
            Command::new(binary("vigil-collector")?)
                .arg("--data-dir")
                .arg(dir.path().join("collector-data"))
                .args(["--listen", &listen.to_string()])
                .args(["--otlp-grpc", &grpc.to_string()])
                .args(["--otlp-http", &http.to_string()])
                .arg("--token-file")
                .arg(&otlp_tokens)
                .arg("--api-token-file")
                .arg(&api_tokens)
                .arg("--tls-cert-file")
                .arg(tls.join("collector.pem"))
                .arg("--tls-key-file")
                .arg(tls.join("collector.key"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting vigil-collector")?,
        );
        wait_ready_tls(listen.port(), &ca, Duration::from_secs(30))?;

        // Plain HTTP on a TLS port gets no HTTP answer; an unknown CA is refused.
        if let Ok(r) = http_get(listen, "/readyz", &[]) {
            ensure!(r.status != 200, "plain HTTP answered on the TLS port");
        }
        let (code, text) = curl(&[&format!("https://localhost:{}/readyz", listen.port())])?;
        ensure!(code == 60, "curl without the CA: exit {code}: {text}");

        // The agent, trusting the test CA, with its per-node token.
        let token_file = write(dir.path(), "agent-token", &format!("{NODE_A}\n"))?;
        let state = dir.path().join("agent-state");
        let agent_toml = write(
            dir.path(),
            "agent.toml",
            &format!(
                "interval_secs = 0.5\nstate_dir = {state:?}\n\n[shipper]\ncollector = \"https://localhost:{}\"\ntoken_file = {token_file:?}\nca_file = {ca:?}\n",
                grpc.port()
            ),
        )?;
        let agent_listen = free_port()?;
        let agent_log = std::fs::File::create(dir.path().join("agent.log"))?;
        let _agent = ChildGuard(
            Command::new(binary("vigil-agent")?)
                .arg("--config")
                .arg(&agent_toml)
                .args(["--listen", &agent_listen.to_string()])
                .args(["--node-name", "tls-node", "--simulate-gpus", "1"])
                .stdin(Stdio::null())
                .stdout(agent_log.try_clone()?)
                .stderr(agent_log)
                .spawn()
                .context("starting vigil-agent")?,
        );

        // Its GPU metrics arrive, read back through the TLS API with a read token.
        let query = format!(
            "https://localhost:{}/api/v1/query?query=count(DCGM_FI_DEV_GPU_UTIL%7BHostname%3D%22tls-node%22%7D)",
            listen.port()
        );
        let auth = format!("Authorization: Bearer {READ}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, text) = curl(&["--cacert", ca_s, "-H", &auth, &query])?;
            if code == 0 && text.contains("\"value\":[") && text.contains("\"1\"]") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the agent's GPU metric did not arrive over TLS: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // OTLP/HTTP over TLS too: the node's token for its own node.
        let body_path = dir.path().join("request.pb");
        std::fs::write(&body_path, otlp::encode(&sample_request("tls-node")))?;
        let url = format!("https://localhost:{}/v1/metrics", http.port());
        let (code, text) = curl(&[
            "--cacert",
            ca_s,
            "-H",
            "Content-Type: application/x-protobuf",
            "-H",
            &format!("Authorization: Bearer {NODE_A}"),
            "--data-binary",
            &format!("@{}", body_path.display()),
            &url,
        ])?;
        ensure!(
            code == 0 && text.ends_with("200"),
            "OTLP/HTTP over TLS: {text}"
        );
        Ok(())
    })();
    dir.finish(result)
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_of_the_client_ca() -> anyhow::Result<()> {
    let dir = TestDir::new("security-mtls")?;
    let result = (|| {
        // A client CA and a client certificate of our own, made here with openssl.
        let d = dir.path();
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .context("running openssl")?;
            ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client-ca.key",
            "-out",
            "client-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vigil test client CA",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=gpu-node-01",
        ])?;
        write(
            d,
            "client.ext",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "client-ca.pem",
            "-CAkey",
            "client-ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ])?;

        let tls = tls_dir();
        let ca = tls.join("ca.pem");
        let ca_s = ca.to_str().context("path")?;
        let api_tokens = write(d, "api-tokens", &format!("read {READ}\n"))?;
        let (listen, grpc, http) = (free_port()?, free_port()?, free_port()?);
        let log = std::fs::File::create(d.join("collector.log"))?;
        let _collector = ChildGuard(
            Command::new(binary("vigil-collector")?)
                .arg("--data-dir")
                .arg(d.join("collector-data"))
                .args(["--listen", &listen.to_string()])
                .args(["--otlp-grpc", &grpc.to_string()])
                .args(["--otlp-http", &http.to_string()])
                .arg("--api-token-file")
                .arg(&api_tokens)
                .arg("--tls-cert-file")
                .arg(tls.join("collector.pem"))
                .arg("--tls-key-file")
                .arg(tls.join("collector.key"))
                .arg("--tls-client-ca-file")
                .arg(d.join("client-ca.pem"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting vigil-collector")?,
        );
        let url = format!("https://localhost:{}/readyz", listen.port());
        let (cert, key) = (d.join("client.pem"), d.join("client.key"));
        let with_cert = [
            "--cacert",
            ca_s,
            "--cert",
            cert.to_str().context("path")?,
            "--key",
            key.to_str().context("path")?,
            url.as_str(),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, text) = curl(&with_cert)?;
            if code == 0 && text.ends_with("200") {
                break;
            }
            ensure!(Instant::now() < deadline, "not ready over mTLS: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // No client certificate: the handshake (or the first read) fails.
        let (code, text) = curl(&["--cacert", ca_s, &url])?;
        ensure!(
            code != 0,
            "a client without a certificate got through: {text}"
        );
        // A certificate from another CA (the server's own) is refused as well.
        let (code, text) = curl(&[
            "--cacert",
            ca_s,
            "--cert",
            tls.join("collector.pem").to_str().context("path")?,
            "--key",
            tls.join("collector.key").to_str().context("path")?,
            &url,
        ])?;
        ensure!(code != 0, "a certificate of another CA got through: {text}");
        Ok(())
    })();
    dir.finish(result)
}
