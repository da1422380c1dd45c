//! Cron expressions as Debian's cron reads them, and when they fire.
//!
//! A [`CronExpr`] is five fields — minute, hour, day of month, month, day of
//! week — or one of the macros `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly`. A field is a
//! comma-separated list of items; an item is `*`, a number, a name (`JAN`–
//! `DEC`, `SUN`–`SAT`, any case), a range `a-b`, or `*` or a range with a
//! step (`*/15`, `1-30/2`). Day of week takes 0–7, 0 and 7 both Sunday.
//!
//! Day of month and day of week combine as cron combines them: when both are
//! restricted, a day matches if *either* matches (`0 0 1 * MON` fires on the
//! first of the month and on every Monday); when one of them starts with `*`
//! (`*` or `*/n`), a day must match both.
//!
//! Decisions, where cron itself is lax:
//! - Expressions cron would accept but that cannot be what the user meant are
//!   refused: a range running backwards (`5-1`, which cron reads as no value
//!   at all) and an expression that never fires (`0 0 31 4 *`).
//! - A step on a single value (`5/15`) is refused, as Debian's cron refuses
//!   it; write `5-59/15`.
//! - `@reboot` is refused: it is not a time, so kitt can neither say when it
//!   fires nor run it from `kitt campaign scheduler`.
//! - Macros are read in any case and kept in lower case, the only form cron
//!   reads; every other field is kept as written.
//!
//! Times are civil (wall-clock) minutes; [`CronExpr::next_fire`] maps them to
//! instants in a time zone. A wall-clock time skipped by a daylight-saving
//! change fires when the clock would have shown it (an hour late, at the
//! later offset); a repeated one fires once, the first time. This module
//! parses and evaluates; installing and firing live in the sibling modules.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// How far ahead a next fire is looked for: long enough for the rarest
/// expression (29 February on one weekday: 40 years across 2100).
const HORIZON_DAYS: u32 = 366 * 50;

/// The macros and the five fields each stands for.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTH_NAMES: &[&str] =
    &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAY_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One of the five fields of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// 0–59.
    Minute,
    /// 0–23.
    Hour,
    /// 1–31.
    DayOfMonth,
    /// 1–12 or `JAN`–`DEC`.
    Month,
    /// 0–7 (0 and 7 are Sunday) or `SUN`–`SAT`.
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] =
        [Field::Minute, Field::Hour, Field::DayOfMonth, Field::Month, Field::DayOfWeek];

    /// The field's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    fn bounds(self) -> (u8, u8) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    /// What the field takes, for messages.
    fn takes(self) -> &'static str {
        match self {
            Field::Minute => "0-59",
            Field::Hour => "0-23",
            Field::DayOfMonth => "1-31",
            Field::Month => "1-12 or JAN-DEC",
            Field::DayOfWeek => "0-7 (0 and 7 are Sunday) or SUN-SAT",
        }
    }

    /// The value of a name (`jan` = 1, `sun` = 0), for the fields that have names.
    fn named(self, word: &str) -> Option<u8> {
        let (names, first) = match self {
            Field::Month => (MONTH_NAMES, 1),
            Field::DayOfWeek => (WEEKDAY_NAMES, 0),
            _ => return None,
        };
        let position = names.iter().position(|name| name.eq_ignore_ascii_case(word))?;
        u8::try_from(position).ok().map(|position| position + first)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Nothing but whitespace.
    #[error(
        "the cron expression is empty; write five fields (minute hour day-of-month month \
         day-of-week) or a macro such as `@daily`"
    )]
    Empty,
    /// Not five fields.
    #[error(
        "`{expr}` has {count} field{}, but a cron expression has five: minute hour \
         day-of-month month day-of-week{hint}",
        plural(.count)
    )]
    FieldCount {
        /// The expression.
        expr: String,
        /// How many fields it has.
        count: usize,
        /// A hint for a likely cause.
        hint: &'static str,
    },
    /// `@something` that is not a macro.
    #[error(
        "`{name}` is not a cron macro; the macros are @yearly, @annually, @monthly, @weekly, \
         @daily, @midnight and @hourly"
    )]
    UnknownMacro {
        /// The word as written.
        name: String,
    },
    /// `@reboot`.
    #[error(
        "`@reboot` is not a time: kitt cannot say when it fires, and `kitt campaign scheduler` \
         cannot run it; choose a time, such as `@daily`"
    )]
    Reboot,
    /// One field is invalid.
    #[error("`{field}` field `{value}`: {problem}")]
    Field {
        /// Which field.
        field: Field,
        /// The whole field as written.
        value: String,
        /// What is wrong, naming the item.
        problem: String,
    },
    /// Valid, but no day ever matches.
    #[error("`{expr}` never fires: {why}")]
    Never {
        /// The expression.
        expr: String,
        /// Which fields cannot meet.
        why: String,
    },
}

