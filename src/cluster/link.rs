//! The node-to-node link's opening, without I/O.
//!
//! A node that carries a peer to the session's owner opens a TCP connection to the owner's
//! `cluster.internal_listen`. Each side proves it holds `cluster.secret` over a fresh nonce
//! the other side chose, so neither a stranger on the internal port nor something that took
//! the owner's address gets anything it could use:
//!
//! ```text
//! owner   -> carrier  RRLINK/2 <owner nonce>
//! carrier -> owner    <peer description, one JSON line>
//!                     <carrier nonce> <carrier proof>
//! owner   -> carrier  RRLINK/2 ok <owner proof>        (or: RRLINK/2 refused <why>)
//! carrier -> owner    the client's own bytes, then both ways untouched
//! ```
//!
//! Both proofs are HMAC-SHA256 keyed with the secret over both nonces and the description,
//! each behind its own direction label, so a proof one side made never fits the other. The
//! owner computes nothing for a peer that has not proved itself first (it is never a MAC
//! oracle), and the carrier sends the client's request (its token, cookies, body) only to an
//! owner that has proved itself. Fresh nonces on both sides mean a recorded opening, from
//! either side, cannot be replayed.

use crate::runtime::rng::hex;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const NONCE_BYTES: usize = 16;
/// Longest line either side sends; a longer one is refused before it is parsed.
pub const MAX_LINE: usize = 2048;
/// The wire version; a peer speaking another one is refused with a message naming both.
pub const VERSION: &str = "RRLINK/2";
const CHALLENGE: &str = "RRLINK/2 ";
const OK: &str = "RRLINK/2 ok ";
const REFUSED: &str = "RRLINK/2 refused ";
/// Direction labels bound into each MAC: the carrier's proof and the owner's are over the same
/// data, so without them one could be sent back as the other.
const CARRIER_LABEL: &[u8] = b"ringrelay-link/2 carrier\n";
const OWNER_LABEL: &[u8] = b"ringrelay-link/2 owner\n";
/// Longest refusal reason a carrier repeats in its log (the owner's text is not trusted).
const MAX_REASON: usize = 32;

/// The peer description is the session layer's `Carried` (it travels in a handoff too).
pub use crate::session::handoff::Carried;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the opening line is not a link challenge")]
    NotAChallenge,
    #[error(
        "the owner speaks link version {0}, this node {VERSION}: run one version on every node"
    )]
    Version(String),
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the peer description is not valid JSON: {0}")]
    BadDescription(String),
    #[error("the proof does not match: wrong or missing cluster.secret")]
    BadProof,
    #[error("the owner did not prove it holds cluster.secret: not carrying the peer to it")]
    BadOwnerProof,
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
            LinkError::Version(_) => "version",
            LinkError::LineTooLong => "line_too_long",
            LinkError::BadDescription(_) => "bad_description",
            LinkError::BadProof => "bad_proof",
            LinkError::BadOwnerProof => "bad_owner_proof",
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

/// Lower-case hex only, as both sides write it: one spelling per value.
fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn nonce_from_hex(s: &str) -> Option<[u8; NONCE_BYTES]> {
    unhex(s)?.try_into().ok()
}

pub fn challenge_line(nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    format!("{CHALLENGE}{}\n", hex(nonce)).into_bytes()
}

pub fn refused_line(code: &str) -> Vec<u8> {
    format!("{REFUSED}{code}\n").into_bytes()
}

/// The nonce in the owner's first line (`line` without its `\n`). An owner of another link
/// version is named as such, so a mixed fleet says what is wrong.
pub fn parse_challenge(line: &[u8]) -> Result<[u8; NONCE_BYTES], LinkError> {
    let s = std::str::from_utf8(line).map_err(|_| LinkError::NotAChallenge)?;
    if let Some(nonce) = s.strip_prefix(CHALLENGE) {
        return nonce_from_hex(nonce).ok_or(LinkError::NotAChallenge);
    }
    match s.split_once(' ') {
        Some((version, _))
            if version.starts_with("RRLINK/")
                && version.len() <= 16
                && version.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(LinkError::Version(version.to_string()))
        }
        _ => Err(LinkError::NotAChallenge),
    }
}

/// Both nonces in a fixed order (fixed lengths, so their concatenation is unambiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonces {
    pub owner: [u8; NONCE_BYTES],
    pub carrier: [u8; NONCE_BYTES],
}

