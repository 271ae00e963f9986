//! The `ringrelay` binary: parses the command line, loads the config, runs the server.
#![forbid(unsafe_code)]

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringrelay::config::{CliOverrides, Config, LogFormat};
use ringrelay::server::reload::Reloader;
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
    /// Make API keys for auth.api_keys_file.
    #[command(subcommand)]
    Key(ringrelay::auth::key_cli::KeyCommand),
    /// Answer a session's bridged HTTP requests from a local API (runs on the user's machine).
    Agent(ringrelay::agent::AgentArgs),
    /// Expose a local TCP port on a public port of a relay (docs/tunnels.md).
    #[command(subcommand)]
    Tunnel(ringrelay::agent::tunnel::TunnelCommand),
    /// Look at a fleet of relays coordinated through Redis.
    #[command(subcommand)]
    Cluster(ringrelay::cluster::status::ClusterCommand),
    /// Print a shell completion script (e.g. `ringrelay completions bash >
    /// /usr/share/bash-completion/completions/ringrelay`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page ringrelay(1) in roff, or write it and one page per subcommand
    /// (ringrelay-serve(1), ringrelay-load(1), ...) into a directory.
    Man {
        /// Write ringrelay.1 and ringrelay-SUBCOMMAND.1 here instead of printing ringrelay.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Each flag that sets a config key names the key's `RINGRELAY_*` variable (`env`), so
/// `--help`, the man page and the completions show it; [`ServeArgs::without_env`] then
/// leaves a value that came from the variable to the config's environment layer.
#[derive(clap::Args, Default, Clone)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "RINGRELAY_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Public listener address (key `listen`). Without it, the file or the variable, a
    /// PORT variable (hosting platforms) means 0.0.0.0:PORT.
    #[arg(long, env = "RINGRELAY_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Admin listener address: /stats, /metrics, /health (key `admin_listen`).
    #[arg(long, env = "RINGRELAY_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Worker threads, one per core; the default is the number of CPUs (key `workers`).
    #[arg(long, env = "RINGRELAY_WORKERS", value_name = "N")]
    workers: Option<String>,
    /// I/O driver: auto, io_uring or epoll (key `driver`).
    #[arg(long, env = "RINGRELAY_DRIVER", value_name = "DRIVER")]
    driver: Option<String>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServeArgs {
    /// Drops the values clap took from a `RINGRELAY_*` variable: `Sources` hands the same
    /// variables to the config's environment layer, whose errors name the variable (a flag's
    /// would say `--listen`), and which sits below the flags as documented.
    fn without_env(mut self, m: &ArgMatches) -> ServeArgs {
        let from_env = |id: &str| m.value_source(id) == Some(ValueSource::EnvVariable);
        let fields = [
            ("listen", &mut self.listen),
            ("admin_listen", &mut self.admin_listen),
            ("workers", &mut self.workers),
            ("driver", &mut self.driver),
        ];
        for (id, field) in fields {
            if from_env(id) {
                *field = None;
            }
        }
        self
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let args = match cli.command {
        Some(Command::Serve(a)) => {
            let m = matches.subcommand_matches("serve").unwrap_or(&matches);
            a.without_env(m)
        }
        Some(Command::Load(a)) => {
            return match ringrelay::load::run(a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringrelay load: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Some(Command::Token(a)) => return ringrelay::auth::cli::main(&a),
        Some(Command::Key(c)) => return ringrelay::auth::key_cli::main(&c),
        Some(Command::Agent(a)) => return agent(&a),
        Some(Command::Tunnel(c)) => return ringrelay::agent::tunnel::main(&c),
        Some(Command::Cluster(c)) => return ringrelay::cluster::status::main(&c),
        Some(Command::Completions { shell }) => return completions(shell),
        Some(Command::Man { out_dir }) => return man(out_dir.as_deref()),
        None => cli.serve.without_env(&matches),
    };
    serve(args)
}

/// `ringrelay completions SHELL`: the script on stdout, generated from the same clap
/// definitions that parse the command line, so it never offers a flag that is gone.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ringrelay", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `ringrelay man`: ringrelay(1) on stdout, or with `--out-dir` every page written there
/// (what scripts/package.sh puts in the .deb).
fn man(out_dir: Option<&std::path::Path>) -> ExitCode {
    let cmd = Cli::command();
    let written = match out_dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir),
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let at = out_dir.map(|d| format!(" to {}", d.display()));
            eprintln!("ringrelay man: cannot write{}: {e}", at.unwrap_or_default());
            ExitCode::from(1)
        }
    }
}

/// `ringrelay agent`: bad arguments exit 2, a relay that refuses the agent for good exits 1,
/// SIGTERM exits 0.
fn agent(args: &ringrelay::agent::AgentArgs) -> ExitCode {
    let starting = |plan: &ringrelay::agent::Plan| {
        tracing::info!(
            relay = %plan.relay.authority,
            session = %plan.session,
            target = %plan.target.addr,
            version = env!("CARGO_PKG_VERSION"),
            "ringrelay agent starting"
        )
    };
    let run = ringrelay::agent::run;
    ringrelay::agent::command::run_command("agent", args.plan(), starting, run)
}

/// Where the config comes from: the file named at start (`--config` or `RINGRELAY_CONFIG`),
/// the `RINGRELAY_*` environment as it was at start, and the flags. A reload reads the same
/// three again, so only the file's contents (and the files it names) can change what it
/// finds; a flag or variable keeps overriding the file as it did at start.
#[derive(Clone)]
struct Sources {
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    cli: CliOverrides,
}

impl Sources {
    fn of(args: &ServeArgs) -> Sources {
        // Non-UTF-8 values cannot belong to a key; skipping them avoids `env::vars`' panic.
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            // `PORT`: the hosting platforms' convention (config/layers.rs, lowest layer).
            .filter(|(k, _)| k.starts_with("RINGRELAY_") || k == "PORT")
            .collect();
        let cli = CliOverrides {
            listen: args.listen.clone(),
            admin_listen: args.admin_listen.clone(),
            workers: args.workers.clone(),
            driver: args.driver.clone(),
        };
        Sources {
            file: args.config.clone(),
            env,
            cli,
        }
    }

    fn load(&self) -> Result<Config, ringrelay::config::ConfigError> {
        Config::load(self.file.as_deref(), &self.env, &self.cli)
    }
}

/// SIGHUP: reads the sources again and puts what may change live in force on every worker,
/// or refuses the whole config and keeps the one in force. systemd is told RELOADING=1 (with
/// the monotonic time it wants beside it) before, READY=1 once every worker has it.
fn reload(sources: &Sources, reloader: &Reloader, running: &mut Config) {
    use sd_notify::NotifyState;
    tracing::info!("SIGHUP: reloading the config");
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    let _ = sd_notify::notify(false, &reloading);
    let status = match reloader.reload(running, sources.load()) {
        Ok(applied) => {
            if !applied.kept.is_empty() {
                tracing::warn!(
                    keys = %applied.kept.join(", "),
                    "config reloaded, but these keys cannot change without a restart and were left as they were"
                );
            }
            *running = applied.config;
            tracing::info!(
                kept = applied.kept.len(),
                auth = running.auth.jwt_secret.is_some()
                    || running.auth.jwt_secret_file.is_some()
                    || !running.auth.keys.is_empty()
                    || !running.tls.client_grants.is_empty(),
                admin_tls = running.admin_tls.cert_file.is_some(),
                "config reloaded"
            );
            "config reloaded".to_string()
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused: the config in force is unchanged");
            // One line: the notify protocol is a line per assignment, and a TOML error
            // quotes the file over several.
            let why: Vec<String> = e.to_string().split_whitespace().map(String::from).collect();
            format!("config reload refused: {}", why.join(" "))
        }
    };
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// What the signal thread needs: SIGTERM and SIGINT stop the server, SIGHUP reloads it,
/// SIGUSR1 reopens the access log's file (logrotate), SIGUSR2 upgrades the binary.
struct OnSignal {
    stop: ringrelay::server::ShutdownHandle,
    upgrader: ringrelay::server::upgrade::Upgrader,
    reloader: Reloader,
    sources: Sources,
    /// The config in force, which the next reload is compared with.
    in_force: Config,
    /// How to apply a new `log.level` (`None`: `RUST_LOG` decides the filter).
    log_filter: Option<SetLogFilter>,
}

impl OnSignal {
    /// `log.level` is live: the logger is the main process's, not a worker's, so the signal
    /// thread applies it itself once the workers have the rest.
    fn set_log_level(&self) {
        let level = &self.in_force.log.level;
        match &self.log_filter {
            Some(set) => match set(level) {
                Ok(()) => tracing::info!(%level, "log filter changed"),
                Err(e) => tracing::warn!(%level, error = %e, "could not change the log filter"),
            },
            None => tracing::warn!(
                %level,
                "log.level changed, but RUST_LOG is set and overrides it: the filter is unchanged"
            ),
        }
    }

    fn serve(mut self, mut signals: signal_hook::iterator::Signals) {
        let mut stopping = false;
        // The handlers stay for the process's life: a late SIGHUP is ignored rather than
        // meeting its default action (termination) while the workers drain.
        for sig in signals.forever() {
            if stopping {
                continue;
            }
            if sig == signal_hook::consts::SIGUSR1 {
                tracing::info!("SIGUSR1: reopening the access log");
                ringrelay::server::reopen_access_logs();
                continue;
            }
            if sig == signal_hook::consts::SIGUSR2 {
                upgrade(&self.upgrader, &self.in_force);
                continue;
            }
            if sig == signal_hook::consts::SIGHUP {
                let level = self.in_force.log.level.clone();
                reload(&self.sources, &self.reloader, &mut self.in_force);
                if self.in_force.log.level != level {
                    self.set_log_level();
                }
                continue;
            }
            // An upgrade under way: abandoned before the new process holds everything (it
            // is killed, everyone resumed here, then stopped as below); after, the new
            // process owns everything and this one exits 0 as the upgrade ends.
            let within = self.in_force.upgrade_timeout + self.in_force.shutdown_grace * 2;
            match self.upgrader.interrupt(within) {
                DuringStop::Committed => {
                    tracing::info!(
                        signal = sig,
                        "stop signal during an upgrade the new process holds: this process exits as the upgrade ends"
                    );
                    stopping = true;
                    continue;
                }
                DuringStop::Abandoned => tracing::warn!(
                    signal = sig,
                    "stop signal during an upgrade: the upgrade is abandoned, the new process killed"
                ),
                DuringStop::Idle => {}
            }
            tracing::info!(signal = sig, "shutting down");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            self.stop.trigger();
            stopping = true;
        }
    }
}

/// SIGUSR2: hands everything to a new process started from the binary's path
/// (docs/upgrade.md). systemd is told RELOADING=1; the new process says READY=1 (with its
/// MAINPID=), or this one does again if the upgrade fails.
use ringrelay::server::upgrade::DuringStop;

fn upgrade(upgrader: &ringrelay::server::upgrade::Upgrader, in_force: &Config) {
    use sd_notify::NotifyState;
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    let _ = sd_notify::notify(false, &reloading);
    upgrader.start(in_force.upgrade_timeout);
}

/// Replaces the running logger's filter with a `log.level` that a reload brought.
type SetLogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// Starts the logger. Returns how to change its filter on a reload, or `None` when `RUST_LOG`
/// sets it: the variable overrides `log.level`, at start and on every reload alike.
fn init_logging(cfg: &Config) -> Option<SetLogFilter> {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let by_config = from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // `log.level` was checked when the config loaded, so a new filter always parses.
    let set: SetLogFilter = match cfg.log.format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(EnvFilter::new(f)).map_err(|e| e.to_string()))
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(EnvFilter::new(f)).map_err(|e| e.to_string()))
        }
    };
    by_config.then_some(set)
}

