//! Email notifications through an SMTP relay, as plain text.
//!
//! The TLS policy protects the password: with a password set, the relay must
//! offer STARTTLS (port 465 speaks TLS from the start) or nothing is sent.
//! Without credentials the message is not secret enough to give up on a relay
//! that only speaks plain SMTP, so STARTTLS is used when offered. Server
//! certificates are checked against the platform's roots plus those of
//! `KITT_SMTP_CA_FILE`.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, To};
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, SMTP_CA_FILE_ENV};
use crate::config::Secret;

/// Upper bound for the whole exchange, and for each step of it.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The SMTPS port, where TLS starts before the first SMTP line.
const SMTPS_PORT: u16 = 465;

/// The email channel: where to send and through which relay.
pub(super) struct Email {
    /// The recipient, `notifications.email`.
    pub(super) to: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    pub(super) password: Option<Secret>,
    /// A PEM file of extra trusted root certificates.
    pub(super) extra_roots: Option<PathBuf>,
}

impl Email {
    /// Mails `message`; an error names the relay and the SMTP reason.
    pub(super) async fn send(&self, message: &Message) -> Result<(), String> {
        let email = self.compose(message)?;
        let transport = self.transport().await?;

        let relay = format!("SMTP relay {}:{}", self.host, self.port);
        match tokio::time::timeout(TIMEOUT, transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                Err(format!("{relay}: {}", smtp_reason(&error, self.password.is_some())))
            }
            Err(_) => Err(format!("{relay} did not finish within {} s", TIMEOUT.as_secs())),
        }
    }

    /// The email: from the SMTP user or `kitt@<hostname>`, to `email`, text only.
    fn compose(&self, message: &Message) -> Result<lettre::Message, String> {
        let to: Mailboxes = self
            .to
            .parse()
            .map_err(|error| format!("`notifications.email` `{}`: {error}", self.to))?;
        lettre::Message::builder()
            .from(self.sender())
            .mailbox(To::from(to))
            .subject(message.title.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(|error| format!("could not build the email: {error}"))
    }

    /// The SMTP user when it is an address (relays often insist on it), else `kitt@<hostname>`.
    fn sender(&self) -> Mailbox {
        let user = self.user.as_deref().filter(|user| user.contains('@'));
        if let Some(mailbox) = user.and_then(|user| user.trim().parse::<Mailbox>().ok()) {
            return mailbox;
        }
        let domain = hostname().unwrap_or_else(|| "localhost".to_owned());
        let address = Address::new("kitt", &domain)
            .unwrap_or_else(|_| Address::new_dangerous("kitt", "localhost"));
        Mailbox::new(Some("kitt".to_owned()), address)
    }

    /// A transport for one message, with the TLS policy of the module docs.
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let parameters = self.tls_parameters().await?;
        let tls = if self.port == SMTPS_PORT {
            Tls::Wrapper(parameters)
        } else if self.password.is_some() {
            Tls::Required(parameters)
        } else {
            Tls::Opportunistic(parameters)
        };

        let hello = hostname().map_or_else(ClientId::default, ClientId::Domain);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .hello_name(hello)
            .timeout(Some(TIMEOUT));
        if let Some(credentials) = self.credentials()? {
            builder = builder.credentials(credentials);
        }
        Ok(builder.build())
    }

    /// The platform's roots plus the certificates of the extra roots file.
    async fn tls_parameters(&self) -> Result<TlsParameters, String> {
        let mut parameters = TlsParameters::builder(self.host.clone());
        if let Some(path) = &self.extra_roots {
            let shown = path.display();
            let pem = tokio::fs::read(path).await.map_err(|error| {
                format!("could not read `{shown}` ({SMTP_CA_FILE_ENV}): {error}")
            })?;
            // An unrelated file parses as zero certificates; say so instead of trusting nothing.
            if !pem.windows(CERTIFICATE_MARK.len()).any(|window| window == CERTIFICATE_MARK) {
                return Err(format!("`{shown}` ({SMTP_CA_FILE_ENV}) holds no PEM certificate"));
            }
            let roots = Certificate::from_pem(&pem)
                .map_err(|error| format!("`{shown}` ({SMTP_CA_FILE_ENV}): {error}"))?;
            parameters = parameters.add_root_certificate(roots);
        }
        parameters.build_rustls().map_err(|error| format!("could not set up TLS: {error}"))
    }

    /// The login when a password is set; a password without a user is an error.
    fn credentials(&self) -> Result<Option<Credentials>, String> {
        let Some(password) = &self.password else {
            return Ok(None);
        };
        let Some(user) = self.user.as_deref().map(str::trim).filter(|user| !user.is_empty()) else {
            return Err("`notifications.smtp_password` is set but `smtp_user` is not".to_owned());
        };
        Ok(Some(Credentials::new(user.to_owned(), password.expose().to_owned())))
    }
}

/// The line that opens a certificate in a PEM file.
const CERTIFICATE_MARK: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// This machine's name, when it has a usable one.
fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The SMTP error and its deeper causes on one line, with a hint where one helps.
fn smtp_reason(error: &SmtpError, password_set: bool) -> String {
    let mut text = cause_chain(error);
    if password_set && error.is_client() && text.contains("STARTTLS") {
        text.push_str("; `smtp_password` is only ever sent over TLS");
    } else if text.contains("certificate") {
        text.push_str(&format!(
            "; if the relay's certificate comes from a private CA, point {SMTP_CA_FILE_ENV} \
             at that CA's PEM file"
        ));
    }
    text
}

/// The innermost SMTP error's message (which already ends with its direct
/// cause), then any deeper cause it does not already say.
///
/// lettre nests its errors, each repeating the one below, so starting from the
/// outermost one would say everything twice.
fn cause_chain(error: &SmtpError) -> String {
    let mut innermost = error;
    let mut cause = error.source();
    while let Some(inner) = cause {
        if let Some(smtp) = inner.downcast_ref::<SmtpError>() {
            innermost = smtp;
        }
        cause = inner.source();
    }

    let mut text = innermost.to_string();
    let mut cause = innermost.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(user: Option<&str>) -> Email {
        Email {
            to: "ops@example.org".into(),
            host: "127.0.0.1".into(),
            port: 587,
            user: user.map(str::to_owned),
            password: None,
            extra_roots: None,
        }
    }

    #[test]
    fn the_sender_is_the_smtp_user_when_it_is_an_address() {
        let sender = email(Some("bench@example.org")).sender();
        assert_eq!(sender.email.to_string(), "bench@example.org");
    }

    #[test]
    fn a_plain_user_name_falls_back_to_kitt_at_this_host() {
        let sender = email(Some("bench")).sender();
        assert_eq!(sender.email.user(), "kitt");
        assert!(!sender.email.domain().is_empty());
    }

    #[test]
    fn a_password_without_a_user_is_refused() {
        let mut channel = email(None);
        channel.password = Secret::resolve(Some("pw".into()), "KITT_TEST_UNSET_VAR");
        let reason = channel.credentials().expect_err("no user");
        assert!(reason.contains("smtp_user"), "{reason}");
    }

    #[tokio::test]
    async fn a_roots_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("roots.pem");
        std::fs::write(&path, "not a certificate").expect("write the file");
        let channel = Email { extra_roots: Some(path), ..email(None) };

        let reason = channel.tls_parameters().await.err().expect("no certificate");
        assert!(reason.contains("holds no PEM certificate"), "{reason}");
    }
}
