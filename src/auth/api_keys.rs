//! API keys (`auth.api_keys_file`): long-lived credentials for back ends and scripts that
//! cannot mint a JWT. The file holds only each key's SHA-256, never the key, with what the key
//! grants written as a token's claims would be, so the same [`Claims::grant`] decides for a key
//! as for a token. A key is told apart from a JWT by its prefix [`PREFIX`] (a JWT starts
//! `eyJ`), so a client sends either in the same places (`Authorization: Bearer`, `?token=`,
//! or `?key=`).
//!
//! One line per key; `#` starts a comment line; fields after the hash in any order:
//!
//! ```text
//! sha256:<64 hex digits> sid=<pattern> [role=<role>] [tunnels=<n>] [name=<label>]
//! ```
//!
//! `sid` is `*` (any session), a session id, or a prefix ending in `*` (`team-7-*`). `tunnels`
//! is how many tunnels the key may hold at once (docs/tunnels.md). `name` is for logs.

use sha2::{Digest, Sha256};
use std::fmt;

use super::{Claims, SessionGrant};
use crate::http::route::{valid_role, valid_session_id};

/// What every key starts with: `rrk_` ("ringrelay key").
pub const PREFIX: &str = "rrk_";

/// Random bytes in a key: 256 bits, written as 64 hex digits after the prefix.
pub const KEY_BYTES: usize = 32;

/// Most keys one file may hold: each lookup compares every hash, so the list is bounded.
pub const MAX_KEYS: usize = 10_000;

/// Whether a credential is an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// A fresh key from `random` (which must come from a secure source).
pub fn key_from(random: &[u8; KEY_BYTES]) -> String {
    format!("{PREFIX}{}", hex(random))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one key grants besides its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    hash: [u8; 32],
    pub claims: Claims,
    /// Tunnels the key may hold at once: overrides `tunnel.max_tunnels_per_subject`.
    pub tunnels: Option<u32>,
    /// The operator's label, for logs; never the key.
    pub name: Option<String>,
}

impl KeyEntry {
    /// How the key is named where it must be told apart without being shown: its name, else
    /// the first 8 bytes of its hash in hex.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => hex(&self.hash[..8]),
        }
    }
}

/// The keys in force, built from the file at start and on each reload.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<KeyEntry>,
}

/// A line of the file that does not parse: its number and why (never the line's text, which
/// could be a key pasted in place of its hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct KeyFileError {
    pub line: usize,
    pub reason: String,
}

impl ApiKeys {
    /// Parses the file's text. Every line must parse: a file half understood would refuse
    /// keys its operator meant to grant, or grant keys with less than what was written.
    pub fn parse(text: &str) -> Result<ApiKeys, KeyFileError> {
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason: String| KeyFileError {
                line: i + 1,
                reason,
            };
            let entry = parse_line(line).map_err(fail)?;
            if entries.iter().any(|e| e.hash == entry.hash) {
                return Err(fail("the same key hash is listed twice".into()));
            }
            if entries.len() == MAX_KEYS {
                return Err(fail(format!("more than {MAX_KEYS} keys")));
            }
            entries.push(entry);
        }
        Ok(ApiKeys { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `key`, if it is one of ours. The key's hash is compared with every
    /// entry's in constant time and the scan never stops early, so how long a refusal takes
    /// says nothing about how close a guess came or where in the file its key is.
    pub fn lookup(&self, key: &str) -> Option<&KeyEntry> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if equal(&e.hash, &hash) {
                found = Some(e);
            }
        }
        found
    }
}

/// Keeps the hashes out of logs (they are not secret, but nothing gains from printing them).
impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.entries.len())
            .finish()
    }
}

/// Constant-time equality of two hashes: every byte is looked at whatever differs.
fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The SHA-256 of `key` as the file writes it.
pub fn hash_field(key: &str) -> String {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    format!("sha256:{}", hex(&hash))
}

/// The file's line for `key` with what it grants.
pub fn line_for(
    key: &str,
    sid: &str,
    role: Option<&str>,
    tunnels: Option<u32>,
    name: Option<&str>,
) -> String {
    let mut line = format!("{} sid={sid}", hash_field(key));
    if let Some(r) = role {
        line.push_str(&format!(" role={r}"));
    }
    if let Some(t) = tunnels {
        line.push_str(&format!(" tunnels={t}"));
    }
    if let Some(n) = name {
        line.push_str(&format!(" name={n}"));
    }
    line
}

