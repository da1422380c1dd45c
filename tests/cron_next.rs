//! Cron next-fire times: a reference table of expressions and their next
//! fires in UTC (steps, ranges with steps, names, 7 as Sunday, the
//! day-of-month/day-of-week "either" rule and its `*`-field exception,
//! macros, month ends and leap years), and property tests against a
//! minute-by-minute search with an independent reading of the expression.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use kitt::schedule::cron::{CronExpr, Field};
use proptest::prelude::*;

/// (expression, after, the next fires in UTC).
const TABLE: &[(&str, &str, &[&str])] = &[
    (
        "*/15 * * * *",
        "2026-12-05T01:07:00Z",
        &["2026-12-05T01:15Z", "2026-12-05T01:30Z", "2026-12-05T01:45Z", "2026-12-05T02:00Z"],
    ),
    ("0 2 * * *", "2026-12-05T02:00:00Z", &["2026-12-06T02:00Z", "2026-12-07T02:00Z"]),
    (
        "0-30/10 9-17/4 * * *",
        "2026-12-05T09:25:00Z",
        &[
            "2026-12-05T09:30Z",
            "2026-12-05T13:00Z",
            "2026-12-05T13:10Z",
            "2026-12-05T13:20Z",
            "2026-12-05T13:30Z",
            "2026-12-05T17:00Z",
        ],
    ),
    (
        "*/7 * * * *",
        "2026-12-05T10:50:00Z",
        &["2026-12-05T10:56Z", "2026-12-05T11:00Z", "2026-12-05T11:07Z"],
    ),
    // Both day fields restricted: the 1st of the month *or* a Monday.
    (
        "0 0 1 * MON",
        "2026-11-29T12:00:00Z",
        &["2026-11-30T00:00Z", "2026-12-01T00:00Z", "2026-12-07T00:00Z", "2026-12-14T00:00Z"],
    ),
    (
        "0 9 13 * fri",
        "2027-08-01T00:00:00Z",
        &["2027-08-06T09:00Z", "2027-08-13T09:00Z", "2027-08-20T09:00Z", "2027-08-27T09:00Z"],
    ),
    // A day field starting with `*` makes both apply: odd days that are Mondays.
    (
        "0 0 */2 * MON",
        "2026-12-01T00:00:00Z",
        &["2026-12-07T00:00Z", "2026-12-21T00:00Z", "2027-01-11T00:00Z"],
    ),
    // The first Sunday of the month (`*/7` over 0-7 is Sunday alone).
    (
        "0 0 1-7 * */7",
        "2026-12-01T00:00:00Z",
        &["2026-12-06T00:00Z", "2027-01-03T00:00Z", "2027-02-07T00:00Z"],
    ),
    ("0 0 * * 7", "2026-12-05T00:00:00Z", &["2026-12-06T00:00Z", "2026-12-13T00:00Z"]),
    ("0 0 * * 0", "2026-12-05T00:00:00Z", &["2026-12-06T00:00Z", "2026-12-13T00:00Z"]),
    (
        "15 6 * * 5-7",
        "2026-12-02T00:00:00Z",
        &["2026-12-04T06:15Z", "2026-12-05T06:15Z", "2026-12-06T06:15Z", "2026-12-11T06:15Z"],
    ),
    (
        "30 8 * JAN-MAR/2 MON-FRI",
        "2026-12-31T00:00:00Z",
        &["2027-01-01T08:30Z", "2027-01-04T08:30Z", "2027-01-05T08:30Z"],
    ),
    ("0 22 * * 1-5", "2026-12-04T22:00:00Z", &["2026-12-07T22:00Z", "2026-12-08T22:00Z"]),
    // Month ends: the 31st skips the 30-day months and February.
    (
        "0 0 31 * *",
        "2027-01-31T00:00:00Z",
        &["2027-03-31T00:00Z", "2027-05-31T00:00Z", "2027-07-31T00:00Z", "2027-08-31T00:00Z"],
    ),
    (
        "0 0 30 * *",
        "2027-01-30T00:00:00Z",
        &["2027-03-30T00:00Z", "2027-04-30T00:00Z", "2027-05-30T00:00Z"],
    ),
    // Leap years, and 2100, which is not one.
    ("0 12 29 2 *", "2026-01-01T00:00:00Z", &["2028-02-29T12:00Z", "2032-02-29T12:00Z"]),
    ("0 12 29 2 *", "2096-03-01T00:00:00Z", &["2104-02-29T12:00Z"]),
    (
        "0 0 29 2 SUN",
        "2027-01-01T00:00:00Z",
        &["2027-02-07T00:00Z", "2027-02-14T00:00Z", "2027-02-21T00:00Z"],
    ),
    ("59 23 31 12 *", "2026-12-31T23:59:00Z", &["2027-12-31T23:59Z"]),
    ("@hourly", "2026-12-05T10:00:00Z", &["2026-12-05T11:00Z", "2026-12-05T12:00Z"]),
    ("@daily", "2026-12-05T10:00:00Z", &["2026-12-06T00:00Z", "2026-12-07T00:00Z"]),
    ("@midnight", "2026-12-31T23:59:59Z", &["2027-01-01T00:00Z"]),
    ("@weekly", "2026-12-05T10:00:00Z", &["2026-12-06T00:00Z", "2026-12-13T00:00Z"]),
    ("@monthly", "2026-12-05T10:00:00Z", &["2027-01-01T00:00Z", "2027-02-01T00:00Z"]),
    ("@yearly", "2026-12-05T10:00:00Z", &["2027-01-01T00:00Z", "2028-01-01T00:00Z"]),
    ("@annually", "2028-01-01T00:00:00Z", &["2029-01-01T00:00Z"]),
];

