//! Ethernet / IPv4 / IPv6 / UDP header parsing and building.
//!
//! Everything here works on plain byte slices so it can be unit tested
//! without a socket, and none of it allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;

/// Why a received frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Truncated,
    NotIp,
    NotUdp,
    BadIpHeader,
    Fragment,
    BadUdpLength,
}

/// Result of parsing one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedUdp {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Byte range of the UDP payload inside the frame.
    pub payload_off: usize,
    pub payload_len: usize,
}

#[inline]
fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Parse an Ethernet frame carrying UDP over IPv4 or IPv6.
///
/// Lengths in the IP and UDP headers are checked against the frame so a
/// lying header can never make us read past the received data. Trailing
/// bytes after the IP datagram (Ethernet padding of short frames) are
/// ignored. IPv6 extension headers are not walked: the XDP filter only
/// redirects frames whose next header is UDP directly.
pub fn parse_udp(frame: &[u8]) -> Result<ParsedUdp, Malformed> {
    if frame.len() < ETH_HLEN {
        return Err(Malformed::Truncated);
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let ethertype = be16(frame, 12);
    let ip = &frame[ETH_HLEN..];

    let (src_ip, dst_ip, udp_off, ip_payload_len) = match ethertype {
        ETHERTYPE_IPV4 => {
            if ip.len() < IPV4_HLEN {
                return Err(Malformed::Truncated);
            }
            if ip[0] >> 4 != 4 {
                return Err(Malformed::BadIpHeader);
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < IPV4_HLEN {
                return Err(Malformed::BadIpHeader);
            }
            let total = be16(ip, 2) as usize;
            if total < ihl || total > ip.len() {
                return Err(Malformed::BadIpHeader);
            }
            // Any fragment (MF set or non-zero offset) is not a whole datagram.
            if be16(ip, 6) & 0x3fff != 0 {
                return Err(Malformed::Fragment);
            }
            if ip[9] != IPPROTO_UDP {
                return Err(Malformed::NotUdp);
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(s), IpAddr::V4(d), ETH_HLEN + ihl, total - ihl)
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < IPV6_HLEN {
                return Err(Malformed::Truncated);
            }
            if ip[0] >> 4 != 6 {
                return Err(Malformed::BadIpHeader);
            }
            let plen = be16(ip, 4) as usize;
            if IPV6_HLEN + plen > ip.len() {
                return Err(Malformed::BadIpHeader);
            }
            if ip[6] != IPPROTO_UDP {
                return Err(Malformed::NotUdp);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                ETH_HLEN + IPV6_HLEN,
                plen,
            )
        }
        _ => return Err(Malformed::NotIp),
    };

    if ip_payload_len < UDP_HLEN {
        return Err(Malformed::BadUdpLength);
    }
    let udp = &frame[udp_off..udp_off + ip_payload_len];
    let sport = be16(udp, 0);
    let dport = be16(udp, 2);
    let ulen = be16(udp, 4) as usize;
    if ulen < UDP_HLEN || ulen > ip_payload_len {
        return Err(Malformed::BadUdpLength);
    }
    Ok(ParsedUdp {
        src_mac,
        dst_mac,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        payload_off: udp_off + UDP_HLEN,
        payload_len: ulen - UDP_HLEN,
    })
}

/// Add `data` to a running one's-complement sum as big-endian 16-bit words.
/// The sum is kept in a u64 so carries can be folded once at the end.
#[inline]
pub fn csum_add(sum: u64, data: &[u8]) -> u64 {
    // The ones' complement sum does not depend on byte order (RFC 1071
    // §2(B)): add native-endian 32-bit words (a loop the compiler
    // vectorises), fold to 16 bits, and swap once into network order. A
    // u64 accumulator cannot overflow for any slice under 16 GiB.
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    // The last 1-3 bytes, padded with zeros after them (an odd byte is
    // the high half of its 16-bit word in network order).
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u32::from_ne_bytes(tail) as u64;
    let mut f = (acc & 0xffff_ffff) + (acc >> 32);
    f = (f & 0xffff) + (f >> 16);
    f = (f & 0xffff) + (f >> 16);
    f = (f & 0xffff) + (f >> 16);
    sum + u16::from_be(f as u16) as u64
}

/// Fold a running sum to 16 bits and complement it.
#[inline]
pub fn csum_finish(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Internet checksum (RFC 1071) of a byte slice.
pub fn checksum(data: &[u8]) -> u16 {
    csum_finish(csum_add(0, data))
}

/// UDP checksum over the pseudo header, the UDP header and the payload.
/// `udp` must be the UDP header (with a zero checksum field) followed by
/// the payload. A computed value of zero is sent as 0xffff, because zero
/// means "no checksum" on the wire.
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut sum = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = csum_add(sum, &s.octets());
            sum = csum_add(sum, &d.octets());
            sum += IPPROTO_UDP as u64;
            sum += udp.len() as u64;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = csum_add(sum, &s.octets());
            sum = csum_add(sum, &d.octets());
            sum += udp.len() as u64;
            sum += IPPROTO_UDP as u64;
        }
        _ => return 0,
    }
    sum = csum_add(sum, udp);
    match csum_finish(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// Bytes of headers in front of the payload for a given destination family.
pub fn header_len(dst: &SocketAddr) -> usize {
    match dst {
        SocketAddr::V4(_) => ETH_HLEN + IPV4_HLEN + UDP_HLEN,
        SocketAddr::V6(_) => ETH_HLEN + IPV6_HLEN + UDP_HLEN,
    }
}

/// Write a complete Ethernet + IP + UDP frame into `buf`.
///
/// Returns the frame length, or `None` when the addresses are of different
/// families or the frame does not fit in `buf`. `ip_id` is used as the IPv4
/// identification field (ignored for IPv6).
#[allow(clippy::too_many_arguments)]
pub fn write_udp(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    ip_id: u16,
    ttl: u8,
) -> Option<usize> {
    let hlen = header_len(&dst);
    let total = hlen + payload.len();
    if total > buf.len() {
        return None;
    }
    let udp_len = UDP_HLEN + payload.len();
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    let udp_off = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if IPV4_HLEN + udp_len > u16::MAX as usize {
                return None;
            }
            buf[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let ip = &mut buf[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((IPV4_HLEN + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            // Don't Fragment: path MTU problems should surface, not fragment.
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = ttl;
            ip[9] = IPPROTO_UDP;
            ip[10] = 0;
            ip[11] = 0;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ETH_HLEN + IPV4_HLEN
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if udp_len > u16::MAX as usize {
                return None;
            }
            buf[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let ip = &mut buf[ETH_HLEN..ETH_HLEN + IPV6_HLEN];
            ip[0] = 0x60;
            ip[1] = 0;
            ip[2] = 0;
            ip[3] = 0;
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = ttl;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            ETH_HLEN + IPV6_HLEN
        }
        _ => return None,
    };
    let udp = &mut buf[udp_off..udp_off + udp_len];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6] = 0;
    udp[7] = 0;
    udp[UDP_HLEN..].copy_from_slice(payload);
    let c = udp_checksum(src.ip(), dst.ip(), udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_wide_sum_matches_a_sum_of_16_bit_words() {
        let reference = |data: &[u8]| -> u64 {
            let mut sum = 0u64;
            for p in data.chunks(2) {
                sum += u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]) as u64;
            }
            sum
        };
        let data: Vec<u8> = (0..1500u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..64).chain([255, 256, 1199, 1200, 1201, 1500]) {
            let d = &data[..len];
            assert_eq!(
                csum_finish(csum_add(7, d)),
                csum_finish(7 + reference(d)),
                "length {len}"
            );
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = hex("0001f203f4f5f6f7");
        assert_eq!(checksum(&d), !0xddf2u16);
    }

    #[test]
    fn ipv4_header_checksum_known_vector() {
        // Widely used example header whose checksum is 0xb861.
        let mut h = hex("450000730000400040110000c0a80001c0a800c7");
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        // A header including its checksum sums to zero.
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn odd_length_checksum() {
        // Odd trailing byte is padded with a zero low byte.
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234u16 + 0x5600));
    }

    #[test]
    fn udp_ipv4_known_vector() {
        // 192.0.2.1:1234 -> 192.0.2.2:5678, payload "hello". Expected value
        // computed with an independent RFC 1071 implementation.
        let mut udp = hex("04d2162e000d0000");
        udp.extend_from_slice(b"hello");
        let c = udp_checksum(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            &udp,
        );
        assert_eq!(c, 0x1cfe);
    }

    #[test]
    fn udp_ipv6_known_vector() {
        // [2001:db8::1]:1234 -> [2001:db8::2]:5678, payload "hello", same
        // independent reference as above.
        let mut udp = hex("04d2162e000d0000");
        udp.extend_from_slice(b"hello");
        let c = udp_checksum(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            &udp,
        );
        assert_eq!(c, 0x458d);
    }

    #[test]
    fn zero_checksum_sent_as_ffff() {
        // Choose a payload that makes the sum 0xffff so the result is 0.
        let src: IpAddr = "0.0.0.0".parse().unwrap();
        let dst: IpAddr = "0.0.0.0".parse().unwrap();
        // pseudo: 0x11 + len(10)=0x0a ; header: 0+0+0x0a ; payload word w
        // total = 0x11+0x0a+0x0a + w = 0xffff => w = 0xffda
        let udp = [0, 0, 0, 0, 0, 10, 0, 0, 0xff, 0xda];
        assert_eq!(udp_checksum(src, dst, &udp), 0xffff);
    }

    fn roundtrip(src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let mut buf = [0u8; 2048];
        let smac = [2, 0, 0, 0, 0, 1];
        let dmac = [2, 0, 0, 0, 0, 2];
        let n = write_udp(&mut buf, smac, dmac, src, dst, payload, 7, 64).unwrap();
        assert_eq!(n, header_len(&dst) + payload.len());
        let p = parse_udp(&buf[..n]).unwrap();
        assert_eq!(p.src, src);
        assert_eq!(p.dst, dst);
        assert_eq!(p.src_mac, smac);
        assert_eq!(p.dst_mac, dmac);
        assert_eq!(&buf[p.payload_off..p.payload_off + p.payload_len], payload);
        // Verifying a UDP checksum over the pseudo header and the datagram
        // including its checksum field gives zero.
        let udp = &buf[p.payload_off - UDP_HLEN..p.payload_off + p.payload_len];
        let mut sum = 0u64;
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                sum = csum_add(sum, &s.octets());
                sum = csum_add(sum, &d.octets());
                // IPv4 header checksum must verify too.
                assert_eq!(checksum(&buf[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                sum = csum_add(sum, &s.octets());
                sum = csum_add(sum, &d.octets());
            }
            _ => unreachable!(),
        }
        sum += 17 + udp.len() as u64;
        sum = csum_add(sum, udp);
        assert_eq!(csum_finish(sum), 0);
    }

    #[test]
    fn build_parse_roundtrip() {
        for len in [0usize, 1, 2, 3, 7, 8, 9, 100, 1399, 1400] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            roundtrip(
                "198.18.0.1:41000".parse().unwrap(),
                "198.18.0.2:5000".parse().unwrap(),
                &payload,
            );
            roundtrip(
                "[2001:db8::1]:41000".parse().unwrap(),
                "[2001:db8::2]:5000".parse().unwrap(),
                &payload,
            );
        }
    }

    #[test]
    fn parse_handles_ip_options_and_padding() {
        let mut buf = [0u8; 128];
        let src: SocketAddr = "198.18.0.2:5000".parse().unwrap();
        let dst: SocketAddr = "198.18.0.1:41000".parse().unwrap();
        let n = write_udp(&mut buf, [1; 6], [2; 6], src, dst, b"abc", 1, 64).unwrap();
        // Insert 4 bytes of options (NOP NOP NOP EOL) after the base header.
        let mut f = Vec::new();
        f.extend_from_slice(&buf[..ETH_HLEN + IPV4_HLEN]);
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&buf[ETH_HLEN + IPV4_HLEN..n]);
        f[ETH_HLEN] = 0x46;
        let tl = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&tl.to_be_bytes());
        // Ethernet padding after the datagram must be ignored.
        f.extend_from_slice(&[0u8; 10]);
        let p = parse_udp(&f).unwrap();
        assert_eq!(p.src, src);
        assert_eq!(&f[p.payload_off..p.payload_off + p.payload_len], b"abc");
    }

    #[test]
    fn parse_rejects_malformed() {
        let mut buf = [0u8; 128];
        let src: SocketAddr = "198.18.0.2:5000".parse().unwrap();
        let dst: SocketAddr = "198.18.0.1:41000".parse().unwrap();
        let n = write_udp(&mut buf, [1; 6], [2; 6], src, dst, b"abcdef", 1, 64).unwrap();
        assert_eq!(parse_udp(&buf[..10]), Err(Malformed::Truncated));
        assert_eq!(parse_udp(&buf[..n - 1]), Err(Malformed::BadIpHeader));
        let mut b = buf;
        b[ETH_HLEN] = 0x44; // IHL 16 bytes
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::BadIpHeader));
        let mut b = buf;
        b[ETH_HLEN + 6] = 0x20; // MF
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::Fragment));
        let mut b = buf;
        b[ETH_HLEN + 9] = 6;
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::NotUdp));
        let mut b = buf;
        let uoff = ETH_HLEN + IPV4_HLEN;
        b[uoff + 4..uoff + 6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::BadUdpLength));
        b[uoff + 4..uoff + 6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::BadUdpLength));
        let mut b = buf;
        b[12] = 0x08;
        b[13] = 0x06; // ARP
        assert_eq!(parse_udp(&b[..n]), Err(Malformed::NotIp));
    }
}
