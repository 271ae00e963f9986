//! TCP tunnels (docs/tunnels.md): a client's control connection (`GET /v1/tunnel`, a
//! WebSocket) gets a public port bound on its worker; each TCP connection accepted there is
//! announced to the client with an id, and the client's data connection
//! (`GET /v1/tunnel/accept/{id}`, upgraded to raw bytes) is joined to it with splice through
//! a pipe each way, so the bytes never enter user space.
//!
//! A tunnel lives on the worker that admitted its control connection. Ids and resume keys
//! are drawn so that `session::handoff::owner_core` of them is that worker: a data
//! connection or a resuming control connection accepted anywhere is handed there by the same
//! handoff that takes a relay peer to its session's core. The per-worker state (tunnels,
//! waiting public connections, tunnels in their grace) is this worker's alone
//! (`book.rs`); the server-wide counts the limits need are `limits::tunnels::Tally`.
#![forbid(unsafe_code)]

pub(crate) mod ask;
mod book;
mod control;
mod data;
pub(crate) mod events;
mod join;
mod public;
mod shape;

pub use control::serve_control;
pub use data::serve_data;

use crate::context::Core;
use crate::runtime::stream::ServerStream;
use std::rc::Rc;

/// A tunnel request the HTTP phase admitted and brought to its worker.
pub enum Request {
    Control(ControlRequest),
    Data(data::DataRequest),
}

pub use control::{grant_of, ControlRequest};
pub use data::DataRequest;

/// The server's one call into tunnels, once a request is admitted on its worker.
pub async fn serve(core: Rc<Core>, stream: ServerStream, req: Request) {
    match req {
        Request::Control(c) => serve_control(core, stream, c).await,
        Request::Data(d) => serve_data(&core, stream, d).await,
    }
}