fn utc(text: &str) -> Timestamp {
    let text = if text.len() == "2026-12-05T01:15Z".len() {
        text.replace('Z', ":00Z")
    } else {
        text.to_owned()
    };
    text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
}

#[test]
fn reference_table_of_next_fires_in_utc() {
    for (expr, after, expected) in TABLE {
        let cron = CronExpr::parse(expr).unwrap_or_else(|error| panic!("{expr}: {error}"));
        let fires: Vec<Timestamp> = cron
            .next_fires(utc(after), &TimeZone::UTC, expected.len())
            .iter()
            .map(jiff::Zoned::timestamp)
            .collect();
        let expected: Vec<Timestamp> = expected.iter().map(|text| utc(text)).collect();
        assert_eq!(fires, expected, "`{expr}` after {after}");
    }
}

#[test]
fn names_and_numbers_mean_the_same() {
    let pairs = [
        ("0 0 * JAN-MAR MON-FRI", "0 0 * 1-3 1-5"),
        ("0 0 * jan,Dec sun", "0 0 * 1,12 0"),
        ("0 0 * * SAT,SUN", "0 0 * * 6-7"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 7"),
    ];
    let after = utc("2026-12-05T10:00:00Z");
    for (named, numbered) in pairs {
        let a = CronExpr::parse(named).unwrap().next_fires(after, &TimeZone::UTC, 20);
        let b = CronExpr::parse(numbered).unwrap().next_fires(after, &TimeZone::UTC, 20);
        assert_eq!(a, b, "`{named}` and `{numbered}`");
    }
}

#[test]
fn local_time_follows_the_zone_and_skips_a_missing_hour_forward() {
    let Ok(new_york) = TimeZone::get("America/New_York") else {
        panic!("the system time zone database has no America/New_York");
    };
    let cron = CronExpr::parse("30 2 * * *").unwrap();
    // 2027-03-14 02:30 does not exist in New York (clocks go 02:00 → 03:00).
    let fires = cron.next_fires(utc("2027-03-13T12:00:00Z"), &new_york, 3);
    let shown: Vec<String> =
        fires.iter().map(|fire| fire.strftime("%F %H:%M %Z").to_string()).collect();
    assert_eq!(shown, ["2027-03-14 03:30 EDT", "2027-03-15 02:30 EDT", "2027-03-16 02:30 EDT"]);
    // 2027-11-07 01:30 happens twice; it fires once.
    let cron = CronExpr::parse("30 1 * * *").unwrap();
    let fires = cron.next_fires(utc("2027-11-06T12:00:00Z"), &new_york, 2);
    let shown: Vec<String> =
        fires.iter().map(|fire| fire.strftime("%F %H:%M %Z").to_string()).collect();
    assert_eq!(shown, ["2027-11-07 01:30 EDT", "2027-11-08 01:30 EST"]);
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        ("60 * * * *", Field::Minute, "`minute` field `60`"),
        ("0 24 * * *", Field::Hour, "`hour` field `24`"),
        ("0 0 32 * *", Field::DayOfMonth, "`day-of-month` field `32`"),
        ("0 0 * 13 *", Field::Month, "`month` field `13`"),
        ("0 0 * * 8", Field::DayOfWeek, "`day-of-week` field `8`"),
        ("0 0 * * MON-FOO", Field::DayOfWeek, "`FOO` is not a number or day name"),
        ("*/0 * * * *", Field::Minute, "the step in `*/0` is 0"),
        ("0 9-5 * * *", Field::Hour, "the range `9-5` runs backwards"),
        ("0 0 * * SAT-SUN", Field::DayOfWeek, "Sunday at the end of a range is 7, as in `6-7`"),
        ("5/15 * * * *", Field::Minute, "a step needs a range: write `5-59/…`"),
        ("0 0 1,,2 * *", Field::DayOfMonth, "an empty list item"),
        ("0 0 * JANUARY *", Field::Month, "`JANUARY` is not a number or month name"),
        ("0 0 ? * *", Field::DayOfMonth, "`?` is not a number"),
        ("0 0 L * *", Field::DayOfMonth, "`L` is not a number"),
        ("0 0 * * 1#2", Field::DayOfWeek, "`1#2` is not a number or day name"),
    ];
    for (expr, field, message) in cases {
        let error = CronExpr::parse(expr).expect_err(expr);
        assert_eq!(error.field(), Some(field), "{expr}: {error}");
        assert!(error.to_string().contains(message), "{expr}: {error}");
    }
}

