//! `ringrelay load`: a load generator for the relay (and for the baselines in the end-to-end
//! benches), on monoio with the crate's own WebSocket codec.
//!
//! * `args`: the command line (`LoadArgs`) and its translation into a `Plan`;
//! * `client`: connect and upgrade, masked frame writer, incremental frame reader;
//! * `engine`: senders (closed loop with a window, or fixed rate), receivers (order check,
//!   latency histogram), churn loops, the threads and the deadline;
//! * `alarm`: precise wake-ups for fixed-rate senders (monoio's timers tick in milliseconds);
//! * `attack`: `--attackers`, a connection flood from one source address beside the load;
//! * `report`: the result, as JSON or text;
//! * `http`: `--mode http` (HTTP/1.1 requests, for the bridge) and `--mode http-target`;
//! * `tunnel`: `--mode tunnel` (bulk, connections/s, request/response through a TCP tunnel)
//!   and `--mode tunnel-echo`;
//! * `service`: the listener and start-up errors of the two stand-in services.
#![forbid(unsafe_code)]

pub(crate) mod alarm;
pub(crate) mod args;
pub(crate) mod attack;
pub mod client;
pub mod engine;
pub(crate) mod http;
pub(crate) mod report;
pub(crate) mod service;
pub mod tunnel;

pub use args::{LoadArgs, ModeArg};
pub use attack::{Attack, AttackCounts};
pub use engine::{EngineError, Mode, Plan, Stop};
pub use report::{OrderCounts, Report};

/// Runs `ringrelay load`: prints progress on stderr and the report on stdout. With
/// `--fail-on-loss`, a run that lost, repeated or reordered anything ends in
/// [`EngineError::Loss`] after its report (exit status 3, see [`EngineError::exit_code`]).
pub fn run(args: LoadArgs) -> Result<(), EngineError> {
    let http = matches!(args.mode, ModeArg::Http | ModeArg::HttpTarget);
    if args.fail_on_loss && http {
        return Err(EngineError::Invalid(
            "--fail-on-loss checks WebSocket messages' order; --mode http has none".into(),
        ));
    }
    match args.mode {
        ModeArg::TunnelEcho => {
            return tunnel::serve(&args.echo_plan())
                .map_err(|e| EngineError::Invalid(e.to_string()))
        }
        ModeArg::Tunnel => return run_tunnel(&args),
        ModeArg::HttpTarget => return Ok(http::target::serve(&args.target_plan())?),
        ModeArg::Http => return run_http(&args),
        _ => {}
    }
    let plan = args.plan().map_err(EngineError::Invalid)?;
    if args.insecure {
        eprintln!("load: WARNING: {}", crate::tls::client::INSECURE_WARNING);
    }
    let report = engine::run_attacked(&plan, args.attack().as_ref())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if args.fail_on_loss && !report.order.intact() {
        return Err(EngineError::Loss(report.order));
    }
    Ok(())
}

/// `--mode tunnel`: the report is printed; a run in which nothing got through fails.
fn run_tunnel(args: &LoadArgs) -> Result<(), EngineError> {
    let plan = args.tunnel_plan().map_err(EngineError::Invalid)?;
    let report = tunnel::run(&plan)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.bytes == 0 && report.ops == 0 {
        return Err(EngineError::NothingAnswered(
            report.error_samples.first().cloned().unwrap_or_default(),
        ));
    }
    Ok(())
}

/// `--mode http`: the report is printed whatever happened; the run fails when no request got
/// any answer at all (a wrong URL, a target that is down), so that scripts notice.
fn run_http(args: &LoadArgs) -> Result<(), EngineError> {
    let plan = args.http_plan().map_err(EngineError::Invalid)?;
    if args.insecure {
        eprintln!("load: WARNING: {}", crate::tls::client::INSECURE_WARNING);
    }
    let report = http::engine::run(&plan)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.requests == 0 && report.errors > 0 {
        return Err(EngineError::NothingAnswered(
            report.error_samples.first().cloned().unwrap_or_default(),
        ));
    }
    Ok(())
}
