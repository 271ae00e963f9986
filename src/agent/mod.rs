//! `ringrelay agent`: the reference agent of the HTTP bridge (docs/agent.md). It runs on the
//! user's machine next to a local API, holds a WebSocket to the relay as the session's peer
//! with the agent role, performs each bridged request against the API and sends back the
//! answer. One thread, one monoio runtime; its WebSocket is the crate's own codec (client
//! side: every frame masked) and its HTTP client the crate's response reader.
//!
//! * `args`: the command line and its check into a `Plan`; `relay_args`: the flags it
//!   shares with the tunnel client (relay, connect timeout, back-off, pings, driver);
//!   `relay_url`, `target`: the two addresses (the target must be loopback unless
//!   `--allow-remote`);
//! * `inbound`: whole messages out of the relay's frames, without I/O;
//! * `link`: connect and upgrade, the reader's reads, the writer task;
//! * `exchange`: a request message to the target's request, its response to the answer, and
//!   the agent's own failures, without I/O;
//! * `upstream`: the HTTP/1.1 client for the target, with a few kept connections;
//! * `backoff`: reconnect waits; `stop`: SIGTERM;
//! * `session`: one relay connection's writer, pings, waits and teardown, and the back-off
//!   between connections, shared with the tunnel client;
//! * `command`: how it runs as a command (exit codes, logs), shared with the tunnel client;
//! * `run`: the loop that ties them together.
#![forbid(unsafe_code)]

pub(crate) mod args;
pub(crate) mod backoff;
pub mod command;
pub(crate) mod exchange;
pub mod inbound;
pub(crate) mod link;
pub(crate) mod relay_args;
pub(crate) mod relay_url;
pub(crate) mod run;
pub(crate) mod session;
pub(crate) mod stop;
pub(crate) mod target;
pub mod tunnel;
pub(crate) mod upstream;

pub use args::{AgentArgs, ArgsError, Plan};
pub use run::AgentError;

/// Runs the agent on this thread until SIGTERM (`Ok`) or a refusal it cannot get past.
pub fn run(plan: Plan) -> Result<(), AgentError> {
    let driver = crate::runtime::driver::resolve(plan.driver)
        .map_err(|e| AgentError::Runtime(e.to_string()))?;
    let mut result = Ok(());
    crate::runtime::driver::block_on(driver, async {
        result = run::run(plan).await;
    })
    .map_err(|e| AgentError::Runtime(e.to_string()))?;
    result
}