fn serve(args: ServeArgs) -> ExitCode {
    // Taken before anything reads the environment: the variable is removed with it.
    let upgrade_fd = ringrelay::server::upgrade::inherited_fd();
    let sources = Sources::of(&args);
    let cfg = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringrelay: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.jwt_keys() {
        eprintln!("ringrelay: config error: {e}");
        return ExitCode::from(2);
    }
    if args.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    let log_filter = init_logging(&cfg);
    let workers = cfg.workers;
    let in_force = cfg.clone();
    let (server, adopted) = match server_for(cfg, upgrade_fd) {
        Ok(s) => s,
        Err(code) => return code,
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
    let signals = install_signals();
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
    let admin_tls = in_force.admin_tls.cert_file.is_some();
    tracing::info!(%listen, %admin, internal, tls, driver, workers, steering, version = env!("CARGO_PKG_VERSION"), admin_tls, "ringrelay listening");
    if let Some(adopted) = adopted {
        // Same node id as the old process (its host name and port, or `cluster.node_id`):
        // registered, with the adopted sessions renewed, before this one says it holds them.
        if !running.cluster_registered() {
            tracing::warn!("upgrade: the cluster's first round did not end in time; holding all the same (the next round renews)");
        }
        if let Err(e) = adopted.finish(&running) {
            tracing::error!(error = %e, "upgrade: the old process did not let go; exiting");
            return ExitCode::from(1);
        }
    }
    if let Some(signals) = signals {
        let on_signal = OnSignal {
            stop: running.handle.clone(),
            upgrader: running.upgrader.clone(),
            reloader: running.reloader(),
            sources,
            in_force,
            log_filter,
        };
        std::thread::spawn(move || on_signal.serve(signals));
    }
    // After an upgrade this process is the main one from now on: systemd is told so.
    let pid = std::process::id();
    let ready = [
        sd_notify::NotifyState::MainPid(pid),
        sd_notify::NotifyState::Ready,
    ];
    let _ = sd_notify::notify(false, &ready);
    // The main thread keeps the systemd watchdog and status line until the workers end.
    ringrelay::server::watchdog::supervise(&running);
    running.join();
    tracing::info!("ringrelay stopped");
    ExitCode::SUCCESS
}

/// The handlers of every signal the relay answers.
fn install_signals() -> Option<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install signal handlers");
            None
        }
    }
}

