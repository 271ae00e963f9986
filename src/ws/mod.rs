//! The WebSocket codec (RFC 6455), free of I/O so it can be fuzzed and tested with any chunking.
//!
//! The relay never reassembles messages: it parses headers, unmasks payload in place and
//! rewrites a server header in front of it, so the codec works on borrowed byte slices.
#![forbid(unsafe_code)]

pub mod accept;
pub mod client;
pub(crate) mod close;
pub mod frame;
pub mod mask;
pub(crate) mod utf8;

pub use close::{CloseCode, CloseError};
pub use frame::{FrameHeader, HeaderError, OpCode};
pub use utf8::Utf8Validator;
