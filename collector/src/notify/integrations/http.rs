//! The HTTP side of webhooks and robots: a reqwest client over an explicit rustls
//! configuration with ring's provider (the system's CAs from the usual bundle files,
//! plus `tls_config.ca_file`; client certificates; `server_name`;
//! `insecure_skip_verify`), `http_config`'s authorization, basic auth, proxy and
//! redirects, and one POST whose failure is classified as retryable or not.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{fail, is_tls_failure};
use crate::notify::NotifyError;
use crate::notify::config::{HttpConfig, Secret, TlsConfig};

/// What every request says it is.
pub const USER_AGENT: &str = concat!("Vigil/", env!("CARGO_PKG_VERSION"));

/// Where Debian, Fedora, openSUSE and Alpine keep the system's CA bundle; the first
/// that exists is used (`SSL_CERT_FILE` first when set).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The rustls client configuration `tls` asks for, with ring's provider.
pub fn rustls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCert(provider))
    } else {
        let mut roots = RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(CA_BUNDLES.iter().map(std::path::PathBuf::from))
            .find(|p| p.is_file());
        if let Some(path) = system {
            // A malformed system bundle must not stop a private-CA setup from working.
            if let Ok(certs) = read_certs(&path) {
                roots.add_parsable_certificates(certs);
            }
        }
        if let Some(ca) = &tls.ca_file {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_config.ca_file {}: {e}", ca.display()))?;
            }
        }
        if roots.is_empty() {
            return Err(
                "tls: no CA certificates: no system bundle found and no tls_config.ca_file"
                    .to_string(),
            );
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("tls: {e}"))?;
        let name = match &tls.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("tls_config.server_name {n:?}: {e}"))?,
            ),
            None => None,
        };
        Arc::new(NamedVerifier { inner, name })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_config.key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls_config.cert_file {}: {e}", cert.display()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("tls_config: cert_file and key_file go together".to_string()),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::tls::pem_certs(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// webpki verification, against `tls_config.server_name` when one is set.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures
/// are still checked, so the connection is at least to the key holder.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client for one integration's `http_config`, each attempt bounded by `timeout`.
pub fn client(cfg: &HttpConfig, timeout: Duration) -> Result<reqwest::Client, String> {
    let tls = rustls_config(&cfg.tls_config)?;
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(if cfg.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        });
    match &cfg.proxy_url {
        Some(p) => {
            let proxy = reqwest::Proxy::all(p.as_str())
                .map_err(|_| format!("http_config.proxy_url {}: not a valid URL", redact(p)))?;
            b = b.proxy(proxy);
        }
        // Alertmanager ignores the environment's proxy variables unless told.
        None => b = b.no_proxy(),
    }
    b.build().map_err(|e| format!("http client: {e}"))
}

/// Checks that `url` is an absolute http(s) URL; the error shows no part of it that
/// may hold a token.
pub fn check_url(field: &str, url: &Secret) -> Result<reqwest::Url, String> {
    if url.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let u = reqwest::Url::parse(url.expose())
        .map_err(|e| format!("{field} is not a valid URL ({e})"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "{field} {}: scheme must be http or https",
            redact(url.expose())
        ));
    }
    if u.host_str().is_none() {
        return Err(format!("{field}: URL has no host"));
    }
    Ok(u)
}

/// `scheme://host[:port]` of a URL: what messages may show of it.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// A POST's answer that was a success at the HTTP level.
pub struct Answer {
    pub body: Vec<u8>,
}

/// Posts `body` as JSON with `headers`, and classifies a failure: timeouts, connection
/// errors, 5xx and 429 are retryable, any other non-2xx is not. Error messages name
/// the URL by scheme and host only.
pub async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    http: &HttpConfig,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, NotifyError> {
    let shown = redact(url.as_str());
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some((kind, cred)) = &http.authorization {
        let mut v = reqwest::header::HeaderValue::try_from(format!("{kind} {}", cred.expose()))
            .map_err(|_| {
                fail(
                    false,
                    format!("POST {shown}: authorization is not a valid header value"),
                )
            })?;
        v.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, v);
    }
    if let Some((user, pass)) = &http.basic_auth {
        req = req.basic_auth(user, Some(pass.expose()));
    }
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let resp = req.body(body).send().await.map_err(|e| {
        let e = e.without_url();
        if is_tls_failure(&e) {
            // An untrusted certificate or a name mismatch will not pass by itself.
            return fail(false, format!("POST {shown}: tls: {}", error_chain(&e)));
        }
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        fail(true, format!("POST {shown}: {what}: {}", error_chain(&e)))
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| {
            fail(
                true,
                format!(
                    "POST {shown}: reading the answer: {}",
                    error_chain(&e.without_url())
                ),
            )
        })?
        .to_vec();
    if status.is_success() {
        return Ok(Answer { body });
    }
    let retryable = status.is_server_error() || status.as_u16() == 429;
    Err(fail(
        retryable,
        format!("POST {shown}: {status}: {}", snippet(&body)),
    ))
}

/// The first 200 characters of an answer, on one line.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// An error and its sources, `: `-separated (reqwest's own text is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_to_scheme_and_host() {
        assert_eq!(
            redact("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET"),
            "https://qyapi.weixin.qq.com"
        );
        assert_eq!(redact("http://u:pw@127.0.0.1:9/x"), "http://127.0.0.1:9");
        assert_eq!(redact("not a url"), "<invalid URL>");
        let e = check_url("url", &Secret("ftp://h/tok".into())).unwrap_err();
        assert!(!e.contains("tok"), "{e}");
    }

    #[test]
    fn tls_config_reads_the_test_ca() {
        let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls/ca.pem");
        let tls = TlsConfig {
            ca_file: Some(ca),
            ..TlsConfig::default()
        };
        assert!(rustls_config(&tls).is_ok());
        let bad = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let e = rustls_config(&bad).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
