//! A direct reader for the four attribute lines that make up most of a media
//! section: `a=rtcp-fb`, `a=rtpmap`, `a=fmtp` with `key=value` parameters and
//! `a=extmap` (121 of the 157 lines of an audio + video offer).
//!
//! The combine grammar in `parser.rs` tries its alternatives one after the
//! other, and each costs about as much as a parsed line; this reader goes
//! straight to the value. It reads a line only where it knows what the grammar
//! makes of it, and gives back the same `MediaAttribute` and the same length.
//! Anything else (another attribute, an unusual shape, a value the grammar
//! would refuse) returns `None`, and the grammar reads the line as before.
//!
//! Delimiters are ASCII, and no byte of a multi-byte UTF-8 character is ASCII,
//! so splitting bytes on them splits the same characters the grammar does.

use crate::rtp_::{Extension, Frequency, Pt};

use super::data::{FormatParam, MediaAttribute, RtpMap};

/// Reads one attribute line at the start of `rest`. Returns the attribute and
/// the bytes it spans, line end included, or `None` for the grammar to read.
pub(super) fn media_attribute(rest: &str) -> Option<(MediaAttribute, usize)> {
    let (line, len) = line(rest)?;
    let body = line.strip_prefix("a=")?;
    let attr = if let Some(v) = body.strip_prefix("rtcp-fb:") {
        rtcp_fb(v)?
    } else if let Some(v) = body.strip_prefix("rtpmap:") {
        rtpmap(v)?
    } else if let Some(v) = body.strip_prefix("fmtp:") {
        fmtp(v)?
    } else if let Some(v) = body.strip_prefix("extmap:") {
        extmap(v)?
    } else {
        return None;
    };
    Some((attr, len))
}

/// The name of the attribute line at the start of `rest`: what follows `a=`
/// up to the first `:` or line end. `None` when it is not an `a=` line.
pub(super) fn attribute_name(rest: &str) -> Option<&str> {
    let body = rest.strip_prefix("a=")?;
    let end = body.find([':', '\r', '\n']).unwrap_or(body.len());
    Some(&body[..end])
}

/// The line at the start of `rest` without its end, and its length with it.
/// A line ends in `\r\n`, `\n` or the end of the input; a `\r` on its own
/// ends no line, so the grammar fails there and so does this.
fn line(rest: &str) -> Option<(&str, usize)> {
    let b = rest.as_bytes();
    match b.iter().position(|&c| c == b'\r' || c == b'\n') {
        None => Some((rest, rest.len())),
        Some(i) if b[i] == b'\n' => Some((&rest[..i], i + 1)),
        Some(i) if b.get(i + 1) == Some(&b'\n') => Some((&rest[..i], i + 2)),
        Some(_) => None,
    }
}

