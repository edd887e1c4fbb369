//! Cron schedules: parsing an expression in a time zone and computing its times. Pure and
//! deterministic (the same expression, zone and instant give the same answer everywhere), but not
//! cheap enough for apply: the leader computes due times with it and carries them in commands
//! (`Command::FireCron`); apply only compares them with what already fired. The API validates an
//! expression with it before anything reaches the log.
//!
//! Expressions: 5-field cron (`min hour dom month dow`, names and ranges, `*/n` steps), an
//! optional leading seconds field (6 fields), the macros `@yearly`/`@annually`, `@monthly`,
//! `@weekly`, `@daily`/`@midnight`, `@hourly`, all parsed by `croner` (a maintained
//! POSIX/Vixie-compatible parser, chosen over `cron` for its optional seconds field and its DST
//! handling); and `@every DUR` (`humantime`: `1s`, `90s`, `5m`), times at a fixed interval from
//! the cron's creation. Zones are IANA names from `chrono-tz` (default `UTC`); across a DST change
//! a local time that does not exist is skipped to the next one that does, and one that occurs
//! twice fires once.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::model::Millis;

/// Smallest `@every` interval.
pub const MIN_EVERY_MS: u64 = 1000;

/// A parsed schedule in its zone.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// `@every DUR`: `anchor + k * every` for k ≥ 1.
    Every {
        every_ms: u64,
        anchor: Millis,
    },
    Cron {
        cron: Box<croner::Cron>,
        tz: Tz,
    },
}

impl Schedule {
    /// Parses `expr` in zone `tz` (empty: UTC); `anchor` is where `@every` counts from (the
    /// cron's creation time). The error is one line naming what is wrong.
    pub fn parse(expr: &str, tz: &str, anchor: Millis) -> Result<Schedule, String> {
        let expr = expr.trim();
        let zone = if tz.is_empty() {
            Tz::UTC
        } else {
            Tz::from_str(tz).map_err(|_| {
                format!("unknown time zone {tz:?} (an IANA name such as Europe/Berlin)")
            })?
        };
        if let Some(d) = expr.strip_prefix("@every") {
            let d = humantime::parse_duration(d.trim())
                .map_err(|e| format!("bad @every duration {:?}: {e}", d.trim()))?;
            let every_ms = d.as_millis() as u64;
            if every_ms < MIN_EVERY_MS {
                return Err(format!("@every {} is shorter than 1s", d.as_millis()));
            }
            return Ok(Schedule::Every { every_ms, anchor });
        }
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("bad schedule {expr:?}: {e}"))?;
        Ok(Schedule::Cron { cron: Box::new(cron), tz: zone })
    }

    /// The first time strictly after `t`, if there is one.
    pub fn after(&self, t: Millis) -> Option<Millis> {
        match self {
            Schedule::Every { every_ms, anchor } => {
                if t < *anchor {
                    return anchor.checked_add(*every_ms);
                }
                let k = (t - anchor) / every_ms + 1;
                anchor.checked_add(k.checked_mul(*every_ms)?)
            }
            Schedule::Cron { cron, tz } => {
                let at: DateTime<Utc> = Utc.timestamp_millis_opt(t as i64).single()?;
                let local = at.with_timezone(tz);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// Up to `n` times strictly after `t`, in order.
    pub fn times_after(&self, mut t: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.after(t) {
                Some(next) if next > t => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The scheduled times in `(after, upto]`, at most `n` of them, in order.
    pub fn due(&self, after: Millis, upto: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < n {
            match self.after(t) {
                Some(next) if next > t && next <= upto => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of an RFC 3339 instant.
    fn ms(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn utc(t: Millis) -> String {
        Utc.timestamp_millis_opt(t as i64).unwrap().to_rfc3339()
    }

    fn times(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, tz, ms(from)).unwrap();
        s.times_after(ms(from), n).into_iter().map(utc).collect()
    }

    #[test]
    fn a_daily_time_in_berlin_moves_by_an_hour_in_utc_across_the_spring_change() {
        // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST.
        assert_eq!(
            times("30 9 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            ["2026-03-28T08:30:00+00:00", "2026-03-29T07:30:00+00:00", "2026-03-30T07:30:00+00:00"]
        );
    }

    #[test]
    fn a_local_time_skipped_by_the_spring_change_fires_once_after_it() {
        // 02:30 does not exist in Berlin on 2026-03-29: it fires at the first time after (03:00
        // CEST = 01:00 UTC), once, and at 02:30 CET/CEST on the days around it.
        let got = times("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3);
        assert_eq!(got[0], "2026-03-28T01:30:00+00:00");
        assert_eq!(got[2], "2026-03-30T00:30:00+00:00");
        assert!(got[1].starts_with("2026-03-29T01:"), "{got:?}");
    }

    #[test]
    fn a_local_time_repeated_by_the_autumn_change_fires_once() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice.
        let got = times("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("2026-10-25T0"), "{got:?}");
        assert_eq!(got[1], "2026-10-26T01:30:00+00:00", "{got:?}");
    }

    #[test]
    fn hourly_on_the_day_of_the_change_has_23_firings() {
        let s = Schedule::parse("@hourly", "Europe/Berlin", 0).unwrap();
        let day = s.due(ms("2026-03-28T23:00:00Z"), ms("2026-03-29T22:00:00Z"), 100);
        // Local midnight to midnight of 2026-03-29 is 23 hours long.
        assert_eq!(day.len(), 23, "{:?}", day.into_iter().map(utc).collect::<Vec<_>>());
    }

    #[test]
    fn names_ranges_steps_seconds_and_every() {
        assert_eq!(
            times("0 9-17/4 * * MON-FRI", "UTC", "2026-12-04T10:00:00Z", 3),
            ["2026-12-04T13:00:00+00:00", "2026-12-04T17:00:00+00:00", "2026-12-07T09:00:00+00:00"]
        );
        assert_eq!(
            times("*/20 * * * * *", "", "2026-12-04T10:00:00Z", 2),
            ["2026-12-04T10:00:20+00:00", "2026-12-04T10:00:40+00:00"]
        );
        assert_eq!(
            times("@every 90s", "", "2026-12-04T10:00:00Z", 2),
            ["2026-12-04T10:01:30+00:00", "2026-12-04T10:03:00+00:00"]
        );
        assert_eq!(times("@daily", "", "2026-12-04T10:00:00Z", 1), ["2026-12-05T00:00:00+00:00"]);
    }

    #[test]
    fn bad_expressions_and_zones_are_one_clear_line() {
        let e = Schedule::parse("61 * * * *", "", 0).unwrap_err();
        assert!(e.contains("bad schedule"), "{e}");
        let e = Schedule::parse("* * * * *", "Mars/Olympus", 0).unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
        let e = Schedule::parse("@every 10ms", "", 0).unwrap_err();
        assert!(e.contains("shorter than 1s"), "{e}");
    }

    #[test]
    fn due_times_are_the_schedule_between_two_instants() {
        let s = Schedule::parse("@every 1s", "", 1_000).unwrap();
        assert_eq!(s.due(1_000, 4_500, 10), [2_000, 3_000, 4_000]);
        assert_eq!(s.due(1_000, 4_500, 2), [2_000, 3_000]);
        assert_eq!(s.due(4_000, 4_500, 10), Vec::<Millis>::new());
    }
}
