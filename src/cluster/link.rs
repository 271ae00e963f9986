//! The node-to-node link's opening, without I/O.
//!
//! A node that carries a peer to the session's owner opens a TCP connection to the owner's
//! `cluster.internal_listen`. The owner speaks first with a fresh random challenge; the
//! carrier answers with what it knows of the peer (a JSON line) and an HMAC-SHA256 over the
//! challenge and that line, keyed with `cluster.secret`; the owner answers `ok` or `refused`.
//! After `ok` the connection carries the client's own bytes both ways, untouched. A fresh
//! challenge per connection means a recorded opening cannot be replayed.

use crate::runtime::rng::hex;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;

pub const NONCE_BYTES: usize = 16;
/// Longest line either side sends; a longer one is refused before it is parsed.
pub const MAX_LINE: usize = 2048;
const CHALLENGE: &str = "RRLINK/1 ";
pub const ACK: &[u8] = b"RRLINK/1 ok\n";
const REFUSED: &str = "RRLINK/1 refused ";
/// Bound into the MAC so a MAC made for anything else with the same secret never fits.
const CONTEXT: &[u8] = b"ringrelay-link/1\n";

/// What the carrying node decided about the peer, so the owner neither re-checks nor
/// double-charges it (the same as a handoff between cores carries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The carrying node's id.
    pub from: String,
    pub session: String,
    /// The client's address as the carrier's admission saw it.
    pub ip: IpAddr,
    /// The role its token granted or it asked for.
    pub role: Option<String>,
    /// The peer's region: its hint, else the carrying node's.
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the opening line is not a link challenge")]
    NotAChallenge,
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the peer description is not valid JSON: {0}")]
    BadDescription(String),
    #[error("the proof does not match: wrong or missing cluster.secret")]
    BadProof,
    #[error("the owner refused the link: {0}")]
    Refused(String),
    #[error("the owner answered something other than ok")]
    BadAnswer,
}

impl LinkError {
    /// A short name for logs and the refusal line.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::NotAChallenge => "not_a_challenge",
            LinkError::LineTooLong => "line_too_long",
            LinkError::BadDescription(_) => "bad_description",
            LinkError::BadProof => "bad_proof",
            LinkError::Refused(_) => "refused",
            LinkError::BadAnswer => "bad_answer",
        }
    }
}

/// The end of the first line in `buf` (index after its `\n`), if it is complete.
pub fn line_end(buf: &[u8]) -> Result<Option<usize>, LinkError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_LINE => Ok(Some(i + 1)),
        Some(_) => Err(LinkError::LineTooLong),
        None if buf.len() >= MAX_LINE => Err(LinkError::LineTooLong),
        None => Ok(None),
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn challenge_line(nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    format!("{CHALLENGE}{}\n", hex(nonce)).into_bytes()
}

pub fn refused_line(code: &str) -> Vec<u8> {
    format!("{REFUSED}{code}\n").into_bytes()
}

/// The nonce in the owner's first line (`line` without its `\n`).
pub fn parse_challenge(line: &[u8]) -> Result<[u8; NONCE_BYTES], LinkError> {
    let s = std::str::from_utf8(line).map_err(|_| LinkError::NotAChallenge)?;
    let nonce = s
        .strip_prefix(CHALLENGE)
        .and_then(unhex)
        .ok_or(LinkError::NotAChallenge)?;
    nonce.try_into().map_err(|_| LinkError::NotAChallenge)
}

fn mac(secret: &[u8], nonce: &[u8], description: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(CONTEXT);
    m.update(nonce);
    m.update(b"\n");
    m.update(description);
    m
}

/// The carrier's answer to a challenge: the description line, then the proof line.
pub fn answer(secret: &[u8], nonce: &[u8; NONCE_BYTES], carried: &Carried) -> Vec<u8> {
    let description = serde_json::to_string(carried).expect("a peer description serialises");
    let proof = hex(&mac(secret, nonce, description.as_bytes())
        .finalize()
        .into_bytes());
    format!("{description}\n{proof}\n").into_bytes()
}

