//! Command-line quantities: bit rates (`1M`, `500k`), durations (`20s`,
//! `500ms`, `2m`) and URL templates (`{base}/whep/{stream}`).

use std::fmt;
use std::time::Duration;

/// A quantity that could not be read, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuantity(pub String);

impl fmt::Display for BadQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadQuantity {}

/// Splits `"1.5M"` into `(1.5, "M")`.
fn number_and_suffix(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let value: f64 = s[..end].parse().ok()?;
    value.is_finite().then_some((value, s[end..].trim()))
}

/// Bits per second from `2500000`, `500k`, `1M`, `1.5M`, `2G` (decimal
/// prefixes, case-insensitive, an optional `bps`/`bit/s` unit after them).
pub fn parse_bitrate(s: &str) -> Result<u64, BadQuantity> {
    let bad = || {
        BadQuantity(format!(
            "bad bit rate {s:?}: use e.g. 1M, 500k, 2.5M or 2000000"
        ))
    };
    let (value, suffix) = number_and_suffix(s).ok_or_else(bad)?;
    let lower = suffix.to_ascii_lowercase();
    let unit = lower
        .strip_suffix("bit/s")
        .or_else(|| lower.strip_suffix("bps"))
        .unwrap_or(&lower);
    let scale = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        _ => return Err(bad()),
    };
    let bits = (value * scale).round();
    if !(1.0..=1e12).contains(&bits) {
        return Err(BadQuantity(format!(
            "bit rate {s:?} is outside 1 bit/s..1 Tbit/s"
        )));
    }
    Ok(bits as u64)
}

/// A duration from `20s`, `1.5s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, BadQuantity> {
    let bad = || BadQuantity(format!("bad duration {s:?}: use e.g. 20s, 500ms or 2m"));
    let (value, suffix) = number_and_suffix(s).ok_or_else(bad)?;
    let seconds = match suffix {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Replaces `{base}` and `{stream}` in a URL template. A trailing `/` of
/// `base` is dropped so `{base}/whep/...` never doubles it.
pub fn expand_template(template: &str, base: &str, stream: &str) -> String {
    template
        .replace("{base}", base.trim_end_matches('/'))
        .replace("{stream}", stream)
}

/// Host and port of an `http://` or `https://` URL (port defaulted by scheme).
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_take_decimal_prefixes() {
        assert_eq!(parse_bitrate("1M"), Ok(1_000_000));
        assert_eq!(parse_bitrate("1.5m"), Ok(1_500_000));
        assert_eq!(parse_bitrate("500k"), Ok(500_000));
        assert_eq!(parse_bitrate("2000000"), Ok(2_000_000));
        assert_eq!(parse_bitrate("3Mbps"), Ok(3_000_000));
        assert_eq!(parse_bitrate("2G"), Ok(2_000_000_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("1X").is_err());
        assert!(parse_bitrate("0").is_err());
        assert!(parse_bitrate("").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn templates_fill_base_and_stream() {
        assert_eq!(
            expand_template("{base}/whep/{stream}", "https://h:8443/", "cam"),
            "https://h:8443/whep/cam"
        );
        assert_eq!(
            expand_template(
                "{base}/rtc/v1/whip/?app=live&stream={stream}",
                "http://h",
                "s"
            ),
            "http://h/rtc/v1/whip/?app=live&stream=s"
        );
    }

    #[test]
    fn host_and_port_come_from_the_url() {
        assert_eq!(
            url_host_port("https://127.0.0.1:8443/whep/s"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(
            url_host_port("http://example.org/x"),
            Some(("example.org".into(), 80))
        );
        assert_eq!(url_host_port("https://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(url_host_port("https://[::1]/"), Some(("::1".into(), 443)));
        assert_eq!(url_host_port("ftp://h/"), None);
        assert_eq!(url_host_port("https:///x"), None);
    }
}