fn mac(secret: &[u8], label: &[u8], nonces: &Nonces, description: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(&nonces.owner);
    m.update(&nonces.carrier);
    m.update(description);
    m
}

/// What the carrier expects back: the owner's proof over the opening the carrier sent.
#[derive(Clone)]
pub struct OwnerProof(Hmac<Sha256>);

impl OwnerProof {
    /// Reads the owner's verdict line (without its `\n`): `Ok` only for an `ok` whose proof
    /// verifies.
    pub fn check_verdict(&self, line: &[u8]) -> Result<(), LinkError> {
        let s = std::str::from_utf8(line).map_err(|_| LinkError::BadAnswer)?;
        if let Some(proof) = s.strip_prefix(OK) {
            let proof = unhex(proof).ok_or(LinkError::BadOwnerProof)?;
            return self
                .0
                .clone()
                .verify_slice(&proof)
                .map_err(|_| LinkError::BadOwnerProof);
        }
        if s == OK.trim_end() {
            return Err(LinkError::BadOwnerProof);
        }
        match s.strip_prefix(REFUSED) {
            // Repeated in this node's log: only a short, plain reason.
            Some(code) => Err(LinkError::Refused(
                code.chars()
                    .take(MAX_REASON)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect(),
            )),
            None => Err(LinkError::BadAnswer),
        }
    }
}

/// The carrier's answer to the owner's challenge (the description line, then its nonce and
/// proof), and what the owner must prove back.
pub fn answer(
    secret: &[u8],
    owner_nonce: &[u8; NONCE_BYTES],
    carrier_nonce: &[u8; NONCE_BYTES],
    carried: &Carried,
) -> (Vec<u8>, OwnerProof) {
    let description = serde_json::to_string(carried).expect("a peer description serialises");
    let nonces = Nonces {
        owner: *owner_nonce,
        carrier: *carrier_nonce,
    };
    let d = description.as_bytes();
    let proof = hex(&mac(secret, CARRIER_LABEL, &nonces, d)
        .finalize()
        .into_bytes());
    let expect = OwnerProof(mac(secret, OWNER_LABEL, &nonces, d));
    let line = format!("{description}\n{} {proof}\n", hex(carrier_nonce));
    (line.into_bytes(), expect)
}

/// A carrier's answer that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub carried: Carried,
    /// Bytes of the buffer the answer took (what follows is the client's own).
    pub used: usize,
    /// The owner's `ok` line, with its proof, to send back.
    pub ok: Vec<u8>,
}

