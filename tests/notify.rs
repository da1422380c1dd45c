//! Notifications against loopback receivers: the webhook body and its retry,
//! email through a real SMTP conversation with its TLS policy, the desktop
//! notifier's arguments, and the `events` filter.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kitt::config::{Notifications, NotifyEvent, Secret};
use kitt::notify::{ChannelFailure, Message, Notifier, Overrides};
use support::smtp::{FakeSmtp, SmtpOptions};
use support::webhook::{FakeWebhook, TOKEN};
use tracing_subscriber::fmt::MakeWriter;

const USER: &str = "bench@example.org";
const PASSWORD: &str = "correct-horse-battery";
const TO: &str = "ops@example.org";

fn notifications() -> Notifications {
    Notifications {
        webhook_url: None,
        email: None,
        smtp_host: None,
        smtp_port: 587,
        smtp_user: None,
        smtp_password: None,
        desktop: false,
        events: vec![NotifyEvent::Complete, NotifyEvent::Failure],
    }
}

fn message() -> Message {
    Message::new("kitt: campaign nightly complete", "12 runs succeeded\n1 run failed")
}

fn password(value: &str) -> Option<Secret> {
    Secret::resolve(Some(value.to_owned()), "KITT_TEST_UNSET_VAR")
}

/// Email settings for `smtp`, with its CA trusted.
fn email_notifier(smtp: &FakeSmtp, user: Option<&str>, secret: Option<&str>) -> Notifier {
    let config = Notifications {
        email: Some(TO.to_owned()),
        smtp_host: Some("127.0.0.1".to_owned()),
        smtp_port: smtp.port(),
        smtp_user: user.map(str::to_owned),
        smtp_password: secret.and_then(password),
        ..notifications()
    };
    let overrides =
        Overrides { smtp_ca_file: Some(smtp.ca_file().to_owned()), ..Overrides::default() };
    Notifier::with_overrides(&config, overrides)
}

fn webhook_notifier(url: String) -> Notifier {
    Notifier::with_overrides(
        &Notifications { webhook_url: Some(url), ..notifications() },
        Overrides::default(),
    )
}

fn desktop_notifier(program: PathBuf) -> Notifier {
    let overrides = Overrides { notify_send: Some(program), ..Overrides::default() };
    Notifier::with_overrides(&Notifications { desktop: true, ..notifications() }, overrides)
}

/// Log output of the `kitt` crate, captured for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Starts capturing; the capture lasts as long as the guard.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("kitt=debug")
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn only_failure(failures: Vec<ChannelFailure>, channel: &str) -> String {
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].channel, channel);
    failures[0].reason.clone()
}

#[tokio::test]
async fn webhook_receives_title_body_text_and_content_as_json() {
    let hook = FakeWebhook::start();

    let failures = webhook_notifier(hook.url()).send(NotifyEvent::Complete, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let deliveries = hook.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].content_type.as_deref(), Some("application/json"));
    let text = "kitt: campaign nightly complete\n12 runs succeeded\n1 run failed";
    let expected = serde_json::json!({
        "title": "kitt: campaign nightly complete",
        "body": "12 runs succeeded\n1 run failed",
        "text": text,
        "content": text,
    });
    assert_eq!(deliveries[0].json, expected);
}

