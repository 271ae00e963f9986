//! The PROXY protocol header (HAProxy's spec, v1 text and v2 binary) that a trusted proxy
//! sends before the client's own bytes, naming the client's address. I/O-free: the caller
//! feeds everything read so far and gets `Partial` (read more, nothing consumed), the
//! header's length and the address it names, or an error. The length is bounded, so a peer
//! cannot make the relay buffer more than [`MAX_HEADER_BYTES`] waiting for an end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's own bound for a v1 line, CRLF included.
pub const V1_MAX_BYTES: usize = 107;
/// A v2 header, TLVs included, may be longer than this only in theory (the length field goes
/// to 64 KiB); what HAProxy and nginx send is well under it.
pub const MAX_HEADER_BYTES: usize = 4096;
const V2_FIXED: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: read more and call again with every byte so far.
    Partial,
    /// A whole header of `len` bytes. `source` is the client the proxy names; `None` when it
    /// names none (a LOCAL connection such as the proxy's own health check, `UNKNOWN`, or an
    /// address family without an IP): the direct peer is then the client.
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The bytes start like neither version: no header was sent.
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
    #[error("PROXY protocol header longer than its limit")]
    TooLong,
}

/// Reads the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if starts(&V2_SIGNATURE) {
        return v2(buf);
    }
    if starts(V1_PREFIX) {
        return v1(buf);
    }
    Err(ProxyHeaderError::Missing)
}

