//! Per-IP limiter state carried across a restart (`session.state_dir`) and, later, a live
//! handover: what each address's connection-rate bucket held, so stopping the relay does not
//! hand an attacker a fresh burst. Only buckets that are not full are worth carrying (a full
//! one is what a new entry starts with). Open-connection and unfinished-handshake counts are
//! not carried: they count connections, and after a restart there are none (a handover that
//! adopts connections charges them again as it adopts them).
//!
//! ```text
//! version u8 | taken at (unix ms) u64 | count u32 | count × (family u8: 4 or 6 | address 4 or 16 bytes | tokens f64)
//! ```
//! Little-endian, without I/O; the state file wraps it in a checksummed record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The encoding this build writes; a newer one is refused.
pub const VERSION: u8 = 1;

/// One address's (IPv6: one /64's) connection-rate bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedBucket {
    /// The per-IP table's key (`limits::ip::key`): an IPv4 address or an IPv6 /64.
    pub key: IpAddr,
    /// Connections it could still open at once when it was taken.
    pub tokens: f64,
}

/// One worker's buckets, and when they were taken: the time until they are put back is time
/// they refill, as it would have been had the relay kept running.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SavedLimits {
    pub taken_unix_ms: u64,
    pub buckets: Vec<SavedBucket>,
}

/// Why bytes are not a limiter state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedLimitsError {
    #[error("limiter state in version {0}, newer than this build's {VERSION}")]
    Newer(u8),
    #[error("limiter state cut short")]
    Truncated,
    #[error("limiter state: an address family that is neither 4 nor 6")]
    Family,
    #[error("limiter state: a bucket level that is not a finite number of zero or more")]
    Level,
    #[error("limiter state: a count larger than its bytes")]
    Count,
    #[error("limiter state: {0} byte(s) after its last bucket")]
    Trailing(usize),
}

pub fn encode(s: &SavedLimits) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + s.buckets.len() * 25);
    out.push(VERSION);
    out.extend_from_slice(&s.taken_unix_ms.to_le_bytes());
    out.extend_from_slice(&(s.buckets.len() as u32).to_le_bytes());
    for b in &s.buckets {
        put_ip(&mut out, b.key);
        out.extend_from_slice(&b.tokens.to_le_bytes());
    }
    out
}

/// Reads what [`encode`] wrote, all of it or nothing.
/// An address as this encoding (and the upgrade's share, `relay::handover::wire`) writes it:
/// its family, 4 or 6, then its octets.
pub fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<SavedLimits, SavedLimitsError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SavedLimitsError> {
        let s = bytes.get(at..at + n).ok_or(SavedLimitsError::Truncated)?;
        at += n;
        Ok(s)
    };
    let version = take(1)?[0];
    if version > VERSION {
        return Err(SavedLimitsError::Newer(version));
    }
    let taken_unix_ms = u64::from_le_bytes(take(8)?.try_into().unwrap());
    let count = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    // The smallest bucket is 13 bytes: a count past that must not size an allocation.
    if count > (bytes.len() - 13) / 13 {
        return Err(SavedLimitsError::Count);
    }
    let mut buckets = Vec::with_capacity(count);
    for _ in 0..count {
        let key = match take(1)?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(4)?).unwrap())),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(16)?).unwrap())),
            _ => return Err(SavedLimitsError::Family),
        };
        let tokens = f64::from_le_bytes(take(8)?.try_into().unwrap());
        if !tokens.is_finite() || tokens < 0.0 {
            return Err(SavedLimitsError::Level);
        }
        buckets.push(SavedBucket { key, tokens });
    }
    let left = bytes.len() - at;
    if left != 0 {
        return Err(SavedLimitsError::Trailing(left));
    }
    Ok(SavedLimits {
        taken_unix_ms,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedLimits {
        SavedLimits {
            taken_unix_ms: 1_800_000_000_123,
            buckets: vec![
                SavedBucket {
                    key: "10.0.0.1".parse().unwrap(),
                    tokens: 0.0,
                },
                SavedBucket {
                    key: "2001:db8::".parse().unwrap(),
                    tokens: 2.75,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(decode(&encode(&s)), Ok(s));
        let empty = SavedLimits::default();
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(SavedLimitsError::Trailing(1)));
    }

    #[test]
    fn bad_fields_are_refused() {
        let bytes = encode(&sample());
        let mut newer = bytes.clone();
        newer[0] = VERSION + 1;
        assert_eq!(decode(&newer), Err(SavedLimitsError::Newer(VERSION + 1)));
        let mut family = bytes.clone();
        family[13] = 5;
        assert_eq!(decode(&family), Err(SavedLimitsError::Family));
        // The first bucket's level: NaN, infinite and negative are refused.
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let mut level = bytes.clone();
            level[18..26].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(decode(&level), Err(SavedLimitsError::Level), "{bad}");
        }
        // A count no bytes could hold allocates nothing.
        let mut count = bytes;
        count[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&count), Err(SavedLimitsError::Count));
    }
}
