//! Validation of the campaign-wide settings: notifications and their events,
//! secrets, the `schedule` cron expression and `auto_compare`'s
//! `regression_thresholds`.

use serde_saphyr::Spanned;

use super::campaign::{Notifications, NotifyEvent, Thresholds};
use super::raw::{RawNotifications, RawThresholds};
use super::secret::{Secret, SecretOrigin};
use super::suggest::did_you_mean;
use super::validate::Checker;
use crate::schedule::cron::CronExpr;

const DEFAULT_SMTP_PORT: u16 = 587;

impl Checker {
    pub(super) fn notifications(
        &mut self,
        raw: RawNotifications,
        auto_compare: bool,
    ) -> Notifications {
        let webhook_url = raw
            .webhook_url
            .filter(|url| !url.value.trim().is_empty())
            .map(|url| self.url(url, "notifications.webhook_url"));
        let smtp_port = self
            .bounded(raw.smtp_port, "notifications", "smtp_port", (1, 65_535))
            .unwrap_or(DEFAULT_SMTP_PORT);
        let email = raw.email.map(|email| {
            let text = email.value.trim().to_owned();
            if !text.contains('@') {
                self.report(&email, "notifications.email", format!("`{text}` is not an address"));
            } else if raw.smtp_host.is_none() {
                self.report(&email, "notifications.email", "email needs an SMTP relay".into())
                    .hint("set `notifications.smtp_host` (and `smtp_port`, default 587)");
            }
            text
        });
        let events = self.events(raw.notify_on, raw.on_complete, raw.on_failure, auto_compare);
        Notifications {
            webhook_url,
            email,
            smtp_host: raw.smtp_host.map(|host| host.value.trim().to_owned()),
            smtp_port,
            smtp_user: raw.smtp_user,
            smtp_password: self.secret(
                raw.smtp_password,
                "notifications.smtp_password",
                "KITT_SMTP_PASSWORD",
            ),
            desktop: raw.desktop.unwrap_or(false),
            events,
        }
    }

    fn events(
        &mut self,
        notify_on: Option<Spanned<Vec<Spanned<String>>>>,
        on_complete: Option<Spanned<bool>>,
        on_failure: Option<Spanned<bool>>,
        auto_compare: bool,
    ) -> Vec<NotifyEvent> {
        let Some(list) = notify_on else {
            let mut events = Vec::new();
            if on_complete.is_none_or(|flag| flag.value) {
                events.push(NotifyEvent::Complete);
            }
            if on_failure.is_none_or(|flag| flag.value) {
                events.push(NotifyEvent::Failure);
            }
            return events;
        };
        if let Some(flag) = on_complete.as_ref().or(on_failure.as_ref()) {
            let message = "`notify_on` and `on_complete`/`on_failure` both choose events".into();
            self.report(flag, "notifications", message).hint("keep one of them");
        }
        let mut events = Vec::new();
        for name in &list.value {
            let event = match name.value.trim().to_ascii_lowercase().as_str() {
                "complete" => NotifyEvent::Complete,
                "failure" => NotifyEvent::Failure,
                "regression" if auto_compare => NotifyEvent::Regression,
                "regression" => {
                    let message = "`regression` events need `auto_compare: true`".into();
                    self.report(name, "notifications.notify_on", message);
                    continue;
                }
                other => {
                    let message = format!("unknown event `{other}`");
                    let known = ["complete", "failure", "regression"];
                    let problem = self.report(name, "notifications.notify_on", message);
                    match did_you_mean(other, known) {
                        Some(near) => problem.hint(format!("did you mean `{near}`?")),
                        None => problem.hint("events are `complete`, `failure` and `regression`"),
                    };
                    continue;
                }
            };
            if !events.contains(&event) {
                events.push(event);
            }
        }
        events
    }

    pub(super) fn secret(
        &mut self,
        raw: Option<Spanned<String>>,
        field: &str,
        env_var: &'static str,
    ) -> Option<Secret> {
        let secret = Secret::resolve(raw.map(|value| value.value), env_var)?;
        if secret.origin() == SecretOrigin::File {
            self.warnings.push(format!(
                "`{field}` is written in the campaign file; prefer the environment variable {env_var}"
            ));
        }
        Some(secret)
    }

    /// The `schedule` key, checked by the same parser as `--cron`.
    pub(super) fn schedule(&mut self, schedule: Spanned<String>) -> String {
        match CronExpr::parse(&schedule.value) {
            Ok(expr) => expr.as_str().to_owned(),
            Err(error) => {
                self.report(&schedule, "schedule", error.to_string()).hint(
                    "for example `0 2 * * *` (02:00 every day), `*/15 * * * 1-5` or `@daily`",
                );
                schedule.value.trim().to_owned()
            }
        }
    }

    /// `regression_thresholds`: percentages above 0, below 100 for throughput
    /// (a rate cannot fall by 100 % or more) and at most 1000 for latency.
    pub(super) fn thresholds(
        &mut self,
        raw: Option<Spanned<RawThresholds>>,
        auto_compare: bool,
    ) -> Thresholds {
        let mut thresholds = Thresholds::default();
        let Some(raw) = raw else { return thresholds };
        if !auto_compare {
            self.warnings.push(
                "`regression_thresholds` has no effect without `auto_compare: true`".to_owned(),
            );
        }
        let fields = [
            (raw.value.throughput_pct, "throughput_pct", 100.0, &mut thresholds.throughput_pct),
            (raw.value.latency_pct, "latency_pct", 1000.0, &mut thresholds.latency_pct),
        ];
        for (value, key, limit, slot) in fields {
            let Some(value) = value else { continue };
            let number = value.value;
            let fits = number.is_finite()
                && number > 0.0
                && (number < limit || (key == "latency_pct" && number == limit));
            if fits {
                *slot = number;
                continue;
            }
            let shown = if number.is_finite() && number.abs() < 1e6 {
                number.to_string()
            } else {
                format!("{number:e}")
            };
            let range = if key == "throughput_pct" { "below 100" } else { "at most 1000" };
            let message = format!("must be a percentage above 0 and {range}, got {shown}");
            let default = if key == "throughput_pct" { 5 } else { 10 };
            self.report(&value, &format!("regression_thresholds.{key}"), message)
                .hint(format!("for example `{key}: {default}` ({default} %)"));
        }
        thresholds
    }
}