#[tokio::test]
async fn webhook_answering_500_once_is_retried_and_succeeds() {
    let hook = FakeWebhook::failing(1, StatusCode::INTERNAL_SERVER_ERROR, None);

    let failures = webhook_notifier(hook.url()).send(NotifyEvent::Failure, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let answers: Vec<StatusCode> = hook.deliveries().iter().map(|d| d.answered).collect();
    assert_eq!(answers, [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK]);
}

#[tokio::test]
async fn webhook_failing_twice_is_a_failure_naming_the_status_but_never_the_token() {
    let hook = FakeWebhook::failing(5, StatusCode::BAD_GATEWAY, Some("0"));
    let (logs, _guard) = Captured::start();

    let failures = webhook_notifier(hook.url()).send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "webhook");
    assert_eq!(hook.attempts(), 2, "one retry only");
    assert!(reason.starts_with(&format!("{} answered HTTP 502", hook.origin())), "{reason}");
    assert!(reason.contains("no service at <redacted>"), "the echoed path is hidden: {reason}");
    let logs = logs.text();
    assert!(logs.contains("retrying once") && logs.contains("webhook notification failed"));
    assert!(!reason.contains(TOKEN) && !logs.contains(TOKEN), "{reason}\n{logs}");
}

#[tokio::test]
async fn webhook_asking_to_wait_too_long_is_not_retried() {
    let hook = FakeWebhook::failing(1, StatusCode::TOO_MANY_REQUESTS, Some("3600"));

    let failures = webhook_notifier(hook.url()).send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "webhook");
    assert!(reason.contains("HTTP 429"), "{reason}");
    assert_eq!(hook.attempts(), 1);
}

#[tokio::test]
async fn unreachable_webhook_is_a_failure_within_the_timeout() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/services/{TOKEN}?key=query-secret");
    let (logs, _guard) = Captured::start();

    let started = Instant::now();
    let failures = webhook_notifier(url).send(NotifyEvent::Failure, &message()).await;

    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let reason = only_failure(failures, "webhook");
    let origin = format!("http://127.0.0.1:{port}");
    assert!(reason.starts_with(&format!("{origin} could not be reached")), "{reason}");
    let logs = logs.text();
    for secret in [TOKEN, "query-secret"] {
        assert!(!reason.contains(secret) && !logs.contains(secret), "{reason}\n{logs}");
    }
}

#[tokio::test]
async fn email_over_starttls_with_auth_arrives_and_auth_happens_only_after_tls() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = FakeSmtp::start(SmtpOptions::submission(USER, PASSWORD), &dir.path().join("ca.pem"));

    let notifier = email_notifier(&smtp, Some(USER), Some(PASSWORD));
    let failures = notifier.send(NotifyEvent::Complete, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let logins = smtp.logins();
    assert_eq!(logins.len(), 1);
    assert_eq!((logins[0].user.as_str(), logins[0].password.as_str()), (USER, PASSWORD));
    assert!(logins[0].tls && logins[0].accepted);
    assert_nothing_secret_in_clear(&smtp);

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.tls);
    assert_eq!((mail.from.as_str(), mail.to.as_slice()), (USER, [TO.to_owned()].as_slice()));
    assert_eq!(mail.header("Subject"), Some("kitt: campaign nightly complete"));
    assert_eq!(mail.header("To"), Some(TO));
    assert!(mail.header("Content-Type").is_some_and(|value| value.starts_with("text/plain")));
    assert_eq!(mail.body, "12 runs succeeded\n1 run failed");
}

#[tokio::test]
async fn email_logs_in_with_auth_login_when_it_is_the_only_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        SmtpOptions { mechanisms: vec!["LOGIN"], ..SmtpOptions::submission(USER, PASSWORD) };
    let smtp = FakeSmtp::start(options, &dir.path().join("ca.pem"));

    let notifier = email_notifier(&smtp, Some(USER), Some(PASSWORD));
    let failures = notifier.send(NotifyEvent::Complete, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let logins = smtp.logins();
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].mechanism, "LOGIN");
    assert!(logins[0].tls && logins[0].accepted);
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn email_with_a_password_is_refused_by_a_server_without_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let options = SmtpOptions { starttls: false, ..SmtpOptions::submission(USER, PASSWORD) };
    let smtp = FakeSmtp::start(options, &dir.path().join("ca.pem"));

    let notifier = email_notifier(&smtp, Some(USER), Some(PASSWORD));
    let failures = notifier.send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "email");
    assert!(reason.contains("STARTTLS") && reason.contains("only ever sent over TLS"), "{reason}");
    assert!(!reason.contains(PASSWORD), "{reason}");
    assert!(smtp.logins().is_empty() && smtp.mails().is_empty());
    assert_nothing_secret_in_clear(&smtp);
}

