//! ICE fragments for WHIP/WHEP `PATCH` (RFC 9725 §4.3, RFC 8840
//! `application/trickle-ice-sdpfrag`): reading a client's, writing the
//! server's, and the entity tag of a session's ICE credentials with the
//! `If-Match` rules. No I/O: the handler (`whip`) applies what this decides.

use axum::http::{header, HeaderMap};

/// The media type of a `PATCH` body and of a restart's answer.
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The largest fragment taken: credentials and a few dozen candidates fit.
pub const MAX_FRAGMENT: usize = 8 * 1024;

/// The ICE side of a WHIP/WHEP session: what a `PATCH` is checked against and
/// what a restart's answer repeats from the session's SDP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceSession {
    /// The server's ufrag; the session's entity tag is made from it.
    pub local_ufrag: String,
    /// The client's ufrag: a fragment with another one restarts ICE.
    pub remote_ufrag: String,
    /// Lines of the answer a restart's answer repeats: `a=ice-lite`, the
    /// first media section's `m=` and `a=mid`, its candidates and
    /// `a=end-of-candidates` (every section shares them: BUNDLE).
    lite: bool,
    media: Vec<String>,
}

impl IceSession {
    /// From a session's offer and answer and the server's ufrag; `None` when
    /// the offer names no ufrag (str0m refuses such an offer anyway).
    pub fn new(offer: &str, answer: &str, local_ufrag: &str) -> Option<IceSession> {
        let remote_ufrag = offer
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))?
            .to_string();
        let lite = answer.lines().any(|l| l.trim_end() == "a=ice-lite");
        let mut media = Vec::new();
        for line in answer.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                if !media.is_empty() {
                    break;
                }
                media.push(line.to_string());
            } else if !media.is_empty()
                && (line.starts_with("a=mid:")
                    || line.starts_with("a=candidate:")
                    || line == "a=end-of-candidates")
            {
                media.push(line.to_string());
            }
        }
        Some(IceSession {
            local_ufrag: local_ufrag.to_string(),
            remote_ufrag,
            lite,
            media,
        })
    }

    /// The session's entity tag (RFC 9110 §8.8.3), quoted: its server ufrag,
    /// which the client already has from the answer.
    pub fn etag(&self) -> String {
        etag(&self.local_ufrag)
    }

    /// The answer to a restart: the server's new credentials (`local_ufrag`
    /// already updated) and the candidates of the original answer.
    pub fn restart_answer(&self, pwd: &str) -> String {
        let mut out = String::new();
        if self.lite {
            out.push_str("a=ice-lite\r\n");
        }
        out.push_str(&format!("a=ice-ufrag:{}\r\n", self.local_ufrag));
        out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        for line in &self.media {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out
    }
}

/// The entity tag of ICE credentials whose server ufrag is `ufrag`.
pub fn etag(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// What a client's fragment says that the server acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `a=ice-ufrag`, if any.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if any.
    pub pwd: Option<String>,
    /// `a=candidate` lines (an ICE-lite server needs none).
    pub candidates: usize,
}

impl Fragment {
    /// Read a `PATCH` body; the error is the one-line reason for a 400.
    pub fn parse(body: &[u8]) -> Result<Fragment, String> {
        let text = std::str::from_utf8(body).map_err(|_| "ICE fragment is not UTF-8")?;
        let mut f = Fragment::default();
        for (n, line) in text.lines().map(str::trim_end).enumerate() {
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
                return Err(format!(
                    "line {} of the ICE fragment is not an SDP line",
                    n + 1
                ));
            }
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                set_once(&mut f.ufrag, v, 4, "ice-ufrag")?;
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                set_once(&mut f.pwd, v, 22, "ice-pwd")?;
            } else if let Some(v) = line.strip_prefix("a=candidate:") {
                let fields: Vec<&str> = v.split_ascii_whitespace().collect();
                if fields.len() < 8 || fields[6] != "typ" {
                    return Err(format!("line {} is not an ICE candidate", n + 1));
                }
                f.candidates += 1;
            }
        }
        if f.pwd.is_some() && f.ufrag.is_none() {
            return Err("a=ice-pwd without a=ice-ufrag".into());
        }
        Ok(f)
    }
}