/// `<pt> ` as the grammar's `pt()` then `token(' ')` read it: everything up
/// to the first space, a `u8` of at most 127.
fn pt_space(v: &str) -> Option<(Pt, &str)> {
    let (pt, rest) = v.split_once(' ')?;
    let pt: u8 = non_empty(pt)?.parse().ok()?;
    (pt <= 127).then_some((Pt::from(pt), rest))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `a=rtcp-fb:<pt> <value>`
fn rtcp_fb(v: &str) -> Option<MediaAttribute> {
    let (pt, value) = pt_space(v)?;
    Some(MediaAttribute::RtcpFb {
        pt,
        value: non_empty(value)?.to_string(),
    })
}

/// `a=rtpmap:<pt> <codec>/<clock rate>[/<channels>]`
fn rtpmap(v: &str) -> Option<MediaAttribute> {
    let (pt, v) = pt_space(v)?;
    let (codec, v) = v.split_once('/')?;
    let (clock, channels) = match v.split_once('/') {
        Some((clock, channels)) => (clock, Some(non_empty(channels)?.parse::<u8>().ok()?)),
        None => (v, None),
    };
    let clock_rate: Frequency = non_empty(clock)?.parse().ok()?;
    Some(MediaAttribute::RtpMap {
        pt,
        value: RtpMap {
            codec: non_empty(codec)?.into(),
            clock_rate,
            channels,
        },
    })
}

/// `a=fmtp:<pt> <key>=<value>[;<key>=<value>]…[;]`, with spaces and tabs
/// around the separators: the grammar's first `fmtp` alternative. Its other
/// alternatives (`111/111`, `0-15`, anything else) are left to it.
fn fmtp(v: &str) -> Option<MediaAttribute> {
    let (pt, v) = pt_space(v)?;
    let b = v.as_bytes();
    let (first, mut at) = key_val(v, 0)?;
    let mut pairs = vec![first];
    loop {
        // The separator is `[ \t]*;`; without it the list ends where it was.
        let sep = skip_blank(b, at);
        if b.get(sep) != Some(&b';') {
            break;
        }
        // After a separator, a missing pair ends the list past the separator.
        at = sep + 1;
        match key_val(v, at) {
            Some((pair, next)) => {
                pairs.push(pair);
                at = next;
            }
            None => break,
        }
    }
    (skip_blank(b, at) == b.len()).then(|| MediaAttribute::Fmtp {
        pt,
        values: FormatParam::parse_pairs(pairs),
    })
}

/// `[ \t]*<key>=<value>` from `at`, as the grammar's `key_val`: the key stops
/// at `=` or a blank, the value at `;` or a blank, neither may be empty.
fn key_val(v: &str, at: usize) -> Option<((String, String), usize)> {
    let b = v.as_bytes();
    let k0 = skip_blank(b, at);
    let k1 = run(b, k0, |c| c != b'=' && !blank(c));
    if k1 == k0 || b.get(k1) != Some(&b'=') {
        return None;
    }
    let v0 = k1 + 1;
    let v1 = run(b, v0, |c| c != b';' && !blank(c));
    if v1 == v0 {
        return None;
    }
    Some(((v[k0..k1].to_string(), v[v0..v1].to_string()), v1))
}

fn blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn skip_blank(b: &[u8], at: usize) -> usize {
    run(b, at, blank)
}

/// Where the run of bytes from `at` that `keep` keeps ends.
fn run(b: &[u8], at: usize, keep: impl Fn(u8) -> bool) -> usize {
    at + b[at..].iter().take_while(|&&c| keep(c)).count()
}

/// `a=extmap:<id>[/<direction>] <uri>[ <attributes>]`
fn extmap(v: &str) -> Option<MediaAttribute> {
    let end = v.find(['/', ' '])?;
    let id: u8 = non_empty(&v[..end])?.parse().ok()?;
    let mut v = &v[end..];
    if let Some(after) = v.strip_prefix('/') {
        // The direction is read and dropped, as the grammar does.
        let dir_end = after.find(' ').unwrap_or(after.len());
        non_empty(&after[..dir_end])?;
        v = &after[dir_end..];
    }
    let v = v.strip_prefix(' ')?;
    let (uri, attributes) = match v.split_once(' ') {
        Some((uri, attributes)) => (uri, Some(attributes)),
        None => (v, None),
    };
    if let Some(attributes) = attributes {
        non_empty(attributes)?;
    }
    Some(MediaAttribute::ExtMap {
        id,
        ext: Extension::from_sdp_uri(non_empty(uri)?),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n";

    /// Lines of every attribute the grammar knows, and of some it does not.
    const SEEDS: &[&str] = &[
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 transport-cc",
        "a=rtpmap:98 opus/48000/2",
        "a=rtpmap:98 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=fmtp:96 minptime=10; useinbandfec=1;",
        "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=fmtp:97 0-15",
        "a=fmtp:97 96/96",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:2/recvonly http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time x",
        "a=ssrc:1 cname:x",
        "a=ssrc-group:FID 1 2",
        "a=candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuv",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 AB:CD:EF",
        "a=setup:actpass",
        "a=sendonly",
        "a=recvonly",
        "a=msid:- t",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=rtcp-mux-only",
        "a=rtcp-rsize",
        "a=rid:h send pt=96;max-width=1280",
        "a=simulcast:send h;~l",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "a=extmap-allow-mixed",
        "a=x-google-flag:conference",
    ];

    /// Mutated copies of the seeds inside a media section, one to three
    /// insertions, deletions or replacements each, from the characters the
    /// grammar splits on: the whole parse is the same with and without the
    /// direct reader, and most of them still parse.
    #[test]
    fn agrees_with_the_grammar_on_mutated_lines() {
        let agrees = |sdp: &str| {
            if let Err(e) = crate::sdp::direct_reader_agrees(sdp) {
                panic!("{sdp:?}\n{e}");
            }
        };
        // A media section has exactly one direction line.
        let tail = |seed: &str| match seed {
            "a=sendonly" | "a=recvonly" => "a=rtcp-mux\r\n",
            _ => "a=sendrecv\r\n",
        };
        for seed in SEEDS {
            let sdp = format!("{HEAD}{seed}\r\n{}", tail(seed));
            if let Err(e) = crate::sdp::Sdp::parse(&sdp) {
                panic!("{seed}: {e}");
            }
            agrees(&sdp);
        }
        let alphabet: Vec<char> = " \t/;=:\r\n019a-+~é".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut parsed, rounds) = (0, 60_000);
        for _ in 0..rounds {
            let seed = SEEDS[next(SEEDS.len())];
            let mut line: Vec<char> = seed.chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(line.len() + 1);
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => line.insert(at, c),
                    1 if at < line.len() => drop(line.remove(at)),
                    _ if at < line.len() => line[at] = c,
                    _ => line.push(c),
                }
            }
            let line: String = line.into_iter().collect();
            let sdp = format!("{HEAD}{line}\r\n{}", tail(seed));
            agrees(&sdp);
            parsed += crate::sdp::Sdp::parse(&sdp).is_ok() as usize;
        }
        assert!(parsed > rounds / 2, "only {parsed} of {rounds} parse");
    }

    #[test]
    fn lines_it_reads() {
        for line in [
            "a=rtcp-fb:96 nack pli\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=rtpmap:96 VP8/90000\n",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=fmtp:96 a=1 ; b=2 ;\t\r\n",
            "a=extmap:3/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        ] {
            let (_, len) = media_attribute(line).expect(line);
            assert_eq!(len, line.len(), "{line:?}");
        }
    }

    #[test]
    fn lines_it_leaves_to_the_grammar() {
        for line in [
            "a=rtcp-fb:200 nack\r\n",
            "a=rtcp-fb:96\r\n",
            "a=rtcp-fb:96 \r\n",
            "a=rtpmap:111 opus/48000/\r\n",
            "a=rtpmap:111 opus/0\r\n",
            "a=fmtp:101 0-15\r\n",
            "a=fmtp:63 111/111\r\n",
            "a=fmtp:96 a=1;b\r\n",
            "a=extmap:1/ urn:x\r\n",
            "a=extmap:1 urn:x \r\n",
            "a=rtcp-fb:96 nack\rx\n",
            "a=mid:0\r\n",
        ] {
            assert!(media_attribute(line).is_none(), "{line:?}");
        }
    }
}
