//! `email_configs` through lettre: implicit TLS on port 465, STARTTLS when
//! `require_tls` (refusing a server that does not offer it), plain SMTP otherwise;
//! PLAIN or LOGIN authentication; the EHLO name; a private CA, a client certificate
//! and `insecure_skip_verify` from `tls_config`. The mail is multipart/alternative,
//! text and HTML, with Alertmanager's default subject unless a `Subject` header is
//! configured; header values, `to`, `from`, `text` and `html` are templates.
//!
//! An SMTP 4xx, a refused connection or a timeout may pass and is retried; a 5xx (a
//! rejected recipient, failed authentication), a TLS failure or a missing STARTTLS is
//! a configuration matter and is not.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Identity, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::render::{self, Builtin, Tmpl};
use super::{fail, is_tls_failure};
use crate::notify::config::{EmailConfig, Global};
use crate::notify::{Integration, Message, NotifyError, NotifyFuture};

/// One SMTP command's timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// One whole attempt's timeout: connect, TLS, auth and DATA (lettre's own timeout
/// bounds only the connect on tokio).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// One `email_configs` entry.
pub struct EmailIntegration {
    send_resolved: bool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for messages.
    smarthost: String,
    to: Tmpl,
    from: Tmpl,
    /// Configured headers, `Subject` always among them.
    headers: Vec<(HeaderName, Tmpl)>,
    text: Option<Tmpl>,
    html: Option<Tmpl>,
}

impl EmailIntegration {
    pub fn new(cfg: &EmailConfig, global: &Global) -> Result<EmailIntegration, String> {
        let or = |own: &str, inherited: &str| {
            if own.is_empty() {
                inherited.to_string()
            } else {
                own.to_string()
            }
        };
        let smarthost = or(&cfg.smarthost, &global.smtp.smarthost);
        let from = or(&cfg.from, &global.smtp.from);
        let hello = or(&or(&cfg.hello, &global.smtp.hello), "localhost");
        if smarthost.is_empty() {
            return Err("smarthost is not set here nor in global.smtp_smarthost".into());
        }
        if from.is_empty() {
            return Err("from is not set here nor in global.smtp_from".into());
        }
        if cfg.to.trim().is_empty() {
            return Err("to is empty".into());
        }
        let (host, port) = smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("smarthost {smarthost:?} is not host:port"))?;

