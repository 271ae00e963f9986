//! Incremental UTF-8 validation of text messages that arrive in pieces.
//!
//! Fails as soon as a byte makes the sequence invalid (Autobahn-style "fail fast"), so a text
//! message is refused before the bad chunk is forwarded.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid UTF-8 in text")]
pub struct Utf8Error;

/// Carries at most one incomplete code point between calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

fn char_width(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    ///
    /// Kept out of line: inlined into the decoder, its loop over a large text message ran
    /// up to 5 % slower or faster as the caller's code moved (`cargo bench --bench codec --
    /// forward/text/64KiB`); one copy keeps that figure where the validator's own bench has it.
    #[inline(never)]
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let width = char_width(self.partial[0]);
            let take = (width - have).min(bytes.len());
            let mut tmp = self.partial;
            tmp[have..have + take].copy_from_slice(&bytes[..take]);
            match std::str::from_utf8(&tmp[..have + take]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    self.partial = tmp;
                    self.partial_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            bytes = &bytes[take..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// The message ended: an incomplete code point left over is invalid.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let ok = self.partial_len == 0;
        self.partial_len = 0;
        if ok {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_whole(bytes: &[u8]) -> bool {
        std::str::from_utf8(bytes).is_ok()
    }

    fn valid_split(bytes: &[u8], cuts: &[usize]) -> bool {
        let mut v = Utf8Validator::new();
        let mut last = 0;
        for &c in cuts {
            if v.feed(&bytes[last..c]).is_err() {
                return false;
            }
            last = c;
        }
        v.feed(&bytes[last..]).is_ok() && v.finish().is_ok()
    }

    #[test]
    fn agrees_with_std_at_every_single_cut() {
        let samples: [&[u8]; 8] = [
            "héllo wörld €𝄞".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"abc\xf0\x9f\x98",
            b"\xe0\x80\xaf",
            b"\xf0\x9f\x98\x80\xf0\x9f\x98\x80",
        ];
        for s in samples {
            for cut in 0..=s.len() {
                assert_eq!(valid_split(s, &[cut]), valid_whole(s), "{s:?} cut {cut}");
            }
            let all: Vec<usize> = (1..s.len()).collect();
            assert_eq!(valid_split(s, &all), valid_whole(s), "{s:?} byte by byte");
        }
    }

    #[test]
    fn fails_fast_on_the_first_bad_byte() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xce").is_ok());
        assert_eq!(v.feed(b"\x41"), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        // 0xF4 0x90 can never start a valid sequence (over U+10FFFF): refused before more arrives.
        assert_eq!(v.feed(b"\xf4\x90"), Err(Utf8Error));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_and_cuts_agree_with_std(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64), cut_seed: u64) {
            let mut cuts: Vec<usize> = (0..bytes.len()).filter(|i| (cut_seed >> (i % 64)) & 1 == 1).collect();
            cuts.dedup();
            proptest::prop_assert_eq!(valid_split(&bytes, &cuts), valid_whole(&bytes));
        }
    }
}
