//! The stream of a server-side connection before it is upgraded: the HTTP phase, the answers
//! written on it, the bridge, a cluster carry's client side, a handoff to another core. Plain
//! TCP, or TCP with a TLS session once the TLS listener's handshake is done; monoio's
//! `AsyncReadRent`/`AsyncWriteRent`, so code written for a `TcpStream` runs on either.
#![forbid(unsafe_code)]

use super::socket::{fill, init_bytes, iovec_slices};
use super::tls::{self, Refused, TlsSession};
use crate::http::write::AnswerStream;
use crate::stats::access::Note;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io::IoSlice;
use std::sync::Arc;

pub struct ServerStream {
    tcp: TcpStream,
    tls: Option<Box<TlsSession>>,
    /// `Strict-Transport-Security: max-age` for answers written on it (TLS only; 0: none).
    hsts_max_age: u64,
    /// Header lines every answer written on it carries (CORS, `bridge::cors`); not handed
    /// over with the connection: the core it goes to reads the head again and sets them.
    answer_lines: Option<Box<str>>,
    /// What the access log says of this connection (`log.access` on, public listener): filled
    /// in by the HTTP phase, read by a refusal's line, moved into the peer on upgrade.
    access: Option<Box<Note>>,
}

impl From<TcpStream> for ServerStream {
    fn from(tcp: TcpStream) -> ServerStream {
        ServerStream {
            tcp,
            tls: None,
            hsts_max_age: 0,
            answer_lines: None,
            access: None,
        }
    }
}

impl ServerStream {
    /// A connection handed over from another core, with the TLS session it had there.
    pub fn from_parts(tcp: TcpStream, tls: Option<Box<TlsSession>>, hsts_max_age: u64) -> Self {
        let hsts_max_age = if tls.is_some() { hsts_max_age } else { 0 };
        ServerStream {
            tcp,
            tls,
            hsts_max_age,
            answer_lines: None,
            access: None,
        }
    }

    /// The TCP stream and the TLS session, to seat the connection or hand it over.
    pub fn into_parts(self) -> (TcpStream, Option<Box<TlsSession>>) {
        (self.tcp, self.tls)
    }

    pub fn tls(&self) -> Option<&TlsSession> {
        self.tls.as_deref()
    }

    /// Makes every answer written on this stream from now on carry `lines` (each ending in
    /// CRLF; empty for none).
    pub fn set_answer_lines(&mut self, lines: String) {
        self.answer_lines = (!lines.is_empty()).then(|| lines.into_boxed_str());
    }

    /// Starts the access log's note of this connection (`None`: the log is off).
    pub fn set_access(&mut self, note: Option<Note>) {
        self.access = note.map(Box::new);
    }

    /// The access log's note, to fill in (`None` when the log is off).
    pub fn access_mut(&mut self) -> Option<&mut Note> {
        self.access.as_deref_mut()
    }

    /// The note, moved out: the upgraded connection's peer keeps it.
    pub fn take_access(&mut self) -> Option<Box<Note>> {
        self.access.take()
    }

    /// The `Strict-Transport-Security` value for answers on this stream, if it takes one.
    pub fn hsts(&self) -> Option<String> {
        (self.tls.is_some() && self.hsts_max_age > 0)
            .then(|| format!("max-age={}", self.hsts_max_age))
    }

    /// Runs the TLS handshake; from then on the stream reads and writes through the session.
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        hsts_max_age: u64,
    ) -> Result<(), Refused> {
        let session = tls::accept(&self.tcp, config).await?;
        self.tls = Some(session);
        self.hsts_max_age = hsts_max_age;
        Ok(())
    }
}

impl AnswerStream for ServerStream {
    fn hsts(&self) -> Option<String> {
        ServerStream::hsts(self)
    }

    fn answer_lines(&self) -> Option<&str> {
        self.answer_lines.as_deref()
    }

    fn access_note(&self) -> Option<&Note> {
        self.access.as_deref()
    }
}

impl AsyncReadRent for ServerStream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let Some(tls) = &self.tls else {
            return self.tcp.read(buf).await;
        };
        let mut at = 0;
        let room = buf.bytes_total();
        let r = tls
            .read(&self.tcp, room, &mut |b| at += fill(&mut buf, at, b))
            .await;
        (r, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        if self.tls.is_some() {
            // Nothing reads a server stream vectored; the TLS path does not pretend to.
            return (Err(std::io::ErrorKind::Unsupported.into()), buf);
        }
        self.tcp.readv(buf).await
    }
}

impl AsyncWriteRent for ServerStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let Some(tls) = &self.tls else {
            return self.tcp.write(buf).await;
        };
        let r = tls
            .write(&self.tcp, &[IoSlice::new(init_bytes(&buf))])
            .await;
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let Some(tls) = &self.tls else {
            return self.tcp.writev(buf).await;
        };
        let r = {
            let slices = iovec_slices(&buf);
            tls.write(&self.tcp, slices).await
        };
        (r, buf)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match &self.tls {
            Some(tls) => tls.flush(&self.tcp).await,
            None => self.tcp.flush().await,
        }
    }

    /// Over TLS, close_notify first, then FIN.
    async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tls) = &self.tls {
            tls.close_notify(&self.tcp).await?;
        }
        self.tcp.shutdown().await
    }
}
