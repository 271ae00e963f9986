//! The `ringrelay` binary: parses the command line, loads the config, runs the server.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use ringrelay::config::{CliOverrides, Config, LogFormat};
use ringrelay::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ringrelay",
    version,
    about = "A thread-per-core WebSocket relay on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve(ServeArgs),
    /// Generate load against a relay and report throughput and latency.
    Load(ringrelay::load::LoadArgs),
    /// Mint a token the relay accepts (prints it on stdout).
    Token(ringrelay::auth::cli::TokenArgs),
    /// Answer a session's bridged HTTP requests from a local API (runs on the user's machine).
    Agent(ringrelay::agent::AgentArgs),
    /// Look at a fleet of relays coordinated through Redis.
    #[command(subcommand)]
    Cluster(ringrelay::cluster::status::ClusterCommand),
}

#[derive(clap::Args, Default, Clone)]
struct ServeArgs {
    /// TOML config file (also RINGRELAY_CONFIG).
    #[arg(long, env = "RINGRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Public listener address.
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Worker threads, one per core.
    #[arg(long)]
    workers: Option<String>,
    /// I/O driver: auto, io_uring or epoll.
    #[arg(long)]
    driver: Option<String>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Load(a)) => {
            return match ringrelay::load::run(a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringrelay load: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Token(a)) => return ringrelay::auth::cli::main(&a),
        Some(Command::Agent(a)) => return agent(&a),
        Some(Command::Cluster(c)) => return ringrelay::cluster::status::main(&c),
        None => cli.serve,
    };
    serve(args)
}

/// `ringrelay agent`: bad arguments exit 2, a relay that refuses the agent for good exits 1,
/// SIGTERM exits 0.
fn agent(args: &ringrelay::agent::AgentArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringrelay agent: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    tracing::info!(
        relay = %plan.relay.authority,
        session = %plan.session,
        target = %plan.target.addr,
        version = env!("CARGO_PKG_VERSION"),
        "ringrelay agent starting"
    );
    match ringrelay::agent::run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent stopped");
            eprintln!("ringrelay agent: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(args: &ServeArgs) -> Result<Config, ringrelay::config::ConfigError> {
    // Non-UTF-8 values cannot belong to a key; skipping them avoids `env::vars`' panic.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("RINGRELAY_"))
        .collect();
    let cli = CliOverrides {
        listen: args.listen.clone(),
        admin_listen: args.admin_listen.clone(),
        workers: args.workers.clone(),
        driver: args.driver.clone(),
    };
    Config::load(args.config.as_deref(), &env, &cli)
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringrelay: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.jwt_secret() {
        eprintln!("ringrelay: config error: {e}");
        return ExitCode::from(2);
    }
    if args.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg);
    let workers = cfg.workers;
    let server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ringrelay: {e}");
            return ExitCode::from(1);
        }
    };
    if server.driver() == "epoll" {
        tracing::warn!("io_uring is not in use: running on the epoll driver");
    }
    let (listen, admin, driver) = (server.local_addr(), server.admin_addr(), server.driver());
    let internal = server.internal_addr();
    let tls = server.tls_addr().map(tracing::field::display);
    let steering = server.steering().as_str();
    // Handlers go in before anything can report ready, so a stop that follows READY=1 at
    // once still shuts down gracefully instead of meeting SIGTERM's default action.
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install signal handlers");
            None
        }
    };
    let running = match server.start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ringrelay: {e}");
            return ExitCode::from(1);
        }
    };
    // `internal` is left out of the line when there is none.
    let internal = internal.map(tracing::field::display);
    tracing::info!(%listen, %admin, internal, tls, driver, workers, steering, version = env!("CARGO_PKG_VERSION"), "ringrelay listening");
    if let Some(mut signals) = signals {
        let handle = running.handle.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                handle.trigger();
            }
        });
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    running.join();
    tracing::info!("ringrelay stopped");
    ExitCode::SUCCESS
}
