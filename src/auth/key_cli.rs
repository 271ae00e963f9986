//! `ringrelay key new`: a fresh API key and the line that grants it in `auth.api_keys_file`.
//! The key is printed once, here, and never stored: the file holds its SHA-256.

use std::process::ExitCode;

use super::api_keys::{key_from, line_for, parse_sid, valid_name, KEY_BYTES};
use crate::http::route::valid_role;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeyCommand {
    /// Print a fresh API key (from the OS random source) on the first line, and on the
    /// second the line to append to auth.api_keys_file; reload the relay to put it in force.
    New(NewKeyArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct NewKeyArgs {
    /// Sessions the key opens: * (any), a session id, or a prefix ending in * (team-7-*).
    #[arg(long, default_value = "*", value_parser = sid_arg)]
    pub sid: String,
    /// Pin the key to this role.
    #[arg(long, value_parser = role_arg)]
    pub role: Option<String>,
    /// Tunnels the key may open (kept for tunnel grants; not enforced yet).
    #[arg(long)]
    pub tunnels: Option<u32>,
    /// A label for the key in logs: 1 to 64 of A-Z a-z 0-9 . _ - @.
    #[arg(long, value_parser = name_arg)]
    pub name: Option<String>,
}

/// Prints the key and its line; exit 1 only when the OS gives no random bytes.
pub fn main(cmd: &KeyCommand) -> ExitCode {
    let KeyCommand::New(args) = cmd;
    let mut random = [0u8; KEY_BYTES];
    if let Err(e) = getrandom::fill(&mut random) {
        eprintln!("ringrelay key new: no random bytes from the OS: {e}");
        return ExitCode::from(1);
    }
    let key = key_from(&random);
    println!("{key}");
    println!("{}", new_line(&key, args));
    ExitCode::SUCCESS
}

/// The file's line for `key` as `args` describe it.
pub fn new_line(key: &str, args: &NewKeyArgs) -> String {
    line_for(
        key,
        &args.sid,
        args.role.as_deref(),
        args.tunnels,
        args.name.as_deref(),
    )
}

fn sid_arg(s: &str) -> Result<String, String> {
    parse_sid(s).map(|_| s.to_string())
}

fn role_arg(s: &str) -> Result<String, String> {
    if valid_role(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 32 characters of a-z 0-9 _ -".to_string())
    }
}

fn name_arg(s: &str) -> Result<String, String> {
    if valid_name(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 64 characters of A-Z a-z 0-9 . _ - @".to_string())
    }
}