impl CronError {
    /// The field at fault, when one is.
    pub fn field(&self) -> Option<Field> {
        match self {
            CronError::Field { field, .. } => Some(*field),
            CronError::Never { .. } => Some(Field::DayOfMonth),
            _ => None,
        }
    }
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day-of-month field starts with `*`: days combine with AND.
    day_star: bool,
    /// The day-of-week field starts with `*`: days combine with AND.
    weekday_star: bool,
}

impl CronExpr {
    /// Parses and checks an expression; see the module doc for the syntax.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        let (canonical, fields_text) = if trimmed.starts_with('@') {
            let name = trimmed.to_ascii_lowercase();
            if name == "@reboot" {
                return Err(CronError::Reboot);
            }
            let Some((name, fields)) = MACROS.iter().find(|(macro_name, _)| *macro_name == name)
            else {
                return Err(CronError::UnknownMacro { name: trimmed.to_owned() });
            };
            ((*name).to_owned(), *fields)
        } else {
            (trimmed.split_ascii_whitespace().collect::<Vec<_>>().join(" "), trimmed)
        };

        let words: Vec<&str> = fields_text.split_ascii_whitespace().collect();
        if words.len() != 5 {
            let hint = match words.len() {
                6 | 7 => " (kitt takes no seconds or year field)",
                _ => "",
            };
            return Err(CronError::FieldCount { expr: canonical, count: words.len(), hint });
        }
        let mut sets = [0u64; 5];
        for (slot, (field, word)) in sets.iter_mut().zip(Field::ALL.iter().zip(&words)) {
            *slot = parse_field(*field, word)?;
        }
        // 7 is Sunday too.
        let weekdays = (sets[4] | (sets[4] >> 7)) & 0x7f;
        let expr = CronExpr {
            text: canonical,
            minutes: sets[0],
            hours: low_bits(sets[1]),
            days: low_bits(sets[2]),
            months: u16::try_from(sets[3]).unwrap_or(0),
            weekdays: u8::try_from(weekdays).unwrap_or(0),
            day_star: words[2].starts_with('*'),
            weekday_star: words[4].starts_with('*'),
        };
        expr.check_fires()?;
        Ok(expr)
    }

    /// The expression as kitt keeps it (and writes it into the crontab).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the expression fires at this wall-clock minute (seconds are ignored).
    pub fn matches(&self, at: DateTime) -> bool {
        bit(self.minutes, at.minute()) && bit(self.hours.into(), at.hour()) && self.on(at.date())
    }

    /// Whether the expression fires on some minute of this day.
    pub fn on(&self, date: Date) -> bool {
        if !bit(self.months.into(), date.month()) {
            return false;
        }
        let day = bit(self.days.into(), date.day());
        let weekday = bit(self.weekdays.into(), date.weekday().to_sunday_zero_offset());
        if self.day_star || self.weekday_star { day && weekday } else { day || weekday }
    }

    /// The first wall-clock minute strictly after `after` at which the
    /// expression fires, within fifty years.
    pub fn next_after(&self, after: DateTime) -> Option<DateTime> {
        let start = after
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::SignedDuration::from_mins(1))
            .ok()?;
        let mut date = start.date();
        let mut from = (start.hour(), start.minute());
        let mut days = 0;
        while days < HORIZON_DAYS {
            if !bit(self.months.into(), date.month()) {
                let next_month = date.first_of_month().checked_add(jiff::Span::new().months(1));
                days += u32::try_from(date.days_in_month() - date.day() + 1).unwrap_or(1);
                date = next_month.ok()?;
                from = (0, 0);
                continue;
            }
            if self.on(date)
                && let Some((hour, minute)) = self.first_time_from(from.0, from.1)
            {
                return Some(date.at(hour, minute, 0, 0));
            }
            date = date.tomorrow().ok()?;
            from = (0, 0);
            days += 1;
        }
        None
    }

    /// The first instant strictly after `after` at which the expression
    /// fires in `tz`.
    pub fn next_fire(&self, after: Timestamp, tz: &TimeZone) -> Option<Zoned> {
        let mut civil = tz.to_datetime(after);
        loop {
            let candidate = self.next_after(civil)?;
            let zoned = candidate.to_zoned(tz.clone()).ok()?;
            if zoned.timestamp() > after {
                return Some(zoned);
            }
            // A repeated wall-clock time already passed at its first offset.
            civil = candidate;
        }
    }

    /// The next `count` fires after `after` in `tz`.
    pub fn next_fires(&self, after: Timestamp, tz: &TimeZone, count: usize) -> Vec<Zoned> {
        let mut fires = Vec::with_capacity(count);
        let mut from = after;
        while fires.len() < count {
            let Some(next) = self.next_fire(from, tz) else { break };
            from = next.timestamp();
            fires.push(next);
        }
        fires
    }

    /// The earliest (hour, minute) at or after `(hour, minute)` in a day.
    fn first_time_from(&self, hour: i8, minute: i8) -> Option<(i8, i8)> {
        for h in hour..24 {
            if !bit(self.hours.into(), h) {
                continue;
            }
            let from = if h == hour { minute } else { 0 };
            let later = self.minutes >> from;
            if later != 0 {
                let m = from + i8::try_from(later.trailing_zeros()).ok()?;
                return Some((h, m));
            }
        }
        None
    }

    /// Refuses an expression no day matches (the 31st of a 30-day month).
    fn check_fires(&self) -> Result<(), CronError> {
        let reference = Date::constant(2001, 1, 1).at(0, 0, 0, 0);
        if self.next_after(reference).is_some() {
            return Ok(());
        }
        Err(CronError::Never {
            expr: self.text.clone(),
            why: "no month the `month` field allows has a day the `day-of-month` field allows"
                .to_owned(),
        })
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for CronExpr {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(text)
    }
}

