//! Timestamps as SQLite applications store them (ISO 8601 text, or Unix epoch seconds)
//! to PostgreSQL's timestamptz: microseconds since 2000-01-01 00:00:00 UTC.

/// Seconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_UNIX: i64 = 946_684_800;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn from_unix_seconds(seconds: f64) -> Option<i64> {
    seconds.is_finite().then(|| ((seconds - PG_EPOCH_UNIX as f64) * 1e6).round() as i64)
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (or `T`), then optionally `Z` or
/// `±HH[:MM]`; without a zone the time is UTC, as SQLite's date functions assume.
pub fn parse_iso(text: &str) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten() };
    let (date, rest) = t.split_at(t.find(['T', ' ']).unwrap_or(t.len()));
    let mut parts = date.split('-');
    let (y, m, d) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let rest = rest.trim_start_matches(['T', ' ']);
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut micros = 0i64;
    if !clock.is_empty() {
        let mut c = clock.split(':');
        let (h, min) = (num(c.next()?)?, num(c.next()?)?);
        let sec = c.next().unwrap_or("0");
        let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
        let frac_micros = if frac.is_empty() { 0 } else { num(&format!("{frac:0<6}")[..6])? };
        if c.next().is_some() || h > 23 || min > 59 || num(whole)? > 60 {
            return None;
        }
        micros = ((h * 60 + min) * 60 + num(whole)?) * 1_000_000 + frac_micros;
    }
    let offset_minutes = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let z = &z[1..];
            let (h, m) = z.split_once(':').map_or((&z[..z.len().min(2)], z.get(2..).unwrap_or("")), |(h, m)| (h, m));
            sign * (num(h)? * 60 + if m.is_empty() { 0 } else { num(m)? })
        }
    };
    let unix_seconds = days_from_civil(y, m, d) * 86_400 - offset_minutes * 60;
    Some((unix_seconds - PG_EPOCH_UNIX) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_texts_and_epochs_agree() {
        assert_eq!(parse_iso("2000-01-01"), Some(0));
        assert_eq!(parse_iso("2000-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_iso("2024-02-29T12:34:56Z"), from_unix_seconds(1_709_210_096.0));
        assert_eq!(parse_iso("2024-02-29T14:34:56+02:00"), parse_iso("2024-02-29 12:34:56"));
        assert_eq!(parse_iso("1969-12-31 23:59:59-0100"), from_unix_seconds(3599.0));
        for bad in ["", "yesterday", "2024-13-01", "2024-01-01 25:00", "2024-01-01x"] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