/// Checks a carrier's answer to the challenge `owner_nonce`: `Ok(None)` while it is
/// incomplete.
pub fn verify_answer(
    secret: &[u8],
    owner_nonce: &[u8; NONCE_BYTES],
    buf: &[u8],
) -> Result<Option<Accepted>, LinkError> {
    let Some(first) = line_end(buf)? else {
        return Ok(None);
    };
    let Some(second) = line_end(&buf[first..])? else {
        return Ok(None);
    };
    let description = &buf[..first - 1];
    let (carrier_nonce, proof) = std::str::from_utf8(&buf[first..first + second - 1])
        .ok()
        .and_then(|l| l.split_once(' '))
        .and_then(|(n, p)| Some((nonce_from_hex(n)?, unhex(p)?)))
        .ok_or(LinkError::BadProof)?;
    let nonces = Nonces {
        owner: *owner_nonce,
        carrier: carrier_nonce,
    };
    // Checked before the description is parsed: nothing unauthenticated is interpreted, and
    // the owner's own proof is computed only for a carrier that proved itself.
    mac(secret, CARRIER_LABEL, &nonces, description)
        .verify_slice(&proof)
        .map_err(|_| LinkError::BadProof)?;
    let carried = serde_json::from_slice(description)
        .map_err(|e| LinkError::BadDescription(e.to_string()))?;
    let owner_proof = mac(secret, OWNER_LABEL, &nonces, description).finalize();
    Ok(Some(Accepted {
        carried,
        used: first + second,
        ok: format!("{OK}{}\n", hex(&owner_proof.into_bytes())).into_bytes(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OWNER: [u8; NONCE_BYTES] = [7u8; NONCE_BYTES];
    const CARRIER: [u8; NONCE_BYTES] = [8u8; NONCE_BYTES];

    fn peer() -> Carried {
        Carried {
            from: "n2".into(),
            session: "s1".into(),
            ip: "127.0.0.9".parse().unwrap(),
            role: Some("mobile".into()),
            region: "us".into(),
        }
    }

    fn verdict(ok: &[u8]) -> &[u8] {
        &ok[..ok.len() - 1]
    }

    #[test]
    fn an_honest_opening_is_accepted_both_ways_with_what_follows_left_over() {
        let line = challenge_line(&OWNER);
        let end = line_end(&line).unwrap().unwrap();
        assert_eq!(parse_challenge(&line[..end - 1]).unwrap(), OWNER);
        let (mut buf, expect) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let n = buf.len();
        buf.extend_from_slice(b"GET /v1/relay/s1 HTTP/1.1\r\n");
        for cut in 0..n {
            assert_eq!(verify_answer(SECRET, &OWNER, &buf[..cut]).unwrap(), None);
        }
        let accepted = verify_answer(SECRET, &OWNER, &buf).unwrap().unwrap();
        assert_eq!((accepted.carried.clone(), accepted.used), (peer(), n));
        assert!(accepted.ok.starts_with(b"RRLINK/2 ok "));
        assert_eq!(expect.check_verdict(verdict(&accepted.ok)), Ok(()));
    }

    #[test]
    fn wrong_secret_other_challenge_and_tampering_are_refused_by_the_owner() {
        let (good, _) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let other_secret = b"another secret of thirty-two bytes!";
        let (forged, _) = answer(other_secret, &OWNER, &CARRIER, &peer());
        assert_eq!(
            verify_answer(SECRET, &OWNER, &forged),
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
            verify_answer(SECRET, &OWNER, tampered.as_bytes()),
            Err(LinkError::BadProof)
        );
        // Another carrier nonce under the same proof.
        let swapped = String::from_utf8(good)
            .unwrap()
            .replace(&hex(&CARRIER), &hex(&[9u8; NONCE_BYTES]));
        assert_eq!(
            verify_answer(SECRET, &OWNER, swapped.as_bytes()),
            Err(LinkError::BadProof)
        );
        // RRLINK/1's answer: a proof line with no carrier nonce.
        let v1 = format!("{{\"from\":\"n2\"}}\n{}\n", "00".repeat(32));
        assert_eq!(
            verify_answer(SECRET, &OWNER, v1.as_bytes()),
            Err(LinkError::BadProof)
        );
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(verify_answer(SECRET, &OWNER, http).is_err());
        assert_eq!(
            verify_answer(SECRET, &OWNER, &[b'a'; MAX_LINE]),
            Err(LinkError::LineTooLong)
        );
    }

    #[test]
    fn a_forged_or_absent_owner_proof_is_refused_by_the_carrier() {
        let (_, expect) = answer(SECRET, &OWNER, &CARRIER, &peer());
        // What an owner that does not hold the secret can send.
        assert_eq!(
            expect.check_verdict(b"RRLINK/2 ok"),
            Err(LinkError::BadOwnerProof)
        );
        assert_eq!(
            expect.check_verdict(b"RRLINK/2 ok "),
            Err(LinkError::BadOwnerProof)
        );
        let zeros = format!("RRLINK/2 ok {}", "00".repeat(32));
        assert_eq!(
            expect.check_verdict(zeros.as_bytes()),
            Err(LinkError::BadOwnerProof)
        );
        assert_eq!(
            expect.check_verdict(b"RRLINK/2 ok zz"),
            Err(LinkError::BadOwnerProof)
        );
        // An owner with another secret.
        let (buf, _) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let other = b"another-secret-of-32-bytes-or-more";
        let (other_buf, _) = answer(other, &OWNER, &CARRIER, &peer());
        let accepted = verify_answer(SECRET, &OWNER, &buf).unwrap().unwrap();
        let foreign = verify_answer(other, &OWNER, &other_buf).unwrap().unwrap();
        assert_ne!(accepted.ok, foreign.ok);
        assert_eq!(
            expect.check_verdict(verdict(&foreign.ok)),
            Err(LinkError::BadOwnerProof)
        );
        // What an RRLINK/1 owner says: ok with no proof at all.
        assert_eq!(
            expect.check_verdict(b"RRLINK/1 ok"),
            Err(LinkError::BadAnswer)
        );
    }

    #[test]
    fn a_proof_from_one_direction_never_fits_the_other() {
        let (buf, expect) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let text = String::from_utf8(buf.clone()).unwrap();
        let carrier_proof = text.lines().nth(1).unwrap().split_once(' ').unwrap().1;
        // The carrier's own proof sent back to it as the owner's.
        let reflected = format!("RRLINK/2 ok {carrier_proof}");
        assert_eq!(
            expect.check_verdict(reflected.as_bytes()),
            Err(LinkError::BadOwnerProof)
        );
        // The owner's proof presented to an owner as a carrier's.
        let accepted = verify_answer(SECRET, &OWNER, &buf).unwrap().unwrap();
        let owner_proof = std::str::from_utf8(verdict(&accepted.ok))
            .unwrap()
            .strip_prefix("RRLINK/2 ok ")
            .unwrap();
        let mirrored = text.replace(carrier_proof, owner_proof);
        assert_ne!(mirrored, text);
        assert_eq!(
            verify_answer(SECRET, &OWNER, mirrored.as_bytes()),
            Err(LinkError::BadProof)
        );
    }

    #[test]
    fn a_recorded_owner_proof_does_not_fit_another_carrier_nonce() {
        // An owner impersonator that recorded a real owner's ok for one opening replays it to a
        // carrier that chose a different nonce (same challenge, same peer).
        let (buf, _) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let recorded = verify_answer(SECRET, &OWNER, &buf).unwrap().unwrap().ok;
        let (_, expect) = answer(SECRET, &OWNER, &[1u8; NONCE_BYTES], &peer());
        assert_eq!(
            expect.check_verdict(verdict(&recorded)),
            Err(LinkError::BadOwnerProof)
        );
        // Nor another owner nonce, nor another peer.
        let (_, expect) = answer(SECRET, &[3u8; NONCE_BYTES], &CARRIER, &peer());
        assert_eq!(
            expect.check_verdict(verdict(&recorded)),
            Err(LinkError::BadOwnerProof)
        );
        let mut other = peer();
        other.session = "s2".into();
        let (_, expect) = answer(SECRET, &OWNER, &CARRIER, &other);
        assert_eq!(
            expect.check_verdict(verdict(&recorded)),
            Err(LinkError::BadOwnerProof)
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
        let (a, _) = answer(SECRET, &OWNER, &CARRIER, &longest);
        let first = line_end(&a).unwrap().unwrap();
        assert!(first < MAX_LINE / 4, "{first}");
        let accepted = verify_answer(SECRET, &OWNER, &a).unwrap().unwrap();
        assert_eq!((accepted.carried, accepted.used), (longest, a.len()));
    }

    #[test]
    fn verdicts_challenges_and_versions() {
        let (_, expect) = answer(SECRET, &OWNER, &CARRIER, &peer());
        let refused = refused_line("bad_proof");
        assert_eq!(
            expect.check_verdict(&refused[..refused.len() - 1]),
            Err(LinkError::Refused("bad_proof".into()))
        );
        // The owner's reason is repeated in a log: short and printable only.
        let loud = format!("RRLINK/2 refused \x1b[31m{}", "x".repeat(100));
        match expect.check_verdict(loud.as_bytes()) {
            Err(LinkError::Refused(r)) => {
                assert_eq!(r.len(), MAX_REASON);
                assert!(r.bytes().all(|b| b.is_ascii_graphic()), "{r:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            expect.check_verdict(b"HTTP/1.1 200 OK"),
            Err(LinkError::BadAnswer)
        );
        assert!(parse_challenge(b"RRLINK/2 zz").is_err());
        assert!(parse_challenge(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_challenge(b"RRLINK/2 0011").is_err(), "too short");
        let upper = format!("RRLINK/2 {}", hex(&[0xab; NONCE_BYTES]).to_uppercase());
        assert!(
            parse_challenge(upper.as_bytes()).is_err(),
            "one spelling only"
        );
        let signed = format!("RRLINK/2 +a{}", &hex(&OWNER)[2..]);
        assert!(parse_challenge(signed.as_bytes()).is_err(), "{signed}");
        // An owner still on the first version is named as such.
        let v1 = format!("RRLINK/1 {}", hex(&OWNER));
        let e = parse_challenge(v1.as_bytes()).unwrap_err();
        assert_eq!(e, LinkError::Version("RRLINK/1".into()));
        assert!(e.to_string().contains("RRLINK/1") && e.to_string().contains(VERSION));
        assert_eq!(
            parse_challenge(b"RRLINK/1\x1b x"),
            Err(LinkError::NotAChallenge)
        );
    }
}