#[tokio::test]
async fn email_with_a_password_is_not_sent_to_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = FakeSmtp::start(SmtpOptions::submission(USER, PASSWORD), &dir.path().join("ca.pem"));
    let config = Notifications {
        email: Some(TO.to_owned()),
        smtp_host: Some("127.0.0.1".to_owned()),
        smtp_port: smtp.port(),
        smtp_user: Some(USER.to_owned()),
        smtp_password: password(PASSWORD),
        ..notifications()
    };

    // No extra roots: the fake's CA is unknown.
    let notifier = Notifier::with_overrides(&config, Overrides::default());
    let failures = notifier.send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "email");
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert!(reason.contains("KITT_SMTP_CA_FILE"), "{reason}");
    assert!(smtp.logins().is_empty() && smtp.mails().is_empty());
    assert_nothing_secret_in_clear(&smtp);
}

#[tokio::test]
async fn email_with_a_wrong_password_fails_with_the_smtp_reason() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = FakeSmtp::start(SmtpOptions::submission(USER, PASSWORD), &dir.path().join("ca.pem"));

    let notifier = email_notifier(&smtp, Some(USER), Some("wrong-password"));
    let failures = notifier.send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "email");
    assert!(reason.contains("535") && reason.contains("credentials invalid"), "{reason}");
    assert!(!reason.contains("wrong-password"), "{reason}");
    assert!(smtp.mails().is_empty());
}

#[tokio::test]
async fn email_without_credentials_is_delivered_in_clear_when_the_server_has_no_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = FakeSmtp::start(SmtpOptions::plain_relay(), &dir.path().join("ca.pem"));

    let failures = email_notifier(&smtp, None, None).send(NotifyEvent::Complete, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(!mails[0].tls);
    assert!(mails[0].from.starts_with("kitt@"), "{}", mails[0].from);
    assert_eq!(mails[0].to, [TO]);
    assert_eq!(mails[0].header("Subject"), Some("kitt: campaign nightly complete"));
    assert!(smtp.logins().is_empty());
}

#[tokio::test]
async fn email_without_credentials_uses_starttls_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let options = SmtpOptions { starttls: true, ..SmtpOptions::plain_relay() };
    let smtp = FakeSmtp::start(options, &dir.path().join("ca.pem"));

    let failures = email_notifier(&smtp, None, None).send(NotifyEvent::Complete, &message()).await;

    assert!(failures.is_empty(), "{failures:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls);
}

/// Neither the password nor any AUTH exchange ever crossed the wire in clear.
fn assert_nothing_secret_in_clear(smtp: &FakeSmtp) {
    let encoded_password = BASE64.encode(PASSWORD);
    let plain_credentials = BASE64.encode(format!("\0{USER}\0{PASSWORD}"));
    for line in smtp.lines().iter().filter(|line| !line.tls) {
        let text = &line.text;
        assert!(!text.to_ascii_uppercase().starts_with("AUTH"), "in clear: {text}");
        for secret in [PASSWORD, &encoded_password, &plain_credentials] {
            assert!(!text.contains(secret), "in clear: {text}");
        }
    }
}