fn plural(count: &usize) -> &'static str {
    if *count == 1 { "" } else { "s" }
}

fn low_bits(set: u64) -> u32 {
    u32::try_from(set & u64::from(u32::MAX)).unwrap_or(0)
}

fn bit(set: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|value| value < 64 && set & (1 << value) != 0)
}

/// The set of values a field allows, as bits.
fn parse_field(field: Field, text: &str) -> Result<u64, CronError> {
    let fail = |problem: String| CronError::Field { field, value: text.to_owned(), problem };
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(fail("an empty list item (a stray comma)".to_owned()));
        }
        set |= parse_item(field, item).map_err(fail)?;
    }
    Ok(set)
}

/// One list item: `*`, `N`, `A-B`, `*/S` or `A-B/S`.
fn parse_item(field: Field, item: &str) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(item, step)?)),
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        field.bounds()
    } else if let Some((low, high)) = range.split_once('-') {
        let (low, high) = (value(field, low, item)?, value(field, high, item)?);
        if low > high {
            let fix = if field == Field::DayOfWeek && high == 0 {
                format!("Sunday at the end of a range is 7, as in `{low}-7`")
            } else {
                "write it from low to high, or list the values".to_owned()
            };
            return Err(format!(
                "the range `{range}` runs backwards (cron would never fire on it); {fix}"
            ));
        }
        (low, high)
    } else {
        let single = value(field, range, item)?;
        if step.is_some() {
            let (_, max) = field.bounds();
            return Err(format!(
                "a step needs a range: write `{single}-{max}/…` or `*/…`, not `{item}`"
            ));
        }
        (single, single)
    };
    let mut set = 0u64;
    for value in (low..=high).step_by(usize::from(step.unwrap_or(1))) {
        set |= 1 << value;
    }
    Ok(set)
}

fn parse_step(item: &str, step: &str) -> Result<u8, String> {
    match step.parse::<u8>() {
        Ok(0) => Err(format!("the step in `{item}` is 0; a step is 1 or more")),
        Ok(step) => Ok(step),
        Err(_) if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("the step in `{item}` is too large"))
        }
        Err(_) => Err(format!("the step `{step}` in `{item}` is not a number")),
    }
}

