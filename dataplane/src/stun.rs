//! Just enough STUN parsing to route a new flow to its session: the local ICE
//! ufrag from a binding request's USERNAME attribute (RFC 8445 §7.2.2), and
//! telling the session's success responses (which bind the flow) apart.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;

/// True when the datagram looks like STUN (RFC 7983 demultiplexing + magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 2 && buf[4..8] == MAGIC_COOKIE
}

/// True for a binding success response: what an ICE agent sends only to a
/// request whose MESSAGE-INTEGRITY it verified.
pub fn is_binding_success(buf: &[u8]) -> bool {
    is_stun(buf) && u16::from_be_bytes([buf[0], buf[1]]) == BINDING_SUCCESS
}

/// The local (server-side) ufrag a binding request is addressed to.
///
/// USERNAME is `local_ufrag:remote_ufrag` from the receiver's point of view.
pub fn binding_request_local_ufrag(buf: &[u8]) -> Option<&[u8]> {
    if !is_stun(buf) {
        return None;
    }
    let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
    if msg_type != BINDING_REQUEST {
        return None;
    }
    let body_len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let attr = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if attr == ATTR_USERNAME {
            let colon = value.iter().position(|&b| b == b':')?;
            return Some(&value[..colon]);
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // A PRIORITY attribute after USERNAME, as browsers send.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut msg = Vec::new();
        msg.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn local_ufrag_is_the_part_before_the_colon() {
        let msg = binding_request(b"srv1:cli2x");
        assert_eq!(binding_request_local_ufrag(&msg), Some(&b"srv1"[..]));
    }

    #[test]
    fn truncated_or_non_stun_datagrams_yield_nothing() {
        let msg = binding_request(b"abcd:efgh");
        for cut in 0..msg.len() {
            // Must never panic, and a cut inside USERNAME must not return a wrong ufrag.
            if let Some(u) = binding_request_local_ufrag(&msg[..cut]) {
                assert_eq!(u, b"abcd");
            }
        }
        assert_eq!(binding_request_local_ufrag(&[0x80; 40]), None);
        assert_eq!(binding_request_local_ufrag(b"hello"), None);
    }

    #[test]
    fn username_without_colon_is_rejected() {
        let msg = binding_request(b"nocolon");
        assert_eq!(binding_request_local_ufrag(&msg), None);
    }
}
