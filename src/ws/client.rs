//! The client's side of the WebSocket handshake and its masked frames, without I/O. Two
//! clients use it: the load generator and the agent. The server side of the codec never masks;
//! a client must mask every frame (RFC 6455 section 5.3), with a fresh key each time.

use super::accept::accept_key;
use super::frame::{encode_header, HeaderError, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
use base64::Engine;
use std::cell::RefCell;

/// xorshift64*: a fast, varied stream for what needs no secrecy (back-off jitter, test data,
/// load routes). Masks and keys come from [`MaskSource`] and [`new_key`] instead.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Seeded from the OS random source and `salt`.
    pub fn from_entropy(salt: u64) -> Rng {
        Rng::new(u64::from_ne_bytes(os_random::<8>()) ^ salt)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `N` bytes from the OS random source (`getrandom(2)`). Panics only where the OS has no
/// randomness at all, which no supported Linux lacks.
fn os_random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source (getrandom) is unavailable");
    b
}

/// Bytes read ahead from the OS random source per refill: 1,024 masks per system call.
const MASK_BLOCK: usize = 4096;

/// A thread's masks read ahead: every writer on one worker draws from the same block.
struct MaskBlock {
    bytes: [u8; MASK_BLOCK],
    used: usize,
}

thread_local! {
    static MASKS: RefCell<MaskBlock> = const {
        RefCell::new(MaskBlock { bytes: [0; MASK_BLOCK], used: MASK_BLOCK })
    };
}

/// Frame masks straight from the OS random source. RFC 6455 section 5.3 asks for masks an
/// intermediary cannot predict, so they come from the kernel's CSPRNG, not a seeded stream.
/// Read 4 KiB at a time into a block per thread (per core: the load generator and the agent
/// run a thread per core, so no lock and nothing shared across threads): a mask costs a copy
/// of 4 bytes, and a system call per 1,024 frames. With a block per connection of 256 bytes,
/// `ringrelay load` made one `getrandom` for every 4 `sendto` (strace, 2 pairs, 64 B).
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskSource;

impl MaskSource {
    pub fn new() -> MaskSource {
        MaskSource
    }

    pub fn mask(&mut self) -> [u8; 4] {
        MASKS.with_borrow_mut(|b| {
            if b.used + 4 > MASK_BLOCK {
                getrandom::fill(&mut b.bytes)
                    .expect("the OS random source (getrandom) is unavailable");
                b.used = 0;
            }
            let mut m = [0u8; 4];
            m.copy_from_slice(&b.bytes[b.used..b.used + 4]);
            b.used += 4;
            m
        })
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes from the OS random source, in base64.
pub fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(os_random::<16>())
}

/// The upgrade request for `path` (with its query) on `host`, with `extra` headers after the
/// required ones. The caller keeps header values free of CR and LF.
pub fn upgrade_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Why an upgrade answer is not a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeAnswerError {
    /// The server answered, with another status: its status line says why.
    #[error("upgrade refused: {line}")]
    Refused {
        status: u16,
        line: String,
        /// `Retry-After` in seconds, when the server gave one.
        retry_after: Option<u64>,
    },
    #[error("bad upgrade answer: {0}")]
    Bad(&'static str),
}

/// Checks an upgrade answer's head: status 101, `Upgrade: websocket`, the accept key that
/// matches `key`.
pub fn check_answer(head: &[u8], key: &str) -> Result<(), UpgradeAnswerError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(UpgradeAnswerError::Bad("unparsable response head")),
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if resp.code != Some(101) {
        let first = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let retry_after = header("retry-after")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok());
        return Err(UpgradeAnswerError::Refused {
            status: resp.code.unwrap_or_default(),
            line: String::from_utf8_lossy(first).into_owned(),
            retry_after,
        });
    }
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Err(UpgradeAnswerError::Bad("no Upgrade: websocket"));
    }
    if header("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_bytes()) {
        return Err(UpgradeAnswerError::Bad("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// A frame stream a client's reader refuses, beyond a bad header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("a new data frame began inside a fragmented message")]
    Interleaved,
    #[error("continuation frame outside a message")]
    StrayContinuation,
}

/// Appends one whole (FIN) frame of `payload`, masked with `mask`, to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, op: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut hdr, true, op, payload.len() as u64, Some(mask));
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{parse_header, Sender};

    #[test]
    fn rng_is_varied_and_never_stuck() {
        let mut r = Rng::new(0);
        let a = r.next_u64();
        let b = r.next_u64();
        assert_ne!(a, b);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn masks_come_fresh_across_block_refills() {
        let mut m = MaskSource::new();
        // Three blocks' worth: every refill is read, none repeats one before. 3,072 draws of
        // 32 bits from a real source hold two equal pairs about once in 10^6 runs; a block
        // left zero or read twice would repeat 1,024 of them.
        let masks: Vec<[u8; 4]> = (0..3 * MASK_BLOCK / 4).map(|_| m.mask()).collect();
        let distinct: std::collections::HashSet<_> = masks.iter().collect();
        assert!(distinct.len() >= masks.len() - 1, "{}", distinct.len());
    }

    #[test]
    fn the_request_carries_the_extra_headers_and_parses() {
        let key = new_key();
        assert_eq!(key.len(), 24);
        assert_ne!(key, new_key());
        let req = upgrade_request(
            "r:1",
            "/v1/relay/s?role=agent",
            &key,
            &[("Authorization", "Bearer t")],
        );
        let head = crate::http::parse_head(req.as_bytes(), 8192, 32)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(head.path, "/v1/relay/s");
        assert_eq!(head.query, "role=agent");
        assert_eq!(head.header("authorization"), Some("Bearer t"));
        assert!(crate::http::upgrade::check_upgrade(&head).is_ok());
    }

    #[test]
    fn answers_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_answer(ok.as_bytes(), key), Ok(()));
        assert_eq!(
            check_answer(ok.replace("s3p", "x3p").as_bytes(), key),
            Err(UpgradeAnswerError::Bad("wrong Sec-WebSocket-Accept"))
        );
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n\r\n";
        assert_eq!(
            check_answer(busy, key),
            Err(UpgradeAnswerError::Refused {
                status: 503,
                line: "HTTP/1.1 503 Service Unavailable".into(),
                retry_after: Some(3)
            })
        );
    }

    #[test]
    fn client_frames_are_masked_and_decode_back() {
        let mut out = Vec::new();
        encode_client_frame(&mut out, OpCode::Text, b"hello", [1, 2, 3, 4]);
        let h = parse_header(&out, Sender::Client).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len), (true, OpCode::Text, 5));
        let mut payload = out[h.header_len..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"hello");
    }
}
