//! Dates and durations as a rotation needs them: UTC timestamps written
//! `2026-12-01T09:30:00Z` in the state file and in what `rotate` prints,
//! durations written `7d`, `36h`, `1d12h` on the command line.
//!
//! Whole seconds, UTC only, no time zones and no leap seconds: enough to
//! say "retire after 7 days" and to name a selector after its month. This
//! module never reads the clock except in [`Timestamp::now`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A moment, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A length of time, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp(i64::try_from(after.as_secs()).unwrap_or(i64::MAX)),
            Err(before) => Timestamp(-i64::try_from(before.duration().as_secs()).unwrap_or(0)),
        }
    }

    pub fn from_unix(seconds: i64) -> Timestamp {
        Timestamp(seconds)
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    pub fn plus(self, span: Span) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(span.0).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero when it is not later).
    pub fn since(self, earlier: Timestamp) -> Span {
        Span(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// (year, month, day, hour, minute, second) in UTC.
    fn parts(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (
            y,
            m,
            d,
            (secs / 3600) as u32,
            (secs % 3600 / 60) as u32,
            (secs % 60) as u32,
        )
    }

    /// `2026-12-01`.
    pub fn date(self) -> String {
        let (y, m, d, ..) = self.parts();
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// `202612`: the year and month, for dated selectors.
    pub fn year_month(self) -> String {
        let (y, m, ..) = self.parts();
        format!("{y:04}{m:02}")
    }

    /// `20261201T093000Z`: for file names.
    pub fn compact(self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }

    /// Parses `2026-12-01T09:30:00Z` (what [`Display`](fmt::Display) writes).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let bad = || format!("`{text}` is not a UTC time like 2026-12-01T09:30:00Z");
        let b = text.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
            let part = &text[range];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<i64>().map_err(|_| bad())
        };
        let (y, mo, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (h, mi, s) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
            return Err(bad());
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        if civil_from_days(days) != (y, mo as u32, d as u32) {
            return Err(bad());
        }
        Ok(Timestamp(days * 86_400 + h * 3600 + mi * 60 + s))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.parts();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

const UNITS: [(char, u64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3600),
    ('m', 60),
    ('s', 1),
];

impl Span {
    pub const fn from_secs(seconds: u64) -> Span {
        Span(seconds)
    }

    pub const fn days(days: u64) -> Span {
        Span(days * 86_400)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// Parses `7d`, `36h`, `1d12h`, `90s`, `2w` (units w, d, h, m, s).
    pub fn parse(text: &str) -> Result<Span, String> {
        let bad = || {
            format!(
                "`{text}` is not a duration: write a number and a unit (w, d, h, m or s), \
                 e.g. 7d, 36h or 1d12h"
            )
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = UNITS.iter().find(|(u, _)| *u == c).ok_or_else(bad)?.1;
            let n: u64 = digits.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    /// The shortest form [`Span::parse`] reads back: `7d`, `1d12h`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, size) in UNITS.iter().skip(1) {
            if rest >= *size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_and_parse_in_utc() {
        let t = Timestamp::from_unix(1_796_117_400);
        assert_eq!(t.to_string(), "2026-12-01T09:30:00Z");
        assert_eq!(Timestamp::parse("2026-12-01T09:30:00Z"), Ok(t));
        assert_eq!(t.date(), "2026-12-01");
        assert_eq!(t.year_month(), "202612");
        assert_eq!(t.compact(), "20261201T093000Z");
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        let leap = Timestamp::parse("2028-02-29T23:59:59Z").unwrap();
        assert_eq!(
            leap.plus(Span::from_secs(1)).to_string(),
            "2028-03-01T00:00:00Z"
        );
    }

    #[test]
    fn impossible_dates_are_refused() {
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01 09:30:00Z",
            "2026-12-01T09:30:00",
            "2026-12-01T24:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_and_print_their_units() {
        assert_eq!(Span::parse("7d"), Ok(Span::days(7)));
        assert_eq!(Span::parse("1d12h"), Ok(Span::from_secs(129_600)));
        assert_eq!(Span::parse("2w"), Ok(Span::days(14)));
        assert_eq!(Span::parse("90s"), Ok(Span::from_secs(90)));
        assert_eq!(Span::days(14).to_string(), "14d");
        assert_eq!(Span::from_secs(129_600).to_string(), "1d12h");
        assert_eq!(Span::from_secs(90).to_string(), "1m30s");
        assert_eq!(Span::from_secs(0).to_string(), "0s");
        for bad in ["", "7", "d", "7x", "1.5d", "-1d"] {
            let err = Span::parse(bad).unwrap_err();
            assert!(err.contains("e.g. 7d"), "{bad}: {err}");
        }
    }

    #[test]
    fn since_is_never_negative() {
        let a = Timestamp::from_unix(100);
        let b = Timestamp::from_unix(160);
        assert_eq!(b.since(a), Span::from_secs(60));
        assert_eq!(a.since(b), Span::from_secs(0));
    }
}