fn v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::V1;
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    // One pass, left to right, so the first bad byte decides whatever follows it.
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' if i > 0 && window[i - 1] == b'\r' => {
                end = Some(i);
                break;
            }
            b'\n' => return Err(V1("the line does not end with CRLF")),
            b'\r' if window.get(i + 1).is_some_and(|&n| n != b'\n') => {
                return Err(V1("CR not followed by LF"))
            }
            b'\r' => {}
            0x20..=0x7e => {}
            _ => return Err(V1("a byte that is not printable ASCII")),
        }
    }
    let Some(lf) = end else {
        return if buf.len() >= V1_MAX_BYTES {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let line = std::str::from_utf8(&window[..lf - 1]).map_err(|_| V1("not ASCII"))?;
    let len = lf + 1;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", matched by the caller
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The spec: whatever follows is to be ignored, and the real endpoints used.
        return Ok(Parsed::Done { len, source: None });
    }
    let rest: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return Err(V1("expected PROXY TCP4|TCP6 <src> <dst> <sport> <dport>"));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map_err(|_| V1("the source is not an IPv4 address"))?
            .into(),
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map_err(|_| V1("the source is not an IPv6 address"))?
            .into(),
        _ => return Err(V1("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let dst_ok = match family {
        "TCP4" => dst.parse::<Ipv4Addr>().is_ok(),
        _ => dst.parse::<Ipv6Addr>().is_ok(),
    };
    if !dst_ok {
        return Err(V1("the destination is not an address of the named family"));
    }
    let port = |p: &str| {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .ok_or(V1("a port is not a number from 0 to 65535"))
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Parsed::Done {
        len,
        source: Some(SocketAddr::new(ip, sport)),
    })
}

fn v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::V2;
    if buf.len() > V2_SIGNATURE.len() && buf[12] >> 4 != 2 {
        return Err(V2("the version is not 2"));
    }
    if buf.len() > V2_SIGNATURE.len() && buf[12] & 0x0f > 1 {
        return Err(V2("the command is neither LOCAL nor PROXY"));
    }
    if buf.len() < V2_FIXED {
        return Ok(Parsed::Partial);
    }
    let local = buf[12] & 0x0f == 0;
    let family = buf[13];
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER_BYTES {
        return Err(ProxyHeaderError::TooLong);
    }
    if buf.len() < len {
        return Ok(Parsed::Partial);
    }
    let body = &buf[V2_FIXED..len];
    if local {
        // The proxy's own connection: the addresses, if any, are to be ignored.
        return Ok(Parsed::Done { len, source: None });
    }
    let source = match family {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2), then TLVs (skipped).
        0x11 => {
            let a = body
                .get(..12)
                .ok_or(V2("an IPv4 address block shorter than 12 bytes"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 => {
            let a = body
                .get(..36)
                .ok_or(V2("an IPv6 address block shorter than 36 bytes"))?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, and UNIX sockets: no IP to name; the real endpoints are used.
        0x00 | 0x31 => None,
        0x12 | 0x22 | 0x32 => return Err(V2("a datagram transport on a stream connection")),
        _ => return Err(V2("an unknown address family or transport")),
    };
    Ok(Parsed::Done { len, source })
}

/// A v2 header naming `source` (TCP), for tests and the fuzzer's seeds.
pub fn encode_v2(source: SocketAddr, dest: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (source.ip(), dest.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            body.extend(s.octets());
            body.extend(d.octets());
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            body.extend(v6(s).octets());
            body.extend(v6(d).octets());
        }
    }
    body.extend(source.port().to_be_bytes());
    body.extend(dest.port().to_be_bytes());
    body.extend_from_slice(tlvs);
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const REQUEST: &[u8] = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n";

    /// Every good header, and what it must parse to.
    fn good() -> Vec<(Vec<u8>, Option<SocketAddr>)> {
        let tlvs = [
            0x04, 0x00, 0x03, b'a', b'b', b'c', 0x01, 0x00, 0x02, b'h', b'2',
        ];
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x11, 0x00, 0x0c]);
        local.extend([127, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x90]);
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend([0x21, 0x00, 0x00, 0x00]);
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend([0x21, 0x31, 0x00, 0xd8]);
        unix.extend([0u8; 216]);
        vec![
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec(),
                Some(sa("192.0.2.7:56324")),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n".to_vec(),
                Some(sa("[2001:db8::1]:65535")),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".to_vec(), None),
            (
                encode_v2(sa("203.0.113.9:4000"), sa("10.0.0.1:8080"), &[]),
                Some(sa("203.0.113.9:4000")),
            ),
            (
                encode_v2(sa("[2001:db8:7::9]:1"), sa("[::1]:8080"), &tlvs),
                Some(sa("[2001:db8:7::9]:1")),
            ),
            (local, None),
            (unspec, None),
            (unix, None),
        ]
    }

    #[test]
    fn every_good_header_parses_at_every_split_point() {
        for (header, source) in good() {
            let mut stream = header.clone();
            stream.extend_from_slice(REQUEST);
            for k in 0..header.len() {
                assert_eq!(
                    parse(&stream[..k]),
                    Ok(Parsed::Partial),
                    "{:?} cut at {k}",
                    String::from_utf8_lossy(&header)
                );
            }
            for k in header.len()..=stream.len() {
                let done = Parsed::Done {
                    len: header.len(),
                    source,
                };
                assert_eq!(parse(&stream[..k]), Ok(done), "cut at {k}");
            }
        }
    }

    #[test]
    fn a_request_without_a_header_is_missing_at_its_first_byte() {
        assert_eq!(parse(b""), Ok(Parsed::Partial));
        for req in [&REQUEST[..1], REQUEST, b"PROXY-Authorization", b"\r\n\r\nX"] {
            assert_eq!(parse(req), Err(ProxyHeaderError::Missing), "{req:?}");
        }
        // A prefix of either signature waits for more.
        assert_eq!(parse(b"PROX"), Ok(Parsed::Partial));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parsed::Partial));
    }

    #[test]
    fn malformed_v1_lines_are_refused() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 443\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.07 198.51.100.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443\n",
            b"PROXY TCP4 192.0.2.7\r198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443\x00\r\n",
            b"PROXY \r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse(b), Err(ProxyHeaderError::V1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(b),
                parse(b)
            );
        }
        // No end within the spec's 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'a');
        assert_eq!(parse(&long[..106]), Ok(Parsed::Partial));
        assert_eq!(parse(&long[..107]), Err(ProxyHeaderError::TooLong));
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
        // The longest legal line is fine.
        let mut max = b"PROXY UNKNOWN ".to_vec();
        max.resize(105, b'a');
        max.extend(b"\r\n");
        assert_eq!(
            parse(&max),
            Ok(Parsed::Done {
                len: 107,
                source: None
            })
        );
    }

    #[test]
    fn malformed_v2_headers_are_refused() {
        let good = encode_v2(sa("203.0.113.9:4000"), sa("10.0.0.1:8080"), &[]);
        let with = |i: usize, b: u8| {
            let mut h = good.clone();
            h[i] = b;
            h
        };
        let v2_err = |h: &[u8]| matches!(parse(h), Err(ProxyHeaderError::V2(_)));
        assert!(v2_err(&with(12, 0x11)), "version 1");
        assert!(v2_err(&with(12, 0x31)), "version 3");
        assert!(v2_err(&with(12, 0x22)), "command 2");
        // Refused as soon as the bad byte is seen, without waiting for the rest.
        assert!(v2_err(&with(12, 0x22)[..13]));
        assert!(v2_err(&with(13, 0x12)), "UDP");
        assert!(v2_err(&with(13, 0x41)), "family 4");
        // An address block shorter than its family needs.
        let mut short = good[..16].to_vec();
        short[15] = 8;
        short.extend([0u8; 8]);
        assert!(v2_err(&short));
        // Longer than the limit: refused from the length field alone.
        let mut huge = good[..16].to_vec();
        huge[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLong));
        let mut at_limit = good[..16].to_vec();
        at_limit[14..16].copy_from_slice(&((MAX_HEADER_BYTES - 16) as u16).to_be_bytes());
        assert_eq!(parse(&at_limit), Ok(Parsed::Partial));
        at_limit.resize(MAX_HEADER_BYTES, 0);
        assert!(
            matches!(parse(&at_limit), Ok(Parsed::Done { len, .. }) if len == MAX_HEADER_BYTES)
        );
    }

    #[test]
    fn once_refused_always_refused() {
        // More bytes never turn an error into a header: the caller may stop at the first.
        let cases: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\nGET".to_vec(),
            b"PROXY TC\x01P4".to_vec(),
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            [&V2_SIGNATURE[..], &[0x25, 0x11, 0, 0]].concat(),
        ];
        for c in cases {
            let mut first = None;
            for k in 0..=c.len() {
                match (parse(&c[..k]), first) {
                    (Err(e), None) => first = Some(e),
                    (r, Some(e)) => assert_eq!(r, Err(e), "{c:?} at {k}"),
                    (Ok(Parsed::Partial), None) => {}
                    (r, None) => panic!("{c:?} at {k}: {r:?}"),
                }
            }
            assert!(first.is_some(), "{c:?}");
        }
    }
}