fn parse_line(line: &str) -> Result<KeyEntry, String> {
    let mut fields = line.split_ascii_whitespace();
    let first = fields.next().unwrap_or_default();
    if is_api_key(first) {
        return Err(
            "this is a key, not its hash: write the line `ringrelay key new` printed \
                    (or sha256:<hex of the key's SHA-256>), and keep the key itself elsewhere"
                .into(),
        );
    }
    let hash = parse_hash(first)?;
    let (mut sid, mut role, mut tunnels, mut name) = (None, None, None, None);
    for field in fields {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not key=value"))?;
        let slot_taken = match k {
            "sid" => sid.replace(parse_sid(v)?).is_some(),
            "role" if valid_role(v) => role.replace(v.to_string()).is_some(),
            "role" => return Err(format!("role {v:?}: expected 1 to 32 of a-z 0-9 _ -")),
            "tunnels" => {
                let n = v
                    .parse::<u32>()
                    .map_err(|_| format!("tunnels {v:?}: expected a whole number"))?;
                tunnels.replace(n).is_some()
            }
            "name" if valid_name(v) => name.replace(v.to_string()).is_some(),
            "name" => return Err("name: expected 1 to 64 of A-Z a-z 0-9 . _ - @".into()),
            _ => return Err(format!("unknown field {k:?} (sid, role, tunnels, name)")),
        };
        if slot_taken {
            return Err(format!("{k} given twice"));
        }
    }
    let sid = sid.ok_or("sid= is required (* for any session)")?;
    Ok(KeyEntry {
        hash,
        // A key does not expire on its own: it goes when its line is removed and the relay
        // reloaded.
        claims: Claims {
            sid,
            role,
            exp: u64::MAX,
        },
        tunnels,
        name,
    })
}

fn parse_hash(field: &str) -> Result<[u8; 32], String> {
    let hex = field
        .strip_prefix("sha256:")
        .ok_or("a line starts with sha256:<64 hex digits>")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256: needs exactly 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `*`, a session id, or a session-id prefix followed by `*`.
pub fn parse_sid(v: &str) -> Result<SessionGrant, String> {
    let bad = || format!("sid {v:?}: expected *, a session id, or a prefix ending in *");
    match v.strip_suffix('*') {
        Some("") => Ok(SessionGrant::Any),
        Some(prefix) if valid_session_id(prefix) => Ok(SessionGrant::Prefix(prefix.to_string())),
        Some(_) => Err(bad()),
        None if valid_session_id(v) => Ok(SessionGrant::One(v.to_string())),
        None => Err(bad()),
    }
}

/// A label safe to print in a log line: no spaces, quotes or control characters.
pub fn valid_name(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "rrk_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_line_made_for_a_key_admits_that_key_only() {
        let line = line_for(KEY, "team-*", Some("agent"), Some(3), Some("ci@build"));
        let keys = ApiKeys::parse(&format!("# comment\n\n{line}\n")).unwrap();
        assert_eq!(keys.len(), 1);
        let e = keys.lookup(KEY).unwrap();
        assert_eq!(e.claims.sid, SessionGrant::Prefix("team-".into()));
        assert_eq!(e.claims.role.as_deref(), Some("agent"));
        assert_eq!((e.tunnels, e.name.as_deref()), (Some(3), Some("ci@build")));
        assert!(keys.lookup(&KEY.replace("ff", "fe")).is_none());
        assert!(keys.lookup("rrk_").is_none());
        // The grant logic is a token's: the prefix covers its sessions, the role is pinned.
        assert_eq!(
            e.claims.grant("team-42", None),
            Ok(Some("agent".to_string()))
        );
        assert!(e.claims.grant("teams", None).is_err());
        assert!(e.claims.grant("team-1", Some("desktop")).is_err());
    }

    #[test]
    fn fields_in_any_order_and_spacing() {
        let hash = hash_field(KEY);
        let keys = ApiKeys::parse(&format!("  {hash}\tname=a   role=b sid=s1  ")).unwrap();
        let e = keys.lookup(KEY).unwrap();
        assert_eq!(e.claims.sid, SessionGrant::One("s1".into()));
        let any = ApiKeys::parse(&format!("{hash} sid=*")).unwrap();
        assert_eq!(any.lookup(KEY).unwrap().claims.sid, SessionGrant::Any);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number_and_never_their_text() {
        let hash = hash_field(KEY);
        let cases = [
            (hash.clone(), "sid= is required"),
            (format!("{KEY} sid=*"), "this is a key"),
            (format!("{hash} sid=a b"), "not key=value"),
            (format!("{hash} sid=*x"), "sid"),
            (format!("{hash} sid=* role=UP"), "role"),
            (format!("{hash} sid=* tunnels=-1"), "tunnels"),
            (format!("{hash} sid=* sid=a"), "twice"),
            (format!("{hash} sid=* colour=red"), "unknown field"),
            ("sha256:abc sid=*".to_string(), "64 hex"),
            ("md5:00 sid=*".to_string(), "sha256:"),
            (format!("{hash} sid=*\n{hash} sid=a"), "twice"),
        ];
        for (text, want) in cases {
            let err = ApiKeys::parse(&format!("# keys\n{text}")).unwrap_err();
            assert!(err.to_string().contains(want), "{text:?}: {err}");
            assert!(err.line >= 2, "{err:?}");
            assert!(!err.to_string().contains(KEY), "{err}");
        }
    }

    #[test]
    fn keys_have_the_prefix_and_their_bytes() {
        let (a, b) = (key_from(&[1; KEY_BYTES]), key_from(&[2; KEY_BYTES]));
        assert!(is_api_key(&a) && a.len() == PREFIX.len() + 2 * KEY_BYTES);
        assert_ne!(a, b);
        assert!(a.ends_with("0101") && b.ends_with("0202"));
        assert!(!is_api_key("eyJhbGciOiJIUzI1NiJ9.e30.x"));
    }

    #[test]
    fn equal_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(equal(&a, &b));
        b[31] ^= 1;
        assert!(!equal(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!equal(&a, &b));
    }
}
