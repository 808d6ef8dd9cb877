//! TLS for every listener of the collector: OTLP/gRPC, OTLP/HTTP and the HTTP API (and
//! the control channel once it exists: it takes an [`Incoming`] like the others).
//!
//! Certificates come from PEM files named in `[tls]` (or `--tls-cert-file`,
//! `--tls-key-file`, `--tls-client-ca-file`); with a client CA every peer must present
//! a certificate signed by it (mutual TLS). rustls with the ring provider, built
//! explicitly, so no process-wide default provider has to be installed first.
//!
//! An [`Incoming`] accepts TCP connections on a task of its own and runs each TLS
//! handshake on a task of its own, under [`HANDSHAKE_TIMEOUT`]: a peer that connects and
//! sends nothing holds up neither the accept loop nor other peers.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a peer may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for the server to take them.
const BACKLOG: usize = 128;

/// The `[tls]` table of `collector.toml`. Empty paths (the default) mean plain TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the collector presents, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, every peer must present a certificate signed by
    /// one of them.
    pub client_ca_file: PathBuf,
}

impl TlsConfig {
    /// True when a certificate is configured, so the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("tls.{field} {path}: {message}")]
    File {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The protocols a listener offers in ALPN: gRPC needs HTTP/2; the HTTP servers speak
/// HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http1,
}

/// The server configurations built from one [`TlsConfig`], one per ALPN.
#[derive(Clone)]
pub struct ServerTls {
    h2: Arc<rustls::ServerConfig>,
    http1: Arc<rustls::ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate, key and client CA; `None` when TLS is off. Every error
    /// names the config key and the file.
    pub fn from_config(config: &TlsConfig) -> Result<Option<ServerTls>, TlsError> {
        if !config.enabled() {
            for (field, path) in [
                ("key_file", &config.key_file),
                ("client_ca_file", &config.client_ca_file),
            ] {
                if !path.as_os_str().is_empty() {
                    return Err(TlsError::Config {
                        field,
                        message: "is set but tls.cert_file is not".into(),
                    });
                }
            }
            return Ok(None);
        }
        if config.key_file.as_os_str().is_empty() {
            return Err(TlsError::Config {
                field: "key_file",
                message: "tls.cert_file is set, its private key must be too".into(),
            });
        }
        let chain = read_certs("cert_file", &config.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| TlsError::File {
            field: "key_file",
            path: config.key_file.clone(),
            message: format!("no usable PEM private key: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let mutual = !config.client_ca_file.as_os_str().is_empty();
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("client_ca_file", &config.client_ca_file)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    field: "client_ca_file",
                    path: config.client_ca_file.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::File {
                        field: "client_ca_file",
                        path: config.client_ca_file.clone(),
                        message: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let base = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::File {
                field: "key_file",
                path: config.key_file.clone(),
                message: format!("does not match tls.cert_file: {e}"),
            })?;
        let with_alpn = |protocol: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![protocol.to_vec()];
            Arc::new(c)
        };
        Ok(Some(ServerTls {
            h2: with_alpn(b"h2"),
            http1: with_alpn(b"http/1.1"),
            mutual,
        }))
    }

    /// Whether peers must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    fn acceptor(&self, alpn: Alpn) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(match alpn {
            Alpn::H2 => &self.h2,
            Alpn::Http1 => &self.http1,
        }))
    }
}

fn read_certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_certs(path).map_err(|message| TlsError::File {
        field,
        path: path.to_owned(),
        message,
    })
}

/// The certificates of a PEM file (servers' chains, CAs for servers and clients); the
/// error says what is wrong with the file, not which file it is.
pub(crate) fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// A bound listener, with or without TLS, as the servers take it.
pub struct Incoming {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl From<TcpListener> for Incoming {
    /// Plain TCP.
    fn from(listener: TcpListener) -> Self {
        Incoming {
            listener,
            tls: None,
        }
    }
}

impl Incoming {
    /// TLS on `listener` when `tls` is given, offering `alpn`.
    pub fn new(listener: TcpListener, tls: Option<&ServerTls>, alpn: Alpn) -> Self {
        Incoming {
            listener,
            tls: tls.map(|t| t.acceptor(alpn)),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts accepting: the connections (handshake done) arrive on the channel. The
    /// accept task stops when the receiver is dropped.
    fn start(self) -> mpsc::Receiver<(Conn, SocketAddr)> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(accept_loop(self.listener, self.tls, tx));
        rx
    }

    /// For axum: an [`axum::serve::Listener`].
    pub fn into_listener(self) -> io::Result<ConnListener> {
        let local_addr = self.local_addr()?;
        Ok(ConnListener {
            rx: self.start(),
            local_addr,
        })
    }

    /// For tonic: a stream of connections for `serve_with_incoming_shutdown`.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
        let rx = self.start();
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |(c, _)| {
            Ok(c)
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<(Conn, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                if tx.send((Conn::Plain(tcp), peer)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((Conn::Tls(Box::new(stream)), peer)).await;
                        }
                        // A scanner or a misconfigured client: not the server's problem.
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// [`Incoming`] as axum takes it.
#[derive(Debug)]
pub struct ConnListener {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for ConnListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended, which it does only once this receiver is gone;
            // nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// One accepted connection.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../agent/testdata/tls")
            .join(name)
    }

    #[test]
    fn off_unless_a_certificate_is_given() {
        assert!(
            ServerTls::from_config(&TlsConfig::default())
                .unwrap()
                .is_none()
        );
        let e = ServerTls::from_config(&TlsConfig {
            key_file: testdata("collector.key"),
            ..TlsConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("tls.key_file:"), "{e}");
    }

    #[test]
    fn loads_the_test_certificate_with_and_without_client_ca() {
        let mut c = TlsConfig {
            cert_file: testdata("collector.pem"),
            key_file: testdata("collector.key"),
            client_ca_file: PathBuf::new(),
        };
        assert!(!ServerTls::from_config(&c).unwrap().unwrap().mutual());
        c.client_ca_file = testdata("ca.pem");
        assert!(ServerTls::from_config(&c).unwrap().unwrap().mutual());
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let c = TlsConfig {
            cert_file: empty.clone(),
            key_file: testdata("collector.key"),
            client_ca_file: PathBuf::new(),
        };
        let e = ServerTls::from_config(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("tls.cert_file ") && e.contains("empty.pem"),
            "{e}"
        );
        // A key that is not the certificate's.
        let c = TlsConfig {
            cert_file: testdata("ca.pem"),
            key_file: testdata("collector.key"),
            client_ca_file: PathBuf::new(),
        };
        let e = ServerTls::from_config(&c).unwrap_err().to_string();
        assert!(e.starts_with("tls.key_file "), "{e}");
        let c = TlsConfig {
            cert_file: testdata("collector.pem"),
            key_file: dir.path().join("missing.key"),
            client_ca_file: PathBuf::new(),
        };
        let e = ServerTls::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("missing.key"), "{e}");
    }
}