        let to = Tmpl::compile("to", &cfg.to)?;
        if let Tmpl::Literal(s) = &to {
            parse_mailboxes("to", s)?;
        }
        let from_t = Tmpl::compile("from", &from)?;
        if let Tmpl::Literal(s) = &from_t {
            parse_mailbox("from", s)?;
        }
        let mut headers = Vec::new();
        let mut has_subject = false;
        for (name, value) in &cfg.headers {
            let n = HeaderName::new_from_ascii(name.clone())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
            has_subject |= name.eq_ignore_ascii_case("subject");
            headers.push((n, Tmpl::compile(&format!("headers.{name}"), value)?));
        }
        if !has_subject {
            headers.push((
                HeaderName::new_from_ascii_str("Subject"),
                Tmpl::Builtin(Builtin::Subject),
            ));
        }
        let text = cfg
            .text
            .as_deref()
            .map(|t| Tmpl::compile("text", t))
            .transpose()?;
        let html = cfg
            .html
            .as_deref()
            .map(|t| Tmpl::compile("html", t))
            .transpose()?;

        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .hello_name(ClientId::Domain(hello))
            .timeout(Some(COMMAND_TIMEOUT));
        if port == 465 {
            b = b.tls(Tls::Wrapper(tls_parameters(cfg, host)?));
        } else if cfg.require_tls {
            b = b.tls(Tls::Required(tls_parameters(cfg, host)?));
        } else {
            b = b.tls(Tls::None);
        }
        if !cfg.auth_username.is_empty() {
            if cfg.auth_password.is_empty() && !cfg.auth_secret.is_empty() {
                return Err(
                    "auth_secret (CRAM-MD5) is not supported: use auth_password (PLAIN or LOGIN)"
                        .into(),
                );
            }
            if !cfg.auth_identity.is_empty() && cfg.auth_identity != cfg.auth_username {
                return Err("auth_identity different from auth_username is not supported".into());
            }
            b = b
                .credentials(Credentials::new(
                    cfg.auth_username.clone(),
                    cfg.auth_password.expose().to_string(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(EmailIntegration {
            send_resolved: cfg.send_resolved,
            transport: b.build(),
            smarthost: format!("{host}:{port}"),
            to,
            from: from_t,
            headers,
            text,
            html,
        })
    }

    fn compose(&self, m: &Message) -> Result<lettre::Message, NotifyError> {
        let r = |t: &Tmpl, field: &str| {
            t.render(m)
                .map_err(|e| fail(false, format!("email {field} template: {e}")))
        };
        let bad = |e: String| fail(false, format!("email: {e}"));
        let to = parse_mailboxes("to", &r(&self.to, "to")?).map_err(bad)?;
        let from = parse_mailbox("from", &r(&self.from, "from")?).map_err(bad)?;
        let envelope = Envelope::new(
            Some(from.email.clone()),
            to.iter().map(|mb| mb.email.clone()).collect(),
        )
        .map_err(|e| fail(false, format!("email envelope: {e}")))?;
        let mut builder = lettre::Message::builder()
            .from(from)
            .envelope(envelope)
            .user_agent(super::http::USER_AGENT.to_string());
        for mb in to {
            builder = builder.to(mb);
        }
        let text = match &self.text {
            Some(t) => r(t, "text")?,
            None => render::text_body(m),
        };
        let html = match &self.html {
            Some(t) => r(t, "html")?,
            None => render::html_body(m),
        };
        let mut mail = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| fail(false, format!("email: {e}")))?;
        for (name, t) in &self.headers {
            let value = r(t, name)?;
            // Header values are one line; a template's newlines would end the header.
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            mail.headers_mut()
                .insert_raw(HeaderValue::new(name.clone(), value));
        }
        Ok(mail)
    }

    async fn send(&self, m: &Message) -> Result<(), NotifyError> {
        let mail = self.compose(m)?;
        let shown = &self.smarthost;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.send(mail)).await {
            Err(_) => Err(fail(
                true,
                format!(
                    "smtp {shown}: timed out after {}s",
                    ATTEMPT_TIMEOUT.as_secs()
                ),
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let retryable =
                    !(e.is_permanent() || e.is_tls() || e.is_client() || is_tls_failure(&e));
                Err(fail(retryable, format!("smtp {shown}: {e}")))
            }
        }
    }
}

impl Integration for EmailIntegration {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> NotifyFuture<'a> {
        Box::pin(self.send(message))
    }
}

fn tls_parameters(cfg: &EmailConfig, host: &str) -> Result<TlsParameters, String> {
    let tls = &cfg.tls_config;
    let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
    let mut b =
        TlsParameters::builder(name).dangerous_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(ca) = &tls.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("tls_config.ca_file {}: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("tls_config.ca_file {}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let c = std::fs::read(cert)
                .map_err(|e| format!("tls_config.cert_file {}: {e}", cert.display()))?;
            let k = std::fs::read(key)
                .map_err(|e| format!("tls_config.key_file {}: {e}", key.display()))?;
            let id = Identity::from_pem(&c, &k)
                .map_err(|e| format!("tls_config.cert_file {}: {e}", cert.display()))?;
            b = b.identify_with(id);
        }
        (None, None) => {}
        _ => return Err("tls_config: cert_file and key_file go together".into()),
    }
    b.build_rustls().map_err(|e| format!("tls_config: {e}"))
}

fn parse_mailboxes(field: &str, s: &str) -> Result<Vec<Mailbox>, String> {
    let mbs: Mailboxes = s
        .parse()
        .map_err(|e| format!("{field} {s:?} is not a list of addresses: {e}"))?;
    let v: Vec<Mailbox> = mbs.into_iter().collect();
    if v.is_empty() {
        return Err(format!("{field} {s:?} holds no address"));
    }
    Ok(v)
}

fn parse_mailbox(field: &str, s: &str) -> Result<Mailbox, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{field} {s:?} is not an address: {e}"))
}
