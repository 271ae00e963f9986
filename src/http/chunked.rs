//! An incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 section 7.1),
//! shared by the bridge (request bodies) and the load generator (response bodies). It is fed
//! whatever a read returned, keeps its place byte by byte (nothing is buffered), so a body
//! cut at any byte decodes the same, and it refuses rather than guesses: a bad size line, a
//! missing CRLF or a body over its limit is an error, found on the size line before the
//! chunk is read.

use thiserror::Error;

/// A size line (hex digits and any chunk extensions) longer than this is refused: nothing
/// legitimate needs more, and the line is held until its CRLF arrives.
pub const MAX_SIZE_LINE: usize = 1024;
/// Trailer fields are read and dropped (nobody here forwards them); their total is bounded
/// like a request head.
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
    /// Decoded bytes so far, and the most allowed.
    total: u64,
    max: u64,
}

const START: State = State::Size {
    value: 0,
    digits: 0,
    ext: false,
    len: 0,
};

impl ChunkedDecoder {
    /// A decoder that refuses a body of more than `max` decoded bytes.
    pub fn with_limit(max: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: START,
            total: 0,
            max,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, handing each piece of body data to `data`. Returns how many bytes of
    /// `input` were consumed (all of them until the body ends; what follows its end is left)
    /// and whether the body is complete.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok((i, true)),
                // Data is handed on as a run, not byte by byte.
                State::Data { left } => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    data(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::Size {
                    value,
                    digits,
                    ext,
                    len,
                } => size_line_byte(value, digits, ext, len, b)?,
                State::SizeLf { value } => self.end_size_line(value, b)?,
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => START,
                State::DataCr | State::DataLf => return Err(ChunkedError::Malformed),
                State::Trailer { line, total, cr } => trailer_byte(line, total, cr, b)?,
            };
            i += 1;
        }
        Ok((i, self.is_done()))
    }

    /// The LF that ends a size line: a zero size starts the trailer, any other charges the
    /// chunk to the limit here, before a byte of it is read, and starts its data.
    fn end_size_line(&mut self, value: u64, b: u8) -> Result<State, ChunkedError> {
        if b != b'\n' {
            return Err(ChunkedError::Malformed);
        }
        if value == 0 {
            return Ok(State::Trailer {
                line: 0,
                total: 0,
                cr: false,
            });
        }
        self.total += value;
        if self.total > self.max {
            return Err(ChunkedError::TooLarge);
        }
        Ok(State::Data { left: value })
    }
}

/// One byte of a size line: hex digits, then optionally `;` and extensions (printable bytes,
/// skipped), up to its CR. The line is bounded so a sender cannot make it endless.
fn size_line_byte(
    value: u64,
    digits: u32,
    ext: bool,
    len: usize,
    b: u8,
) -> Result<State, ChunkedError> {
    use ChunkedError::*;
    if len >= MAX_SIZE_LINE {
        return Err(Malformed);
    }
    let len = len + 1;
    Ok(match (b, ext) {
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
    })
}

/// One byte of the trailer: lines are read and dropped, each ended by CRLF, the whole
/// bounded by `MAX_TRAILER_BYTES`; an empty line ends the body.
fn trailer_byte(line: usize, total: usize, cr: bool, b: u8) -> Result<State, ChunkedError> {
    if total >= MAX_TRAILER_BYTES {
        return Err(ChunkedError::Malformed);
    }
    Ok(match (b, cr) {
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
        (_, true) | (b'\n', false) => return Err(ChunkedError::Malformed),
        _ => State::Trailer {
            line: line + 1,
            total: total + 1,
            cr: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_cut(input: &[u8], cut: usize, max: u64) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::with_limit(max);
        let mut body = Vec::new();
        let (mut used, mut done) = d.feed(&input[..cut], |b| body.extend_from_slice(b))?;
        if !done {
            assert_eq!(used, cut);
            let (more, end) = d.feed(&input[cut..], |b| body.extend_from_slice(b))?;
            (used, done) = (used + more, end);
        }
        assert!(done, "not done: {:?}", d.state);
        Ok((body, used))
    }

    fn feed_all(d: &mut ChunkedDecoder, input: &[u8]) -> Result<(usize, bool), ChunkedError> {
        d.feed(input, |_| {})
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
            let r = feed_all(&mut ChunkedDecoder::with_limit(64), input);
            assert_eq!(
                r,
                Err(ChunkedError::Malformed),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = [b"1;".as_slice(), &[b'a'; MAX_SIZE_LINE]].concat();
        let r = feed_all(&mut ChunkedDecoder::with_limit(64), &long_line);
        assert_eq!(r, Err(ChunkedError::Malformed));
    }

    #[test]
    fn the_limit_counts_decoded_bytes_before_they_are_read() {
        let mut d = ChunkedDecoder::with_limit(5);
        assert_eq!(feed_all(&mut d, b"4\r\nabcd\r\n"), Ok((9, false)));
        // The next size line alone is enough to refuse.
        assert_eq!(feed_all(&mut d, b"2\r\n"), Err(ChunkedError::TooLarge));
        let huge = feed_all(
            &mut ChunkedDecoder::with_limit(u64::MAX),
            b"ffffffffffffffffff\r\n",
        );
        assert_eq!(huge, Err(ChunkedError::TooLarge));
    }
}
