//! Notifications: tells the user about campaign events through the channels
//! the campaign's `notifications` block configures — a desktop notification,
//! a webhook POST that Slack and Discord both understand, and an email sent
//! through an SMTP relay.
//!
//! Sending is best effort. Every configured channel is tried concurrently,
//! each under its own timeout; a channel that fails is logged as a warning and
//! handed back as a [`ChannelFailure`], and never fails the campaign. This
//! module does not decide when to notify or what a message says; the campaign
//! runner does, and passes the event so the `events` filter applies here.

mod desktop;
mod email;
mod webhook;

use std::fmt;
use std::path::PathBuf;

use futures_util::future::OptionFuture;

use crate::config::{Notifications, NotifyEvent};

use desktop::Desktop;
use email::Email;
use webhook::Webhook;

/// Environment variable naming a program to run instead of `notify-send` (or `osascript`).
pub const NOTIFY_SEND_ENV: &str = "KITT_NOTIFY_SEND";

/// Environment variable naming a PEM file of extra root certificates trusted for SMTP.
pub const SMTP_CA_FILE_ENV: &str = "KITT_SMTP_CA_FILE";

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// A short headline: the desktop notification's title, the email's subject.
    pub title: String,
    /// The details, as plain text.
    pub body: String,
}

impl Message {
    /// A message with this title and body.
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self { title: title.into(), body: body.into() }
    }
}

/// A channel that could not deliver a message, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFailure {
    /// `desktop`, `webhook` or `email`.
    pub channel: &'static str,
    /// What went wrong, fit for a log line: no secret, no webhook path.
    pub reason: String,
}

impl fmt::Display for ChannelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} notification failed: {}", self.channel, self.reason)
    }
}

/// Settings the environment may substitute; [`Notifier::new`] reads them once.
///
/// Tests pass them to [`Notifier::with_overrides`] instead of setting
/// process-wide environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The program run with `TITLE BODY` instead of the platform's notifier
    /// (`KITT_NOTIFY_SEND`).
    pub notify_send: Option<PathBuf>,
    /// A PEM file of root certificates trusted for SMTP in addition to the
    /// usual ones (`KITT_SMTP_CA_FILE`).
    pub smtp_ca_file: Option<PathBuf>,
}

impl Overrides {
    /// Reads `KITT_NOTIFY_SEND` and `KITT_SMTP_CA_FILE`; empty values count as unset.
    pub fn from_env() -> Self {
        let path = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self { notify_send: path(NOTIFY_SEND_ENV), smtp_ca_file: path(SMTP_CA_FILE_ENV) }
    }
}

/// Sends messages to every channel the campaign's `notifications` block configures.
pub struct Notifier {
    events: Vec<NotifyEvent>,
    desktop: Option<Desktop>,
    webhook: Option<Webhook>,
    email: Option<Email>,
}

impl Notifier {
    /// The channels of `config`, with overrides read from the environment.
    pub fn new(config: &Notifications) -> Self {
        Self::with_overrides(config, Overrides::from_env())
    }

    /// The channels of `config`, with the given overrides instead of the environment's.
    pub fn with_overrides(config: &Notifications, overrides: Overrides) -> Self {
        let desktop = config.desktop.then(|| Desktop::new(overrides.notify_send));
        let webhook = config.webhook_url.clone().map(Webhook::new);
        // Validation already rejects an `email` without `smtp_host`.
        let email = match (&config.email, &config.smtp_host) {
            (Some(to), Some(host)) => Some(Email {
                to: to.clone(),
                host: host.clone(),
                port: config.smtp_port,
                user: config.smtp_user.clone(),
                password: config.smtp_password.clone(),
                extra_roots: overrides.smtp_ca_file,
            }),
            _ => None,
        };
        Self { events: config.events.clone(), desktop, webhook, email }
    }

    /// Whether this event is enabled (the campaign's `events` contain it).
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.contains(&event)
    }

    /// Whether any channel is configured at all.
    pub fn has_channels(&self) -> bool {
        self.desktop.is_some() || self.webhook.is_some() || self.email.is_some()
    }

    /// Sends `message` for `event` to every configured channel, concurrently.
    ///
    /// Nothing is sent when the event is not enabled. Each channel is bounded
    /// by its own timeout; the ones that fail are logged at `warn` and
    /// returned. This never panics and never fails the caller.
    pub async fn send(&self, event: NotifyEvent, message: &Message) -> Vec<ChannelFailure> {
        if !self.wants(event) {
            tracing::debug!("no notification for {}: the event is not enabled", event_name(event));
            return Vec::new();
        }

        let desktop = OptionFuture::from(self.desktop.as_ref().map(|c| c.send(message)));
        let webhook = OptionFuture::from(self.webhook.as_ref().map(|c| c.send(message)));
        let email = OptionFuture::from(self.email.as_ref().map(|c| c.send(message)));
        let (desktop, webhook, email) = tokio::join!(desktop, webhook, email);

        let outcomes = [("desktop", desktop), ("webhook", webhook), ("email", email)];
        let mut failures = Vec::new();
        for (channel, outcome) in outcomes {
            match outcome {
                Some(Ok(())) => tracing::debug!("{channel} notification sent"),
                Some(Err(reason)) => {
                    let failure = ChannelFailure { channel, reason };
                    tracing::warn!("{failure}");
                    failures.push(failure);
                }
                None => {}
            }
        }
        failures
    }
}

/// The event as written in `notify_on`.
fn event_name(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Complete => "complete",
        NotifyEvent::Failure => "failure",
        NotifyEvent::Regression => "regression",
    }
}

/// `text` cut to at most `max` characters, the last of them an ellipsis when cut.
fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Notifications {
        Notifications {
            webhook_url: None,
            email: None,
            smtp_host: None,
            smtp_port: 587,
            smtp_user: None,
            smtp_password: None,
            desktop: false,
            events: vec![NotifyEvent::Failure],
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncated("héllo", 5), "héllo");
        assert_eq!(truncated("héllo wörld", 5), "héll…");
        assert_eq!(truncated("ééé", 1), "…");
        assert_eq!(truncated("", 0), "");
    }

    #[test]
    fn an_email_without_a_relay_is_no_channel() {
        let only_address = Notifications { email: Some("me@example.org".into()), ..config() };
        assert!(!Notifier::with_overrides(&only_address, Overrides::default()).has_channels());

        let relay = Notifications { smtp_host: Some("127.0.0.1".into()), ..only_address };
        assert!(Notifier::with_overrides(&relay, Overrides::default()).has_channels());
    }

    #[tokio::test]
    async fn a_disabled_event_sends_nothing() {
        // A nonexistent program would fail if it were run.
        let desktop = Notifications { desktop: true, ..config() };
        let overrides =
            Overrides { notify_send: Some("/nonexistent/kitt-notify".into()), smtp_ca_file: None };
        let notifier = Notifier::with_overrides(&desktop, overrides);

        let message = Message::new("kitt", "done");
        assert!(notifier.send(NotifyEvent::Complete, &message).await.is_empty());
        assert_eq!(notifier.send(NotifyEvent::Failure, &message).await.len(), 1);
    }
}