/// A notifier script recording its argument count and arguments, NUL-separated.
fn recording_notifier(dir: &Path) -> (PathBuf, PathBuf) {
    let record = dir.join("argv");
    let script = dir.join("notify-send");
    let text = format!("#!/bin/sh\nprintf '%s\\0' \"$#\" \"$@\" > '{}'\n", record.display());
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

fn recorded_arguments(record: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(record).expect("the notifier ran");
    let mut fields: Vec<String> = text.split('\0').map(str::to_owned).collect();
    assert_eq!(fields.pop().as_deref(), Some(""), "every field ends with NUL");
    fields
}

#[tokio::test]
async fn desktop_passes_title_and_body_as_exactly_two_arguments_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (script, record) = recording_notifier(dir.path());
    let marker = dir.path().join("injected");
    let title = format!("it's \"done\" $(touch {}) `touch {}`", marker.display(), marker.display());
    let body = "line one\nline two; rm -rf $HOME && echo '$PATH'";

    let notifier = desktop_notifier(script);
    let failures = notifier.send(NotifyEvent::Complete, &Message::new(&title, body)).await;

    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(recorded_arguments(&record), ["2", title.as_str(), body]);
    assert!(!marker.exists(), "the title was run by a shell");
}

#[tokio::test]
async fn desktop_body_is_cut_to_200_characters_and_a_leading_dash_stays_text() {
    let dir = tempfile::tempdir().unwrap();
    let (script, record) = recording_notifier(dir.path());
    let body = "é".repeat(500);

    let notifier = desktop_notifier(script);
    let failures = notifier.send(NotifyEvent::Complete, &Message::new("-u critical", body)).await;

    assert!(failures.is_empty(), "{failures:?}");
    let arguments = recorded_arguments(&record);
    assert_eq!(arguments.len(), 3);
    assert_eq!(arguments[1], " -u critical");
    assert_eq!(arguments[2].chars().count(), 200);
    assert!(arguments[2].ends_with("é…"));
}

#[tokio::test]
async fn desktop_with_a_missing_notifier_is_a_tolerated_failure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-notify-send");
    let (logs, _guard) = Captured::start();

    let notifier = desktop_notifier(missing.clone());
    let failures = notifier.send(NotifyEvent::Failure, &message()).await;

    let reason = only_failure(failures, "desktop");
    assert!(reason.contains(&format!("could not run `{}`", missing.display())), "{reason}");
    assert!(logs.text().contains("WARN"), "{}", logs.text());
}

#[tokio::test]
async fn one_failing_channel_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let hook = FakeWebhook::start();
    let smtp = FakeSmtp::start(SmtpOptions::plain_relay(), &dir.path().join("ca.pem"));
    let config = Notifications {
        desktop: true,
        webhook_url: Some(hook.url()),
        email: Some(TO.to_owned()),
        smtp_host: Some("127.0.0.1".to_owned()),
        smtp_port: smtp.port(),
        ..notifications()
    };
    let overrides = Overrides {
        notify_send: Some(dir.path().join("no-such-notify-send")),
        smtp_ca_file: Some(smtp.ca_file().to_owned()),
    };

    let notifier = Notifier::with_overrides(&config, overrides);
    let failures = notifier.send(NotifyEvent::Failure, &message()).await;

    only_failure(failures, "desktop");
    assert_eq!(hook.deliveries().len(), 1);
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn wants_follows_events_and_nothing_is_sent_for_other_events() {
    let hook = FakeWebhook::start();
    let config = Notifications {
        webhook_url: Some(hook.url()),
        events: vec![NotifyEvent::Regression],
        ..notifications()
    };

    let notifier = Notifier::with_overrides(&config, Overrides::default());

    assert!(notifier.has_channels());
    assert!(notifier.wants(NotifyEvent::Regression));
    assert!(!notifier.wants(NotifyEvent::Complete) && !notifier.wants(NotifyEvent::Failure));
    assert!(notifier.send(NotifyEvent::Complete, &message()).await.is_empty());
    assert_eq!(hook.attempts(), 0);
    assert!(notifier.send(NotifyEvent::Regression, &message()).await.is_empty());
    assert_eq!(hook.attempts(), 1);
}

#[test]
fn no_channel_configured_means_no_channels() {
    let notifier = Notifier::with_overrides(&notifications(), Overrides::default());
    assert!(!notifier.has_channels());
}
