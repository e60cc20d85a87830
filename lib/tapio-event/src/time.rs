//! Event time. A `Timestamp` is nanoseconds since the Unix epoch in UTC: cheap to copy and compare
//! (the correlator orders millions of them), and written in the one textual form the wire contract
//! allows (RFC 3339, UTC, exactly nine fractional digits).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// The years [`Timestamp::MIN`] and [`Timestamp::MAX`] fall in.
const MIN_YEAR: i64 = 1677;
const MAX_YEAR: i64 = 2262;

/// An instant in UTC with nanosecond precision, kept as nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A timestamp broken into calendar fields, for formatting and for path templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Day of the year, 1-based (for `%j`).
    pub day_of_year: u32,
}

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(pub &'static str);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid RFC 3339 timestamp: {}", self.0)
    }
}

impl std::error::Error for TimestampError {}

/// Why an instant that is a valid date is still not a `Timestamp`: event time must never wrap
/// into a different time, so a reader turns this into a decode error for the event.
const OUT_OF_RANGE: TimestampError = TimestampError(
    "outside the representable range 1677-09-21T00:12:43.145224192Z to \
     2262-04-11T23:47:16.854775807Z",
);

impl Timestamp {
    /// The earliest instant nanoseconds in an `i64` hold: 1677-09-21T00:12:43.145224192Z.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest instant nanoseconds in an `i64` hold: 2262-04-11T23:47:16.854775807Z.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// Wall-clock now; sources stamp events they read without a timestamp with it.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_secs() as i64 * NANOS_PER_SEC + i64::from(since.subsec_nanos()))
    }

    /// Nanoseconds since the epoch, for arithmetic on event time.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch (ids embed them).
    pub fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The calendar fields of this instant in UTC.
    pub fn civil(self) -> CivilTime {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC) as u32;
        let days = secs.div_euclid(SECS_PER_DAY);
        let secs_of_day = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        let day_of_year = (days - days_from_civil(year, 1, 1)) as u32 + 1;
        CivilTime {
            year,
            month,
            day,
            hour: secs_of_day / 3600,
            minute: secs_of_day / 60 % 60,
            second: secs_of_day % 60,
            nanos,
            day_of_year,
        }
    }

    /// Builds a timestamp from calendar fields in UTC; fields out of their range, or an instant
    /// outside [`Timestamp::MIN`]..=[`Timestamp::MAX`], are an error rather than another time.
    pub fn from_civil(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        nanos: u32,
    ) -> Result<Self, TimestampError> {
        Self::from_nanos_wide(civil_nanos(year, month, day, hour, minute, second, nanos)?)
    }

    /// The instant `nanos` after the epoch, computed wider than an `i64` so that the range is
    /// checked once, on the result.
    fn from_nanos_wide(nanos: i128) -> Result<Self, TimestampError> {
        i64::try_from(nanos)
            .map(Timestamp)
            .map_err(|_| OUT_OF_RANGE)
    }

    /// Appends the wire form (`2026-11-27T16:21:11.123456789Z`) to `out` without allocating.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let c = self.civil();
        let mut buf = [0u8; 30];
        let year = c.year.clamp(0, 9999) as u32;
        write_digits(&mut buf[0..4], year);
        buf[4] = b'-';
        write_digits(&mut buf[5..7], c.month);
        buf[7] = b'-';
        write_digits(&mut buf[8..10], c.day);
        buf[10] = b'T';
        write_digits(&mut buf[11..13], c.hour);
        buf[13] = b':';
        write_digits(&mut buf[14..16], c.minute);
        buf[16] = b':';
        write_digits(&mut buf[17..19], c.second);
        buf[19] = b'.';
        write_digits(&mut buf[20..29], c.nanos);
        buf[29] = b'Z';
        out.extend_from_slice(&buf);
    }

    /// Parses any RFC 3339 date-time (`T`/`t`/space separator, `Z`/`z` or a numeric offset,
    /// 0–9 fractional digits; more are truncated).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError("too short"));
        }
        let year = parse_digits(&b[0..4]).ok_or(TimestampError("bad year"))?;
        expect(b, 4, b'-')?;
        let month = parse_digits(&b[5..7]).ok_or(TimestampError("bad month"))?;
        expect(b, 7, b'-')?;
        let day = parse_digits(&b[8..10]).ok_or(TimestampError("bad day"))?;
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimestampError("expected 'T' between date and time"));
        }
        let hour = parse_digits(&b[11..13]).ok_or(TimestampError("bad hour"))?;
        expect(b, 13, b':')?;
        let minute = parse_digits(&b[14..16]).ok_or(TimestampError("bad minute"))?;
        expect(b, 16, b':')?;
        let second = parse_digits(&b[17..19]).ok_or(TimestampError("bad second"))?;
        let mut pos = 19;
        let mut nanos = 0u32;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                if pos - start < 9 {
                    nanos = nanos * 10 + u32::from(b[pos] - b'0');
                }
                pos += 1;
            }
            let digits = pos - start;
            if digits == 0 {
                return Err(TimestampError("empty fraction"));
            }
            for _ in digits..9 {
                nanos *= 10;
            }
        }
        let offset_secs: i64 = match &b[pos..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = parse_digits(&[*h1, *h2]).ok_or(TimestampError("bad offset"))?;
                let m = parse_digits(&[*m1, *m2]).ok_or(TimestampError("bad offset"))?;
                if h > 23 || m > 59 {
                    return Err(TimestampError("offset out of range"));
                }
                let magnitude = i64::from(h * 3600 + m * 60);
                if *sign == b'-' { -magnitude } else { magnitude }
            }
            _ => return Err(TimestampError("expected 'Z' or an offset like +02:00")),
        };
        let local = civil_nanos(i64::from(year), month, day, hour, minute, second, nanos)?;
        Self::from_nanos_wide(local - i128::from(offset_secs) * i128::from(NANOS_PER_SEC))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(30);
        self.write_rfc3339(&mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(30);
        self.write_rfc3339(&mut buf);
        serializer.serialize_str(std::str::from_utf8(&buf).expect("timestamps are ASCII"))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 in UTC; written with exactly nine fractional digits, read in any RFC 3339 form."
        })
    }
}