/// An independent reading of an expression: for each field, the allowed
/// values, and whether the day fields start with `*`.
struct Oracle {
    fields: [Vec<bool>; 5],
    day_star: bool,
    weekday_star: bool,
}

impl Oracle {
    fn new(expr: &str) -> Oracle {
        let expanded = match expr {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let words: Vec<&str> = expanded.split_whitespace().collect();
        let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
        let fields = std::array::from_fn(|i| {
            let mut allowed = vec![false; 8 + 60];
            for item in words[i].split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((range, step)) => (range, step.parse::<usize>().unwrap()),
                    None => (item, 1),
                };
                let (low, high) = match range.split_once('-') {
                    _ if range == "*" => bounds[i],
                    Some((a, b)) => (number(i, a), number(i, b)),
                    None => (number(i, range), number(i, range)),
                };
                for value in (low..=high).step_by(step) {
                    allowed[value] = true;
                }
            }
            if i == 4 && allowed[7] {
                allowed[0] = true;
            }
            allowed
        });
        Oracle {
            fields,
            day_star: words[2].starts_with('*'),
            weekday_star: words[4].starts_with('*'),
        }
    }

    fn matches(&self, at: DateTime) -> bool {
        let get = |field: usize, value: i8| self.fields[field][value as usize];
        let day = get(2, at.day());
        let weekday = get(4, at.weekday().to_sunday_zero_offset());
        let days = if self.day_star || self.weekday_star { day && weekday } else { day || weekday };
        get(0, at.minute()) && get(1, at.hour()) && get(3, at.month()) && days
    }
}

fn number(field: usize, word: &str) -> usize {
    const MONTHS: [&str; 12] =
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let lower = word.to_ascii_lowercase();
    match field {
        3 if MONTHS.contains(&lower.as_str()) => {
            MONTHS.iter().position(|m| *m == lower).unwrap() + 1
        }
        4 if DAYS.contains(&lower.as_str()) => DAYS.iter().position(|d| *d == lower).unwrap(),
        _ => word.parse().unwrap(),
    }
}

/// One list item of a field with bounds `low..=high`, written every way cron
/// allows; `names[v - first]` is the name of value `v`, where there is one.
fn item(
    low: u8,
    high: u8,
    names: &'static [&'static str],
    first: u8,
) -> impl Strategy<Value = String> {
    let value = (low..=high).prop_flat_map(move |v| match names.get(usize::from(v - first)) {
        Some(name) => {
            prop_oneof![Just(v.to_string()), Just((*name).to_owned()), Just(name.to_uppercase()),]
                .boxed()
        }
        None => Just(v.to_string()).boxed(),
    });
    prop_oneof![
        2 => Just("*".to_owned()),
        2 => (1..=high).prop_map(|step| format!("*/{step}")),
        3 => value,
        2 => (low..=high, low..=high).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => (low..=high, low..=high, 1..=high)
            .prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
    ]
}

