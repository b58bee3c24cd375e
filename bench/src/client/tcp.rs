//! ICE over TCP for client sessions: an active TCP candidate (RFC 6544)
//! toward the server's passive one, every STUN, DTLS and SRTP message framed
//! with a two-byte length (RFC 4571). Used where UDP is blocked, and by
//! `sluice-bench fanout --transport tcp`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Input, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::role::{close, count_header, drain, next_wake, time_out, Role};
use super::{ClientError, SessionOptions};

/// Receive buffer of the connection.
const RECV_BUFFER: u32 = 256 << 10;
/// The largest frame a client takes: any datagram a server sends.
const MAX_FRAME: usize = 4096;

/// The server's passive TCP candidates in an SDP answer, in order, those of
/// the family of `opts.local_ip` (IPv4 when unset) first.
pub(super) fn passive_candidates(answer: &str, opts: &SessionOptions) -> Vec<SocketAddr> {
    let v4 = opts.local_ip.is_none_or(|ip| ip.is_ipv4());
    let mut found: Vec<SocketAddr> = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            // foundation component transport priority address port typ host [tcptype passive]
            let f: Vec<&str> = c.split_whitespace().collect();
            let tcp = f.get(2)?.eq_ignore_ascii_case("tcp");
            let passive = f.windows(2).any(|w| w[0] == "tcptype" && w[1] == "passive");
            if !(tcp && passive) {
                return None;
            }
            Some(SocketAddr::new(
                f.get(4)?.parse().ok()?,
                f.get(5)?.parse().ok()?,
            ))
        })
        .collect();
    found.sort_by_key(|a| a.is_ipv4() != v4);
    found
}

/// Connect to the first of `servers` that answers, from `opts.local_ip`
/// when set, and give `rtc` the connection's local end as its active TCP
/// candidate.
pub(super) async fn connect(
    rtc: &mut Rtc,
    servers: &[SocketAddr],
) -> Result<TcpStream, ClientError> {
    let mut last = None;
    for s in servers {
        let sock = if s.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // A receive buffer of the size a phone's would be, so a client that
        // stops reading holds a bounded amount.
        sock.set_recv_buffer_size(RECV_BUFFER)?;
        match sock.connect(*s).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let local = stream.local_addr()?;
                let cand = Candidate::builder()
                    .tcp()
                    .host(local)
                    .tcptype(TcpType::Active)
                    .build()
                    .map_err(|e| ClientError::Rtc(e.to_string()))?;
                rtc.add_local_candidate(cand);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => ClientError::Answer("the answer has no passive TCP candidate".into()),
    })
}

/// Frame `outbox` onto `w` in one write.
async fn flush(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    outbox: &mut Vec<Transmit>,
    buf: &mut Vec<u8>,
) -> Result<(), ClientError> {
    buf.clear();
    for t in outbox.drain(..) {
        if t.proto != Protocol::Tcp {
            continue;
        }
        buf.extend_from_slice(&(t.contents.len() as u16).to_be_bytes());
        buf.extend_from_slice(&t.contents);
    }
    if !buf.is_empty() {
        w.write_all(buf).await?;
    }
    Ok(())
}

/// A session over `stream` until it ends or `stop` fires. While `paused`
/// is set nothing is read (a viewer that stops reading its socket).
pub(super) async fn run(
    mut rtc: Rtc,
    stream: TcpStream,
    mut role: Role,
    stop: Arc<Notify>,
    paused: Arc<AtomicBool>,
) -> Result<(), ClientError> {
    let local = stream.local_addr()?;
    let remote = stream.peer_addr()?;
    let (mut rd, mut wr) = stream.into_split();
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut wbuf: Vec<u8> = Vec::new();
    let mut outbox: Vec<Transmit> = Vec::new();
    let mut timeout = Instant::now();
    let mut dirty = true;
    let mut kick = false;
    loop {
        if dirty {
            dirty = false;
            let next = drain(&mut rtc, &mut role, &mut outbox);
            flush(&mut wr, &mut outbox, &mut wbuf).await?;
            match next? {
                Some(t) => timeout = t,
                None => return Ok(()),
            }
        }
        let now = Instant::now();
        let Some(wake) = next_wake(&mut rtc, &mut role, now, timeout, &mut kick)? else {
            dirty = true;
            continue;
        };
        let reading = !paused.load(Ordering::Relaxed);
        let pause_check = tokio::time::sleep(std::time::Duration::from_millis(50));
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if reading => {
                if r? == 0 {
                    return Ok(());
                }
                let mut at = 0;
                while let Some(h) = rbuf.get(at..at + 2) {
                    let len = u16::from_be_bytes([h[0], h[1]]) as usize;
                    if len == 0 || len > MAX_FRAME {
                        return Err(ClientError::Rtc(format!("bad RFC 4571 frame length {len}")));
                    }
                    let Some(frame) = rbuf.get(at + 2..at + 2 + len) else { break };
                    if let Ok(r) = Receive::new(Protocol::Tcp, remote, local, frame) {
                        let fed = match &role {
                            Role::View(v) if v.mode == super::ViewerMode::CountOnly
                                && v.stats.connected.load(Ordering::Relaxed)
                                && sluice_dataplane::is_rtp(frame) =>
                            {
                                count_header(&v.stats, frame);
                                false
                            }
                            _ => {
                                rtc.handle_input(Input::Receive(Instant::now(), r))
                                    .map_err(|e| ClientError::Rtc(e.to_string()))?;
                                true
                            }
                        };
                        if fed {
                            match drain(&mut rtc, &mut role, &mut outbox)? {
                                Some(t) => timeout = t,
                                None => return Ok(()),
                            }
                        }
                    }
                    at += 2 + len;
                }
                rbuf.drain(..at);
                flush(&mut wr, &mut outbox, &mut wbuf).await?;
            }
            _ = pause_check, if !reading => {}
            _ = tokio::time::sleep_until(wake.into()) => {
                time_out(&mut rtc)?;
                dirty = true;
            }
            _ = stop.notified() => {
                close(&mut rtc, &mut outbox);
                let _ = flush(&mut wr, &mut outbox, &mut wbuf).await;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_tcp_candidates_are_found_v4_first() {
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n\
            a=candidate:2 1 tcp 1509949695 ::1 40001 typ host tcptype passive\r\n\
            a=candidate:3 1 tcp 1509949695 127.0.0.1 40001 typ host tcptype passive\r\n\
            a=candidate:4 1 tcp 1509949695 127.0.0.1 9 typ host tcptype active\r\n";
        let got = passive_candidates(sdp, &SessionOptions::default());
        assert_eq!(
            got,
            vec![
                "127.0.0.1:40001".parse::<SocketAddr>().unwrap(),
                "[::1]:40001".parse().unwrap()
            ]
        );
    }
}
