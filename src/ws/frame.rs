//! Frame header parse and encode.

use thiserror::Error;

/// Longest possible header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;
/// Longest header the server writes (never masked).
pub const MAX_SERVER_HEADER_LEN: usize = 10;
/// Control frame payloads are limited by the RFC (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header occupied on the wire.
    pub header_len: usize,
}

/// Why a header is a protocol violation; every variant closes with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("fragmented control frame")]
    ControlFragmented,
    #[error("64-bit payload length with the most significant bit set")]
    LengthTopBit,
    #[error("client frame not masked")]
    Unmasked,
    #[error("server frame masked")]
    Masked,
}

impl HeaderError {
    /// The close reason a peer is told when its frame header breaks the protocol (the close
    /// code is always 1002), one arm per error.
    pub fn close_reason(self) -> &'static str {
        match self {
            HeaderError::ReservedBits => "reserved bits set",
            HeaderError::UnknownOpcode(_) => "unknown opcode",
            HeaderError::ControlTooLong => "control frame too long",
            HeaderError::ControlFragmented => "fragmented control frame",
            HeaderError::LengthTopBit => "invalid 64-bit length",
            HeaderError::Unmasked => "client frames must be masked",
            HeaderError::Masked => "server frames must not be masked",
        }
    }
}

/// Which side's frames are being parsed: clients must mask, servers must not (section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// Parses one header from the front of `buf`. `Ok(None)` means more bytes are needed; nothing
/// is consumed, so the caller can retry with a longer slice.
// Inlined into the decoder's loop whatever the codegen units: left to the compiler, a build
// that happened to call it instead cost 4 % more instructions per forwarded message
// (scripts/callgrind_relay.sh, closed loop).
#[inline]
pub fn parse_header(buf: &[u8], from: Sender) -> Result<Option<FrameHeader>, HeaderError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(HeaderError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(HeaderError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    match (from, masked) {
        (Sender::Client, false) => return Err(HeaderError::Unmasked),
        (Sender::Server, true) => return Err(HeaderError::Masked),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(HeaderError::ControlFragmented);
        }
        if len7 > 125 {
            return Err(HeaderError::ControlTooLong);
        }
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(HeaderError::LengthTopBit);
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// Header length for an unmasked frame of `len` payload bytes.
pub fn server_header_len(len: u64) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes a header into `out` and returns its length. `out` must hold at least
/// `server_header_len(len)` bytes, plus 4 when masked.
pub fn encode_header(
    out: &mut [u8],
    fin: bool,
    opcode: OpCode,
    len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    let mut b0 = opcode.as_u8();
    if fin {
        b0 |= 0x80;
    }
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out[0] = b0;
    let mut pos = match len {
        0..=125 => {
            out[1] = mask_bit | len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&len.to_be_bytes());
            10
        }
    };
    if let Some(m) = mask {
        out[pos..pos + 4].copy_from_slice(&m);
        pos += 4;
    }
    pos
}

/// Writes a server header so that it ends exactly at `end` (where the payload starts) and
/// returns where it begins. The caller guarantees `end >= server_header_len(len)`.
pub fn encode_header_before(
    buf: &mut [u8],
    end: usize,
    fin: bool,
    opcode: OpCode,
    len: u64,
) -> usize {
    let start = end - server_header_len(len);
    encode_header(&mut buf[start..end], fin, opcode, len, None);
    start
}

/// A whole unmasked frame, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_server_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut hdr, fin, opcode, payload.len() as u64, None);
    let mut f = hdr[..n].to_vec();
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(fin: bool, op: OpCode, len: u64, mask: Option<[u8; 4]>) {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut out, fin, op, len, mask);
        let from = if mask.is_some() {
            Sender::Client
        } else {
            Sender::Server
        };
        let h = parse_header(&out[..n], from).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin,
                opcode: op,
                mask,
                payload_len: len,
                header_len: n
            }
        );
        for cut in 0..n {
            assert_eq!(
                parse_header(&out[..cut], from),
                Ok(None),
                "cut {cut} of {n}"
            );
        }
    }

    #[test]
    fn encode_then_parse_is_identity_at_length_boundaries() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 32, (1 << 63) - 1] {
            for op in [OpCode::Continuation, OpCode::Text, OpCode::Binary] {
                roundtrip(true, op, len, None);
                roundtrip(false, op, len, Some([1, 2, 3, 4]));
            }
        }
        roundtrip(true, OpCode::Ping, 125, Some([9, 9, 9, 9]));
    }

    #[test]
    fn violations_are_named() {
        let p = |b: &[u8]| parse_header(b, Sender::Client);
        assert_eq!(p(&[0xC1, 0x80]), Err(HeaderError::ReservedBits));
        assert_eq!(p(&[0x83, 0x80]), Err(HeaderError::UnknownOpcode(3)));
        assert_eq!(p(&[0x81, 0x00]), Err(HeaderError::Unmasked));
        assert_eq!(p(&[0x09, 0x80]), Err(HeaderError::ControlFragmented));
        assert_eq!(p(&[0x89, 0xFE]), Err(HeaderError::ControlTooLong));
        let mut big = vec![0x82, 0xFF, 0x80];
        big.extend_from_slice(&[0; 11]);
        assert_eq!(p(&big), Err(HeaderError::LengthTopBit));
        assert_eq!(
            parse_header(&[0x81, 0x80], Sender::Server),
            Err(HeaderError::Masked)
        );
    }

    #[test]
    fn header_before_payload_ends_at_payload() {
        let mut buf = [0u8; 20];
        let start = encode_header_before(&mut buf, 12, true, OpCode::Binary, 300);
        assert_eq!(start, 8);
        let h = parse_header(&buf[start..], Sender::Server)
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 300);
        assert_eq!(start + h.header_len, 12);
    }

    proptest::proptest! {
        #[test]
        fn any_header_shape_roundtrips(fin: bool, op in 0usize..6, len in 0u64..(1u64 << 63), mask: Option<[u8; 4]>) {
            let ops = [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong];
            let op = ops[op];
            let len = if op.is_control() { len % 126 } else { len };
            let fin = fin || op.is_control();
            roundtrip(fin, op, len, mask);
        }
    }
}
