//! Routing datagrams on the one shared UDP port. STUN binding requests name the server's ICE
//! username fragment (the part of USERNAME before ':'), which the server chose per peer
//! connection; everything else (DTLS, SRTP, SRTCP) is routed by the source address that peer's
//! STUN traffic came from. Pure functions on bytes; nothing here allocates.

/// RFC 7983 demultiplexing by the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Unknown,
}

pub fn classify(d: &[u8]) -> DatagramKind {
    match d.first() {
        Some(0..=3) if d.len() >= 20 => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) if d.len() >= 12 => DatagramKind::Rtp,
        _ => DatagramKind::Unknown,
    }
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (server) ufrag from a STUN message's USERNAME attribute, if it is a well-formed STUN
/// message that carries one.
pub fn stun_local_ufrag(d: &[u8]) -> Option<&str> {
    if d.len() < 20 || d[0] & 0xc0 != 0 || d[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = u16::from_be_bytes([d[2], d[3]]) as usize;
    let body = d.get(20..20 + body_len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let ty = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + len)?;
        if ty == ATTR_USERNAME {
            let s = std::str::from_utf8(value).ok()?;
            return s.split(':').next().filter(|u| !u.is_empty());
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // a PRIORITY attribute first, to check that attributes are walked
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[9; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn the_server_ufrag_is_the_part_before_the_colon() {
        let m = stun_with_username("srvUfrag1:cli");
        assert_eq!(classify(&m), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&m), Some("srvUfrag1"));
    }

    #[test]
    fn malformed_stun_yields_nothing() {
        let m = stun_with_username("abc:def");
        assert_eq!(stun_local_ufrag(&m[..m.len() - 4]), None, "truncated body");
        let mut bad_cookie = m.clone();
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(":x")), None, "empty ufrag");
        assert_eq!(stun_local_ufrag(&[0u8; 8]), None);
    }

    #[test]
    fn first_byte_classifies_the_protocol() {
        assert_eq!(classify(&[22; 30]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80; 30]), DatagramKind::Rtp);
        assert_eq!(classify(&[0xff; 30]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[0x00; 4]), DatagramKind::Unknown, "too short for STUN");
    }
}
