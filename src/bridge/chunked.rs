//! An incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 section
//! 7.1). It is fed whatever a read returned, so a body cut at any byte decodes the same, and
//! it refuses rather than guesses: a bad size line, a missing CRLF or a body over the limit
//! ends the request with 400 or 413.

use thiserror::Error;

/// A size line (hex digits and any chunk extensions) longer than this is refused: nothing
/// legitimate needs more, and the line is held until its CRLF arrives.
pub const MAX_SIZE_LINE: usize = 1024;
/// Trailer fields are read and dropped (the bridge does not forward them); their total is
/// bounded like a request head.
pub const MAX_TRAILER_BYTES: usize = 8 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkedError {
    #[error("malformed chunked body")]
    Malformed,
    #[error("chunked body over the limit")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a size line; `len` bytes of it seen so far.
    Size {
        value: u64,
        digits: u32,
        ext: bool,
        len: usize,
    },
    /// The CR of a line has been seen; its LF must follow.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Reading trailer lines; `line` bytes of the current one, `total` of them all.
    Trailer {
        line: usize,
        total: usize,
        cr: bool,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
                ext: false,
                len: 0,
            },
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, appending body bytes to `body`, which may not grow past `max`.
    /// Returns how many bytes of `input` were consumed; fewer than all only once the body
    /// is complete (what follows belongs to nobody: the connection closes after the answer).
    pub fn feed(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, ChunkedError> {
        use ChunkedError::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Size {
                    value,
                    digits,
                    ext,
                    len,
                } => {
                    if len >= MAX_SIZE_LINE {
                        return Err(Malformed);
                    }
                    let len = len + 1;
                    match (b, ext) {
                        (b'\r', _) if digits > 0 => State::SizeLf { value },
                        (b';', false) if digits > 0 => State::Size {
                            value,
                            digits,
                            ext: true,
                            len,
                        },
                        (_, true) if b == b'\t' || (b >= 0x20 && b != 0x7f) => State::Size {
                            value,
                            digits,
                            ext,
                            len,
                        },
                        (_, false) => {
                            let d = (b as char).to_digit(16).ok_or(Malformed)?;
                            // 16 hex digits already exceed any limit we could be given.
                            if digits >= 15 {
                                return Err(TooLarge);
                            }
                            State::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                                len,
                            }
                        }
                        _ => return Err(Malformed),
                    }
                }
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    if value == 0 {
                        State::Trailer {
                            line: 0,
                            total: 0,
                            cr: false,
                        }
                    } else {
                        if body.len() as u64 + value > max as u64 {
                            return Err(TooLarge);
                        }
                        State::Data { left: value }
                    }
                }
                State::Data { left } => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                    ext: false,
                    len: 0,
                },
                State::DataCr | State::DataLf => return Err(Malformed),
                State::Trailer { line, total, cr } => {
                    if total >= MAX_TRAILER_BYTES {
                        return Err(Malformed);
                    }
                    match (b, cr) {
                        (b'\n', true) if line == 0 => State::Done,
                        (b'\n', true) => State::Trailer {
                            line: 0,
                            total: total + 1,
                            cr: false,
                        },
                        (b'\r', false) => State::Trailer {
                            line,
                            total: total + 1,
                            cr: true,
                        },
                        (_, true) => return Err(Malformed),
                        (b'\n', false) => return Err(Malformed),
                        _ => State::Trailer {
                            line: line + 1,
                            total: total + 1,
                            cr: false,
                        },
                    }
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_cut(input: &[u8], cut: usize, max: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut used = d.feed(&input[..cut], &mut body, max)?;
        if used == cut {
            used += d.feed(&input[cut..], &mut body, max)?;
        }
        assert!(d.is_done(), "not done: {:?}", d.state);
        Ok((body, used))
    }

    #[test]
    fn decodes_the_same_at_every_cut() {
        let input =
            b"5;name=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET";
        let want: Vec<u8> = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
        for cut in 0..=input.len() {
            let (body, used) = decode_cut(input, cut, 64).unwrap();
            assert_eq!(body, want, "cut {cut}");
            assert_eq!(used, input.len() - 3, "cut {cut}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_unambiguously() {
        let bad: &[&[u8]] = &[
            b"x\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\n",
            b" 5\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b";ext\r\n",
            b"0\r\nX-T: 1\n\r\n",
        ];
        for input in bad {
            let mut d = ChunkedDecoder::default();
            let r = d.feed(input, &mut Vec::new(), 64);
            assert_eq!(
                r,
                Err(ChunkedError::Malformed),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = [b"1;".as_slice(), &[b'a'; MAX_SIZE_LINE]].concat();
        let r = ChunkedDecoder::default().feed(&long_line, &mut Vec::new(), 64);
        assert_eq!(r, Err(ChunkedError::Malformed));
    }

    #[test]
    fn the_limit_counts_decoded_bytes_before_they_are_read() {
        let mut body = Vec::new();
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"4\r\nabcd\r\n", &mut body, 5), Ok(9));
        // The next size line alone is enough to refuse.
        assert_eq!(d.feed(b"2\r\n", &mut body, 5), Err(ChunkedError::TooLarge));
        let huge = ChunkedDecoder::default().feed(b"ffffffffffffffffff\r\n", &mut Vec::new(), 5);
        assert_eq!(huge, Err(ChunkedError::TooLarge));
    }
}