/// Keep the value of an ICE credential line: 1-256 ICE characters (RFC 8839
/// §5.4), at least `min`; repeated lines (one per media section) must agree.
fn set_once(slot: &mut Option<String>, v: &str, min: usize, name: &str) -> Result<(), String> {
    let ice_char = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    if v.len() < min || v.len() > 256 || !v.chars().all(ice_char) {
        return Err(format!(
            "a={name} must be {min}-256 characters of A-Z a-z 0-9 + /"
        ));
    }
    match slot {
        Some(old) if old != v => Err(format!("the fragment has two different a={name}")),
        _ => {
            *slot = Some(v.to_string());
            Ok(())
        }
    }
}

/// A request's `If-Match` (RFC 9110 §13.1.1).
#[derive(Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header.
    Absent,
    /// `If-Match: *`: any current ICE session.
    Any,
    /// A list of entity tags.
    Tags(Vec<String>),
}

impl IfMatch {
    /// The `If-Match` of `headers` (every such header, comma lists included).
    pub fn of(headers: &HeaderMap) -> IfMatch {
        let mut tags = Vec::new();
        let mut any = false;
        for v in headers.get_all(header::IF_MATCH) {
            for tag in v.to_str().unwrap_or("").split(',').map(str::trim) {
                match tag {
                    "" => {}
                    "*" => any = true,
                    t => tags.push(t.to_string()),
                }
            }
        }
        match (any, tags.is_empty()) {
            (true, _) => IfMatch::Any,
            (false, false) => IfMatch::Tags(tags),
            (false, true) if headers.contains_key(header::IF_MATCH) => IfMatch::Tags(tags),
            (false, true) => IfMatch::Absent,
        }
    }

    /// Whether the condition holds for a session whose entity tag is `etag`;
    /// strong comparison, so a weak tag (`W/"..."`) never matches.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Absent | IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_gives_its_credentials_and_counts_its_candidates() {
        let f = Fragment::parse(
            b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:EsAw\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates, 1);
        assert_eq!(Fragment::parse(b"").unwrap(), Fragment::default());
    }

    #[test]
    fn malformed_fragments_say_what_is_wrong() {
        for (body, says) in [
            (&b"\xff\xfe"[..], "UTF-8"),
            (b"hello", "not an SDP line"),
            (b"a=ice-ufrag:ab", "ice-ufrag must be"),
            (b"a=ice-ufrag:abcd\na=ice-pwd:short", "ice-pwd must be"),
            (b"a=ice-ufrag:ab d", "ice-ufrag must be"),
            (b"a=ice-ufrag:abcd\na=ice-ufrag:abce", "two different"),
            (b"a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1", "without a=ice-ufrag"),
            (
                b"a=candidate:1 1 udp 1 10.0.0.1 5000 host",
                "not an ICE candidate",
            ),
        ] {
            let e = Fragment::parse(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn if_match_takes_star_lists_and_strong_tags_only() {
        let with = |vals: &[&str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(header::IF_MATCH, v.parse().unwrap());
            }
            IfMatch::of(&h)
        };
        assert_eq!(with(&[]), IfMatch::Absent);
        assert_eq!(with(&["*"]), IfMatch::Any);
        assert!(with(&["\"a\", \"b\""]).matches("\"b\""));
        assert!(with(&["\"x\"", "\"b\""]).matches("\"b\""));
        assert!(!with(&["W/\"b\""]).matches("\"b\""));
        assert!(!with(&["\"c\""]).matches("\"b\""));
        assert!(!with(&[""]).matches("\"b\""));
    }

    #[test]
    fn a_restart_answer_repeats_the_lite_flag_and_the_candidates() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:cli1\r\n";
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:srv1\r\na=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n";
        let mut ice = IceSession::new(offer, answer, "srv1").unwrap();
        assert_eq!(ice.remote_ufrag, "cli1");
        assert_eq!(ice.etag(), "\"srv1\"");
        ice.local_ufrag = "srv2".into();
        assert_eq!(
            ice.restart_answer("newpasswordnewpassword"),
            "a=ice-lite\r\na=ice-ufrag:srv2\r\na=ice-pwd:newpasswordnewpassword\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
        );
        assert!(IceSession::new("v=0\r\n", answer, "srv1").is_none());
    }
}