fn expect(b: &[u8], pos: usize, byte: u8) -> Result<(), TimestampError> {
    if b[pos] == byte {
        Ok(())
    } else {
        Err(TimestampError("misplaced separator"))
    }
}

fn parse_digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

fn write_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Nanoseconds since the epoch of calendar fields in UTC, wide enough for any year that can
/// hold a representable instant. A second of 60 (a leap second) is folded onto the next second,
/// as most systems do.
fn civil_nanos(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
) -> Result<i128, TimestampError> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError("date out of range"));
    }
    if hour > 23 || minute > 59 || second > 60 || i64::from(nanos) >= NANOS_PER_SEC {
        return Err(TimestampError("time out of range"));
    }
    // Outside these years no instant is representable whatever the offset, and inside them
    // nothing below can overflow; the exact bound is checked on the final instant.
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(OUT_OF_RANGE);
    }
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second);
    Ok(i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years, March-based years).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_nine_fraction_digits() {
        let ts = Timestamp::parse_rfc3339("2026-11-27T16:21:11.123Z").unwrap();
        assert_eq!(ts.to_string(), "2026-11-27T16:21:11.123000000Z");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn reads_offsets_and_lowercase() {
        let utc = Timestamp::parse_rfc3339("2024-02-29T23:30:00Z").unwrap();
        let east = Timestamp::parse_rfc3339("2024-03-01t01:30:00+02:00").unwrap();
        let west = Timestamp::parse_rfc3339("2024-02-29 20:30:00.000000000-03:00").unwrap();
        assert_eq!(utc, east);
        assert_eq!(utc, west);
        assert_eq!(utc.to_string(), "2024-02-29T23:30:00.000000000Z");
    }

    #[test]
    fn truncates_extra_fraction_digits() {
        let ts = Timestamp::parse_rfc3339("2026-01-01T00:00:00.1234567891234Z").unwrap();
        assert_eq!(ts.civil().nanos, 123_456_789);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026/01/01T00:00:00Z",
            "yesterday",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn civil_round_trips_across_eras() {
        for days in [-100_000i64, -1, 0, 1, 11_016, 19_782, 20_000, 100_000] {
            let ts = Timestamp(days * SECS_PER_DAY * NANOS_PER_SEC + 3_723_000_000_123);
            let c = ts.civil();
            let back =
                Timestamp::from_civil(c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos);
            assert_eq!(back, Ok(ts), "day {days}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2024-12-31T00:00:00Z")
                .unwrap()
                .civil()
                .day_of_year,
            366
        );
    }

    #[test]
    fn pre_epoch_instants_keep_positive_fractions() {
        let ts = Timestamp::parse_rfc3339("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(ts.0, -500_000_000);
        assert_eq!(ts.to_string(), "1969-12-31T23:59:59.500000000Z");
    }

    #[test]
    fn the_representable_bounds_parse_exactly() {
        let max = "2262-04-11T23:47:16.854775807Z";
        let min = "1677-09-21T00:12:43.145224192Z";
        assert_eq!(Timestamp::parse_rfc3339(max), Ok(Timestamp::MAX));
        assert_eq!(Timestamp::parse_rfc3339(min), Ok(Timestamp::MIN));
        assert_eq!(Timestamp::MAX.to_string(), max);
        assert_eq!(Timestamp::MIN.to_string(), min);
        // The same instants written in a local time whose own fields lie beyond the bound.
        assert_eq!(
            Timestamp::parse_rfc3339("2262-04-12T00:47:16.854775807+01:00"),
            Ok(Timestamp::MAX)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("1677-09-20T23:12:43.145224192-01:00"),
            Ok(Timestamp::MIN)
        );
    }

    #[test]
    fn instants_beyond_the_bounds_are_errors_not_other_times() {
        for beyond in [
            "2262-04-11T23:47:16.854775808Z",
            "1677-09-21T00:12:43.145224191Z",
            "2262-04-11T23:47:16.854775807-00:01",
            "1677-09-21T00:12:43.145224192+00:01",
            "2300-01-01T00:00:00Z",
            "1500-01-01T00:00:00Z",
            "9999-12-31T23:59:60.999999999-23:59",
            "0000-01-01T00:00:00+23:59",
        ] {
            let error = Timestamp::parse_rfc3339(beyond).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("outside the representable range"),
                "{beyond}: {error}"
            );
        }
    }

    #[test]
    fn from_civil_rejects_what_it_cannot_represent() {
        assert_eq!(
            Timestamp::from_civil(2262, 4, 11, 23, 47, 16, 854_775_807),
            Ok(Timestamp::MAX)
        );
        for fields in [
            (2262, 4, 11, 23, 47, 16, 854_775_808),
            (i64::MAX, 1, 1, 0, 0, 0, 0),
            (i64::MIN, 1, 1, 0, 0, 0, 0),
            (2026, 0, 1, 0, 0, 0, 0),
            (2026, 1, 1, u32::MAX, 0, 0, 0),
            (2026, 1, 1, 0, 0, 0, 1_000_000_000),
        ] {
            let (year, month, day, hour, minute, second, nanos) = fields;
            assert!(
                Timestamp::from_civil(year, month, day, hour, minute, second, nanos).is_err(),
                "{fields:?} accepted"
            );
        }
    }
}
