//! `Config::to_toml`: every key in the table's order (the docs' order), each written by its
//! kind, so durations stay human-readable strings and secrets stay out.

use std::fmt::Write;
use std::time::Duration;

use super::apply::TABLE;
use super::{format_duration, Config};

/// `s` as a TOML string, with toml's own quoting so any escape the value needs is right.
pub(super) fn string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(super) fn list<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let quoted: Vec<String> = items.map(|s| string(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

pub(super) fn duration(d: Duration) -> String {
    string(&format_duration(d))
}

/// Collects `key = value` lines; writing to a String cannot fail, hence the ignored results.
pub(super) struct Out(String);

impl Out {
    pub fn key(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }
    pub fn comment(&mut self, text: &str) {
        let _ = writeln!(self.0, "# {text}");
    }
    fn section(&mut self, name: &str) {
        let _ = writeln!(self.0, "\n[{name}]");
    }
}

pub(super) fn to_toml(cfg: &Config) -> String {
    let mut out = Out(String::new());
    let mut section = "";
    for key in TABLE {
        if key.section != section {
            section = key.section;
            out.section(section);
        }
        (key.render)(cfg, &mut out);
    }
    out.0
}
