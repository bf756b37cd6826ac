//! `converted` expectations: a window whose `x` values the endpoint converted
//! (`plotly-convertTimestamp`, docs/protocol.md §3.7) is read back into instants in its zone, so the
//! runner can check T0 + x without knowing exactly when the endpoint took T0.

use std::time::SystemTime;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Checks converted `x` texts: each is `YYYY-MM-DD HH:MM:SS.ffffff` in `zone`, and subtracting
/// its `x_millis` gives a T0 within `span` (give or take [`SLACK`]), the same T0 for every
/// value when `one_t0` (one connection, one head).
pub fn check_x(
    xs: &[serde_json::Value],
    zone: &str,
    x_millis: &[i64],
    span: (SystemTime, SystemTime),
    one_t0: bool,
) -> Result<(), String> {
    let tz = TimeZone::get(zone).map_err(|e| format!("zone {zone:?}: {e}"))?;
    if xs.len() != x_millis.len() {
        return Err(format!("{} x values, not {}", xs.len(), x_millis.len()));
    }
    let from = instant(span.0)? - SLACK;
    let to = instant(span.1)? + SLACK;
    let mut first_t0 = None;
    for (x, millis) in xs.iter().zip(x_millis) {
        let text = x
            .as_str()
            .ok_or_else(|| format!("x {x} was not converted to a date string"))?;
        let at = wall_clock(text, &tz)?;
        let t0 = at - SignedDuration::from_millis(*millis);
        if t0 < from || t0 > to {
            return Err(format!(
                "x {text:?} is T0 + {millis} ms in {zone} for T0 = {t0}, not within the run ({from} .. {to})"
            ));
        }
        match first_t0 {
            Some(first) if one_t0 && first != t0 => {
                return Err(format!(
                    "x {text:?} gives T0 = {t0}, the values before it {first}: one request, one T0"
                ))
            }
            Some(_) => {}
            None => first_t0 = Some(t0),
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, exactly, read as a wall-clock time in `tz`.
fn wall_clock(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let shape = b"dddd-dd-dd dd:dd:dd.dddddd";
    let shaped = text.len() == shape.len()
        && text.bytes().zip(shape).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == *other,
        });
    if !shaped {
        return Err(format!("x {text:?} is not YYYY-MM-DD HH:MM:SS.ffffff"));
    }
    let dt =
        DateTime::strptime("%Y-%m-%d %H:%M:%S%.f", text).map_err(|e| format!("x {text:?}: {e}"))?;
    dt.to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| format!("x {text:?}: {e}"))
}

fn instant(t: SystemTime) -> Result<Timestamp, String> {
    Timestamp::try_from(t).map_err(|e| format!("the clock: {e}"))
}

/// How far outside the run a T0 may be: the endpoint's clock against ours, and rounding.
const SLACK: SignedDuration = SignedDuration::from_secs(2);

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn converted_values_are_read_back_in_their_zone() {
        // 2026-01-15 15:00:00 UTC is 10:00:00 in Montreal (UTC-5 in winter).
        let t0 = 1_768_489_200;
        let xs = [
            json!("2026-01-15 10:00:01.500000"),
            json!("2026-01-15 10:00:03.500000"),
        ];
        let span = (at(t0 - 1), at(t0 + 1));
        assert_eq!(
            check_x(&xs, "America/Montreal", &[1500, 3500], span, true),
            Ok(())
        );
        // The wrong zone, a T0 per value, a shape the protocol does not send.
        assert!(check_x(&xs, "Australia/Melbourne", &[1500, 3500], span, true).is_err());
        assert!(check_x(&xs, "America/Montreal", &[1500, 1500], span, true).is_err());
        assert_eq!(
            check_x(&xs, "America/Montreal", &[1500, 1500], span, false),
            Ok(())
        );
        let bad = [json!("2026-01-15T10:00:01.500000")];
        assert!(check_x(&bad, "America/Montreal", &[1500], span, true).is_err());
        // Outside the run.
        let later = (at(t0 + 60), at(t0 + 61));
        assert!(check_x(&xs, "America/Montreal", &[1500, 3500], later, true).is_err());
    }
}
