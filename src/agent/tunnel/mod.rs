//! `ringrelay tunnel expose`: the client of the relay's TCP tunnels (docs/tunnels.md). It
//! runs next to a local TCP service, holds a control WebSocket (`/v1/tunnel`) on which the
//! relay announces each connection accepted on the tunnel's public port, and for each one
//! opens a data connection (`/v1/tunnel/accept/{id}`) and a connection to the local service
//! and moves the bytes between them. A submodule of the agent: it shares the agent's
//! WebSocket link, back-off, SIGTERM latch and relay URL, and is, like the agent, a program
//! that runs on the user's machine.
//!
//! * `args`: the command line and its check into an `ExposePlan`;
//! * `event`: the relay's control events, without I/O; `resume`: `--resume-file`;
//! * `join`: the data connection's upgrade and the copy between the two sockets;
//! * `run`: the control connection's loop, reconnects, the drain.

pub(crate) mod args;
pub(crate) mod event;
pub(crate) mod join;
pub(crate) mod resume;
pub(crate) mod run;

pub use args::{ExposeArgs, ExposeArgsError, ExposePlan, TunnelCommand};
pub use run::TunnelError;
use std::process::ExitCode;

/// `ringrelay tunnel ...`: bad arguments exit 2, a refusal for good (401/403, close 1008)
/// exits 1 with the reason, SIGTERM exits 0 after the drain.
pub fn main(cmd: &TunnelCommand) -> ExitCode {
    let TunnelCommand::Expose(args) = cmd;
    let starting = |plan: &ExposePlan| {
        tracing::info!(
            relay = %plan.relay.authority,
            local = %plan.local,
            version = env!("CARGO_PKG_VERSION"),
            "ringrelay tunnel starting"
        )
    };
    crate::agent::command::run_command("tunnel", args.plan(), starting, run_plan)
}

/// Runs the client on this thread until SIGTERM (`Ok`) or a refusal it cannot get past.
pub fn run_plan(plan: ExposePlan) -> Result<(), TunnelError> {
    let driver = crate::runtime::driver::resolve(plan.driver)
        .map_err(|e| TunnelError::Runtime(e.to_string()))?;
    let mut result = Ok(());
    crate::runtime::driver::block_on(driver, async {
        result = run::run(plan).await;
    })
    .map_err(|e| TunnelError::Runtime(e.to_string()))?;
    result
}
