//! Close frame payloads: codes the relay sends, and validation of codes peers send.

use thiserror::Error;

/// Close codes the relay sends (RFC 6455 section 7.4 and the contract's 4xxx codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// RFC 6455 section 7.4.1: a message that breaks the endpoint's policy.
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// RFC 6455 section 7.4.1 (IANA registry): the service is restarting; the client should
    /// reconnect. Sent to a carried peer whose session's owner node is gone.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const REPLACED: CloseCode = CloseCode(4001);
    pub const IDLE: CloseCode = CloseCode(4002);
    /// `resume=N` asked for messages no longer kept, and events are off to say so.
    pub const RESUME_GAP: CloseCode = CloseCode(4003);
    /// The peer that was sending this connection a message left before finishing it; the
    /// partial message cannot be completed, so the receiver is closed rather than handed a
    /// truncated message.
    pub const PEER_ABORTED: CloseCode = CloseCode(4004);
    /// The buffer for the absent peer is full and `session.overflow = "close"`.
    pub const BUFFER_FULL: CloseCode = CloseCode(4005);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CloseError {
    #[error("close payload of one byte")]
    OneByte,
    #[error("close code {0} is not allowed on the wire")]
    BadCode(u16),
    #[error("close reason is not valid UTF-8")]
    BadReason,
}

impl CloseError {
    /// The code the relay answers this violation with.
    pub fn answer(self) -> CloseCode {
        match self {
            CloseError::BadReason => CloseCode::INVALID_DATA,
            _ => CloseCode::PROTOCOL,
        }
    }
}

/// Codes a peer may put on the wire (section 7.4.1 and the IANA registry): 1004-1006 and
/// 1015 are reserved for local use, below 1000 and 1016-2999 are unassigned.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a received close payload; returns the peer's code (1005 "no status" when empty).
pub fn parse_close_payload(payload: &[u8]) -> Result<u16, CloseError> {
    match payload.len() {
        0 => Ok(1005),
        1 => Err(CloseError::OneByte),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_wire_code(code) {
                return Err(CloseError::BadCode(code));
            }
            std::str::from_utf8(&payload[2..]).map_err(|_| CloseError::BadReason)?;
            Ok(code)
        }
    }
}

/// Writes a complete unmasked close frame into `out` and returns its length; the reason is cut
/// at a character boundary to fit the 125-byte control payload.
pub fn encode_close_frame(
    out: &mut [u8; 2 + super::frame::MAX_CONTROL_PAYLOAD],
    code: CloseCode,
    reason: &str,
) -> usize {
    let mut cut = reason.len().min(super::frame::MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let payload_len = 2 + cut;
    out[0] = 0x88;
    out[1] = payload_len as u8;
    out[2..4].copy_from_slice(&code.0.to_be_bytes());
    out[4..4 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    2 + payload_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes() {
        for ok in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert_eq!(parse_close_payload(&ok.to_be_bytes()), Ok(ok));
        }
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                parse_close_payload(&bad.to_be_bytes()),
                Err(CloseError::BadCode(bad))
            );
        }
        assert_eq!(parse_close_payload(&[3]), Err(CloseError::OneByte));
        assert_eq!(
            parse_close_payload(&[3, 232, 0xff]),
            Err(CloseError::BadReason)
        );
        assert_eq!(parse_close_payload(&[]), Ok(1005));
    }

    #[test]
    fn long_reason_is_cut_on_a_char_boundary() {
        let mut out = [0u8; 127];
        let reason = "é".repeat(100);
        let n = encode_close_frame(&mut out, CloseCode::NORMAL, &reason);
        assert!(n <= 127);
        assert_eq!(out[1] as usize, n - 2);
        assert!(std::str::from_utf8(&out[4..n]).is_ok());
    }
}
