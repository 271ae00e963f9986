//! Moving one message body from a reader to a writer through one buffer: what was read past
//! the head first, then reads of at most the buffer's size (never past a Content-Length, so
//! the next request's bytes stay unread), each written before the next read. A chunked body
//! is checked by the crate's decoder as it passes and forwarded as it came; a body that
//! breaks the framing stops the move with nothing more written.

use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::time::Duration;

/// Size of each body read.
pub const BODY_BUF: usize = 16 << 10;

pub enum Frame {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the reader closes (a response without framing).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broke {
    /// The reader closed or failed before the body's end.
    Reader,
    /// The writer failed.
    Writer,
    /// A bad chunk size or framing byte.
    Malformed,
    /// Over the body limit.
    TooLarge,
    /// No byte within the idle timeout.
    Idle,
}

impl From<ChunkedError> for Broke {
    fn from(e: ChunkedError) -> Broke {
        match e {
            ChunkedError::Malformed => Broke::Malformed,
            ChunkedError::TooLarge => Broke::TooLarge,
        }
    }
}

/// Where the body ends in `pending`: (bytes of it there, whether it ends there).
fn take(frame: &mut Frame, pending: &[u8]) -> Result<(usize, bool), Broke> {
    Ok(match frame {
        Frame::Length(left) => {
            let n = (*left).min(pending.len() as u64);
            *left -= n;
            (n as usize, *left == 0)
        }
        Frame::Chunked(d) => d.feed(pending, |_| {})?,
        Frame::UntilClose => (pending.len(), false),
    })
}

/// Writes all of `bytes` (taken and given back).
pub async fn write_all<W: AsyncWriteRent>(
    dst: &mut W,
    bytes: Vec<u8>,
    n: usize,
) -> (Result<(), Broke>, Vec<u8>) {
    if n == 0 {
        return (Ok(()), bytes);
    }
    let (res, slice) = dst.write_all(bytes.slice(0..n)).await;
    let bytes = slice.into_inner();
    if res.is_err() {
        return (Err(Broke::Writer), bytes);
    }
    match dst.flush().await {
        Ok(()) => (Ok(()), bytes),
        Err(_) => (Err(Broke::Writer), bytes),
    }
}

/// Moves the body; returns its bytes as sent. `pending` holds what was read past the head
/// and, after, what followed the body's end. `buf` is the (pooled) read buffer.
pub async fn move_body<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    mut frame: Frame,
    pending: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Result<u64, Broke> {
    let mut moved = 0u64;
    if matches!(frame, Frame::Length(0)) {
        return Ok(0);
    }
    loop {
        if !pending.is_empty() {
            let (n, done) = take(&mut frame, pending)?;
            let (res, mut bytes) = write_all(dst, std::mem::take(pending), n).await;
            res?;
            bytes.drain(..n);
            *pending = bytes;
            moved += n as u64;
            if done {
                return Ok(moved);
            }
        }
        if buf.capacity() < BODY_BUF {
            buf.reserve(BODY_BUF);
        }
        let cap = match frame {
            Frame::Length(left) => (left.min(buf.capacity() as u64)) as usize,
            _ => buf.capacity(),
        };
        buf.clear();
        let read = src.read(std::mem::take(buf).slice_mut(0..cap));
        let (res, slice) = monoio::time::timeout(idle, read)
            .await
            .map_err(|_| Broke::Idle)?;
        *buf = slice.into_inner();
        match res {
            Ok(0) if matches!(frame, Frame::UntilClose) => return Ok(moved),
            Ok(0) | Err(_) => return Err(Broke::Reader),
            Ok(_) => std::mem::swap(pending, buf),
        }
    }
}
