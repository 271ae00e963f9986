//! How `ringrelay agent` and `ringrelay tunnel expose` run as commands, alike: arguments
//! that cannot work exit 2 before anything else; logs go to stderr (stdout is the command's
//! own output, the tunnel's public address); a refusal for good exits 1 with its reason,
//! both logged and on stderr; SIGTERM exits 0.

use std::fmt::Display;
use std::process::ExitCode;

/// Runs `ringrelay {name}`: `plan` is the checked arguments, `starting` logs the start line,
/// `run` runs until stopped.
pub fn run_command<P, A: Display, E: Display>(
    name: &str,
    plan: Result<P, A>,
    starting: impl FnOnce(&P),
    run: impl FnOnce(P) -> Result<(), E>,
) -> ExitCode {
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringrelay {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    starting(&plan);
    match run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} stopped");
            eprintln!("ringrelay {name}: {e}");
            ExitCode::from(1)
        }
    }
}