fn field(
    low: u8,
    high: u8,
    names: &'static [&'static str],
    first: u8,
) -> impl Strategy<Value = String> {
    prop::collection::vec(item(low, high, names, first), 1..=3).prop_map(|items| items.join(","))
}

const MONTH_NAMES: &[&str] =
    &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn expression() -> impl Strategy<Value = String> {
    let fields = (
        field(0, 59, &[], 0),
        field(0, 23, &[], 0),
        field(1, 31, &[], 1),
        field(1, 12, MONTH_NAMES, 1),
        field(0, 7, DAY_NAMES, 0),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"));
    prop_oneof![
        9 => fields,
        1 => prop::sample::select(MACROS.to_vec()).prop_map(str::to_owned),
    ]
}

const MACROS: &[&str] =
    &["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"];

fn start() -> impl Strategy<Value = DateTime> {
    (1990i16..2090, 1i8..=12, 1i8..=28, 0i8..24, 0i8..60, 0i8..60)
        .prop_map(|(y, mo, d, h, mi, s)| jiff::civil::date(y, mo, d).at(h, mi, s, 0))
}

/// How many minutes after the start the search checks one by one.
const SCAN_MINUTES: i64 = 3 * 24 * 60;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn next_fire_is_the_first_matching_minute_after_the_start(
        expr in expression(),
        start in start(),
    ) {
        let cron = match CronExpr::parse(&expr) {
            Ok(cron) => cron,
            // Only a day no chosen month has may be refused (e.g. `31` in `4,6`).
            Err(error) => {
                prop_assert_eq!(error.field(), Some(Field::DayOfMonth), "{}: {}", expr, error);
                prop_assume!(false);
                unreachable!()
            }
        };
        let oracle = Oracle::new(&expr);
        let next = cron.next_after(start).expect("a valid expression fires within fifty years");
        prop_assert!(next > start);
        prop_assert!(oracle.matches(next), "`{}` does not match {}", expr, next);
        prop_assert!(cron.matches(next));
        let mut minute = start.with().second(0).build().unwrap();
        for _ in 0..SCAN_MINUTES {
            minute = minute.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
            if minute >= next {
                break;
            }
            prop_assert!(!oracle.matches(minute), "`{}` matches {} before {}", expr, minute, next);
        }
    }

    #[test]
    fn in_utc_the_zoned_fire_is_the_civil_one(expr in expression(), start in start()) {
        prop_assume!(CronExpr::parse(&expr).is_ok());
        let cron = CronExpr::parse(&expr).unwrap();
        let after = start.to_zoned(TimeZone::UTC).unwrap().timestamp();
        let zoned = cron.next_fire(after, &TimeZone::UTC).unwrap();
        prop_assert_eq!(zoned.datetime(), cron.next_after(start).unwrap());
    }

    #[test]
    fn consecutive_fires_increase_and_each_matches(expr in expression(), start in start()) {
        prop_assume!(CronExpr::parse(&expr).is_ok());
        let cron = CronExpr::parse(&expr).unwrap();
        let oracle = Oracle::new(&expr);
        let after = start.to_zoned(TimeZone::UTC).unwrap().timestamp();
        let fires = cron.next_fires(after, &TimeZone::UTC, 5);
        prop_assert_eq!(fires.len(), 5);
        for pair in fires.windows(2) {
            prop_assert!(pair[0].timestamp() < pair[1].timestamp());
        }
        for fire in &fires {
            prop_assert!(oracle.matches(fire.datetime()));
        }
    }

    #[test]
    fn what_kitt_keeps_reads_back_the_same(expr in expression()) {
        prop_assume!(CronExpr::parse(&expr).is_ok());
        let cron = CronExpr::parse(&expr).unwrap();
        prop_assert_eq!(CronExpr::parse(cron.as_str()).unwrap(), cron);
    }
}