/// A number or name within the field's bounds.
fn value(field: Field, word: &str, item: &str) -> Result<u8, String> {
    let (low, high) = field.bounds();
    if word.is_empty() {
        return Err(format!("`{item}` is missing a value; {} takes {}", field, field.takes()));
    }
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return match word.parse::<u8>() {
            Ok(number) if (low..=high).contains(&number) => Ok(number),
            _ => Err(format!("{word} is out of range; {} takes {}", field, field.takes())),
        };
    }
    if let Some(number) = field.named(word) {
        return Ok(number);
    }
    Err(format!("`{word}` is not a {}; {} takes {}", what(field), field, field.takes()))
}

fn what(field: Field) -> &'static str {
    match field {
        Field::Month => "number or month name",
        Field::DayOfWeek => "number or day name",
        _ => "number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime {
        text.parse().expect("a civil date-time")
    }

    fn problem(expr: &str) -> CronError {
        CronExpr::parse(expr).expect_err(expr)
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let error = problem("0 2 * * 8");
        assert_eq!(error.field(), Some(Field::DayOfWeek));
        assert_eq!(
            error.to_string(),
            "`day-of-week` field `8`: 8 is out of range; day-of-week takes 0-7 (0 and 7 are \
             Sunday) or SUN-SAT"
        );
        let error = problem("61 * * * *").to_string();
        assert!(error.starts_with("`minute` field `61`: 61 is out of range"), "{error}");
        let error = problem("0 0 * FOO *").to_string();
        assert!(error.contains("`month` field `FOO`: `FOO` is not a number or month name"));
        assert_eq!(problem("*/0 * * * *").field(), Some(Field::Minute));
        assert_eq!(problem("0 5-1 * * *").field(), Some(Field::Hour));
        assert_eq!(problem("0 0 1,,2 * *").field(), Some(Field::DayOfMonth));
        assert_eq!(problem("5/15 * * * *").field(), Some(Field::Minute));
        assert!(problem("0 0 0 * *").to_string().contains("0 is out of range"));
    }

    #[test]
    fn whole_expression_errors_explain() {
        assert_eq!(problem("   "), CronError::Empty);
        assert!(matches!(problem("0 2 * *"), CronError::FieldCount { count: 4, .. }));
        let six = problem("0 0 2 * * *").to_string();
        assert!(six.contains("no seconds or year field"), "{six}");
        assert_eq!(problem("@reboot"), CronError::Reboot);
        assert!(matches!(problem("@nightly"), CronError::UnknownMacro { .. }));
        assert!(matches!(problem("0 0 31 4,6 *"), CronError::Never { .. }));
        assert!(matches!(problem("0 0 30 2 *"), CronError::Never { .. }));
    }

    #[test]
    fn macros_keep_their_lower_case_name() {
        let expr = CronExpr::parse(" @Daily ").expect("macro");
        assert_eq!(expr.as_str(), "@daily");
        assert_eq!(
            expr,
            CronExpr { text: "@daily".into(), ..CronExpr::parse("0 0 * * *").unwrap() }
        );
        let fields = CronExpr::parse("0  2\t* * mon-FRI").expect("fields");
        assert_eq!(fields.as_str(), "0 2 * * mon-FRI");
    }

    #[test]
    fn seven_and_zero_are_sunday() {
        let seven = CronExpr::parse("0 0 * * 7").unwrap();
        let zero = CronExpr::parse("0 0 * * 0").unwrap();
        let sun = CronExpr::parse("0 0 * * SUN").unwrap();
        assert_eq!((seven.weekdays, zero.weekdays, sun.weekdays), (1, 1, 1));
        assert_eq!(CronExpr::parse("0 0 * * 5-7").unwrap().weekdays, 0b110_0001);
    }

    #[test]
    fn next_minute_is_strictly_later() {
        let every = CronExpr::parse("* * * * *").unwrap();
        assert_eq!(every.next_after(at("2026-12-05T01:59:30")), Some(at("2026-12-05T02:00")));
        assert_eq!(every.next_after(at("2026-12-05T02:00")), Some(at("2026-12-05T02:01")));
        let late = CronExpr::parse("59 23 31 12 *").unwrap();
        assert_eq!(late.next_after(at("2026-12-31T23:59")), Some(at("2027-12-31T23:59")));
    }
}