/// The server on listeners it binds, or, started by an upgrade (`upgrade_fd`), on the ones
/// the old process hands it, with its workers to adopt their shares first.
fn server_for(
    cfg: Config,
    upgrade_fd: Option<std::os::fd::OwnedFd>,
) -> Result<(Server, Option<ringrelay::server::upgrade::Adopted>), ExitCode> {
    let (server, adopted) = match upgrade_fd {
        Some(fd) => {
            let (server, adopted) = upgraded(cfg, fd)?;
            (Ok(server), Some(adopted))
        }
        None => (Server::bind(cfg), None),
    };
    match server {
        Ok(s) => Ok((s, adopted)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ringrelay: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// The new process of an upgrade: its listeners come from the old process, its workers wait
/// for their shares of the connections (fed from the socket on a thread of its own).
fn upgraded(
    cfg: Config,
    fd: std::os::fd::OwnedFd,
) -> Result<(Server, ringrelay::server::upgrade::Adopted), ExitCode> {
    use ringrelay::server::upgrade::{Adopted, Inherited};
    let (inherited, listeners) = match Inherited::receive(fd, cfg.upgrade_timeout) {
        Ok(got) => got,
        Err(e) => {
            tracing::error!(error = %e, "upgrade: cannot take the listeners");
            return Err(ExitCode::from(1));
        }
    };
    if let Err(why) = inherited.fits(&cfg, &listeners) {
        tracing::error!(reason = %why, "upgrade refused");
        inherited.refuse(&why);
        return Err(ExitCode::from(1));
    }
    let (server, adopted) = Adopted::prepare(cfg, listeners, inherited).map_err(|e| {
        tracing::error!(error = %e, "upgrade: cannot start");
        ExitCode::from(1)
    })?;
    Ok((server, adopted))
}
