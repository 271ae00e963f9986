//! `ringrelay cluster status --redis URL`: the fleet as Redis holds it, for an operator.

use crate::fleet::node::NodeInfo;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// Print the nodes registered in Redis.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The fleet's Redis: redis://host:port[/db]. With a password in it, prefer the
    /// environment variable: a command line is visible to every local user.
    #[arg(long, env = "RINGRELAY_CLUSTER_REDIS_URL", hide_env_values = true)]
    pub redis: String,
    /// The fleet's `cluster.key_prefix`.
    #[arg(long, default_value = "ringrelay")]
    pub prefix: String,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "cluster")]
fn read_fleet(args: &StatusArgs) -> Result<(Vec<NodeInfo>, usize), String> {
    let read = || -> redis::RedisResult<_> {
        let client = redis::Client::open(args.redis.as_str())?;
        let mut con = super::redis::connect(&client, std::time::Duration::from_secs(2))?;
        super::fleet::read(&mut con, &args.prefix)
    };
    let f = read().map_err(|e| e.to_string())?;
    Ok((f.nodes, f.unreadable))
}

#[cfg(not(feature = "cluster"))]
fn read_fleet(_: &StatusArgs) -> Result<(Vec<NodeInfo>, usize), String> {
    Err(super::NOT_BUILT.to_string())
}

/// The table an operator reads.
pub fn table(nodes: &[NodeInfo], now_ms: u64) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:<28} {:>12} {:>9} {:>11} {:>12} {:>8}\n",
        "node", "region", "public", "connections", "sessions", "tunnels", "tunnel B/s", "seen"
    );
    for n in nodes {
        let age = now_ms.saturating_sub(n.written_ms) as f64 / 1000.0;
        out.push_str(&format!(
            "{:<24} {:<12} {:<28} {:>5}/{:<6} {:>9} {:>5}/{:<5} {:>12} {:>7.1}s\n",
            n.node_id,
            n.region,
            n.public_url,
            n.connections,
            n.max_connections,
            n.sessions,
            n.tunnels,
            n.max_tunnels,
            n.tunnel_bandwidth,
            age
        ));
    }
    let (load, capacity) = nodes.iter().fold((0, 0), |(l, c), n| {
        (l + n.tunnels, c + n.max_tunnels as u64)
    });
    out.push_str(&format!(
        "{} node(s), tunnels {load}/{capacity} ({}%)\n",
        nodes.len(),
        crate::fleet::share::percent(load, capacity)
    ));
    out
}

pub fn main(cmd: &ClusterCommand) -> ExitCode {
    let ClusterCommand::Status(args) = cmd;
    match read_fleet(args) {
        Ok((nodes, bad)) => {
            if args.json {
                let v = serde_json::json!({ "nodes": nodes, "unreadable_entries": bad });
                println!("{v}");
            } else {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                print!("{}", table(&nodes, now));
                if bad > 0 {
                    println!("{bad} unreadable entr(y/ies) under {}:node:", args.prefix);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The URL as given may hold a password; the error never does.
            let url = crate::config::redact_url(&args.redis);
            eprintln!("ringrelay cluster status: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