/// Checks a carrier's answer: `Ok(None)` while it is incomplete, else the peer and how many
/// bytes of `buf` the answer took (what follows is the client's own).
pub fn verify_answer(
    secret: &[u8],
    nonce: &[u8; NONCE_BYTES],
    buf: &[u8],
) -> Result<Option<(Carried, usize)>, LinkError> {
    let Some(first) = line_end(buf)? else {
        return Ok(None);
    };
    let Some(second) = line_end(&buf[first..])? else {
        return Ok(None);
    };
    let description = &buf[..first - 1];
    let proof = std::str::from_utf8(&buf[first..first + second - 1])
        .ok()
        .and_then(unhex)
        .ok_or(LinkError::BadProof)?;
    // Checked before the description is parsed: nothing unauthenticated is interpreted.
    mac(secret, nonce, description)
        .verify_slice(&proof)
        .map_err(|_| LinkError::BadProof)?;
    let carried = serde_json::from_slice(description)
        .map_err(|e| LinkError::BadDescription(e.to_string()))?;
    Ok(Some((carried, first + second)))
}

/// Reads the owner's verdict line (without its `\n`).
pub fn parse_verdict(line: &[u8]) -> Result<(), LinkError> {
    if line == &ACK[..ACK.len() - 1] {
        return Ok(());
    }
    match std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.strip_prefix(REFUSED))
    {
        Some(code) => Err(LinkError::Refused(code.to_string())),
        None => Err(LinkError::BadAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn peer() -> Carried {
        Carried {
            from: "n2".into(),
            session: "s1".into(),
            ip: "127.0.0.9".parse().unwrap(),
            role: Some("mobile".into()),
            region: "us".into(),
        }
    }

    #[test]
    fn an_honest_opening_is_accepted_with_what_follows_left_over() {
        let nonce = [7u8; NONCE_BYTES];
        let line = challenge_line(&nonce);
        let end = line_end(&line).unwrap().unwrap();
        assert_eq!(parse_challenge(&line[..end - 1]).unwrap(), nonce);
        let mut buf = answer(SECRET, &nonce, &peer());
        let n = buf.len();
        buf.extend_from_slice(b"GET /v1/relay/s1 HTTP/1.1\r\n");
        for cut in 0..n {
            assert_eq!(verify_answer(SECRET, &nonce, &buf[..cut]).unwrap(), None);
        }
        assert_eq!(
            verify_answer(SECRET, &nonce, &buf).unwrap(),
            Some((peer(), n))
        );
    }

    #[test]
    fn wrong_secret_other_nonce_and_tampering_are_refused() {
        let nonce = [1u8; NONCE_BYTES];
        let good = answer(SECRET, &nonce, &peer());
        let other_secret = answer(b"another secret of thirty-two bytes!", &nonce, &peer());
        assert_eq!(
            verify_answer(SECRET, &nonce, &other_secret),
            Err(LinkError::BadProof)
        );
        assert_eq!(
            verify_answer(SECRET, &[2u8; NONCE_BYTES], &good),
            Err(LinkError::BadProof),
            "a recorded answer does not fit a new challenge"
        );
        let tampered = String::from_utf8(good.clone())
            .unwrap()
            .replace("mobile", "desktop");
        assert_eq!(
            verify_answer(SECRET, &nonce, tampered.as_bytes()),
            Err(LinkError::BadProof)
        );
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(verify_answer(SECRET, &nonce, http).is_err());
        assert_eq!(
            verify_answer(SECRET, &nonce, &[b'a'; MAX_LINE]),
            Err(LinkError::LineTooLong)
        );
    }

    #[test]
    fn the_longest_description_the_relay_sends_fits_a_line() {
        // Node ids and regions are at most 64 characters, session ids 128, roles 32, each of a
        // set JSON never escapes.
        let longest = Carried {
            from: "n".repeat(64),
            session: "s".repeat(128),
            ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            role: Some("r".repeat(32)),
            region: "g".repeat(64),
        };
        let nonce = [0u8; NONCE_BYTES];
        let a = answer(SECRET, &nonce, &longest);
        let first = line_end(&a).unwrap().unwrap();
        assert!(first < MAX_LINE / 4, "{first}");
        assert_eq!(
            verify_answer(SECRET, &nonce, &a).unwrap(),
            Some((longest, a.len()))
        );
    }

    #[test]
    fn verdicts_and_challenges() {
        assert_eq!(parse_verdict(b"RRLINK/1 ok"), Ok(()));
        let refused = refused_line("bad_proof");
        assert_eq!(
            parse_verdict(&refused[..refused.len() - 1]),
            Err(LinkError::Refused("bad_proof".into()))
        );
        assert_eq!(parse_verdict(b"HTTP/1.1 200 OK"), Err(LinkError::BadAnswer));
        assert!(parse_challenge(b"RRLINK/1 zz").is_err());
        assert!(parse_challenge(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_challenge(b"RRLINK/1 0011").is_err(), "too short");
    }
}
