//! The declared table (`keys.rs`) against what operators read: the key tables of
//! docs/configuration.md and the shipped systemd/ringrelay.toml. A failure says what to write.

use std::collections::HashMap;

use super::*;
use crate::config::apply::TABLE;
use crate::config::declare::Key;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One row of a table whose header starts with `| key |`.
struct DocRow {
    line: usize,
    /// The `###` (or other) heading the table is under.
    heading: String,
    cells: Vec<String>,
}

fn doc_rows(text: &str) -> Vec<DocRow> {
    let (mut rows, mut heading, mut in_keys) = (Vec::new(), String::new(), false);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            heading = line.to_string();
        }
        if !line.starts_with('|') {
            in_keys = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if cells[0] == "key" {
            in_keys = true;
        } else if in_keys && !cells[0].starts_with("---") {
            let heading = heading.clone();
            rows.push(DocRow {
                line: n + 1,
                heading,
                cells,
            });
        }
    }
    rows
}

/// The default as the docs' "default" column writes it.
fn doc_default(key: &Key) -> String {
    match (key.shown_default, (key.toml)(&Config::default())) {
        (Some(shown), _) => shown.to_string(),
        (None, Some(toml)) => format!("`{toml}`"),
        (None, None) => "unset".to_string(),
    }
}

/// How the docs state an integer key's range: `1 to 1024`, or `at least 125` when the top
/// is past any figure an operator would write (and nothing for `0` to that).
fn doc_range(key: &Key) -> Option<String> {
    let (min, max) = (key.range)()?;
    match (min, max) {
        (0, max) if max >= u32::MAX as usize => None,
        (min, max) if max >= u32::MAX as usize => Some(format!("at least {min}")),
        (min, max) => Some(format!("{min} to {max}")),
    }
}

fn section_of(key: &Key) -> Option<&'static str> {
    (!key.section.is_empty()).then_some(key.section)
}

/// What a row should start with, and the doc line to go with it.
fn suggested_row(key: &Key) -> String {
    let env = apply::env_var_name(key.name);
    let (name, default, doc) = (key.name, doc_default(key), key.doc_line());
    format!("| `{name}` | {default} | `{env}` | {doc} | |")
}

fn check_row(key: &Key, row: &DocRow) -> Vec<String> {
    let mut problems = Vec::new();
    let at = format!("docs/configuration.md:{}: {}", row.line, key.name);
    let env = format!("`{}`", apply::env_var_name(key.name));
    let default = doc_default(key);
    if row.cells.get(1) != Some(&default) {
        problems.push(format!("{at}: default should read {default}"));
    }
    if !row.cells.get(2).is_some_and(|c| c.starts_with(&env)) {
        problems.push(format!("{at}: environment should read {env}"));
    }
    if let Some(range) = doc_range(key) {
        if !row.cells.iter().skip(3).any(|c| c.contains(&range)) {
            problems.push(format!("{at}: the meaning should say {range:?}"));
        }
    }
    let in_place = match section_of(key) {
        Some(s) => row.heading.contains(&format!("[{s}]")),
        None => !row.heading.contains('['),
    };
    if !in_place {
        problems.push(format!("{at}: listed under {:?}", row.heading));
    }
    problems
}

#[test]
fn the_docs_tables_match_the_declared_keys() {
    let rows = doc_rows(&read("docs/configuration.md"));
    let mut by_key: HashMap<String, Vec<&DocRow>> = HashMap::new();
    for row in &rows {
        let name = row.cells[0].trim_matches('`').to_string();
        by_key.entry(name).or_default().push(row);
    }
    let mut problems = Vec::new();
    for key in TABLE {
        match by_key.remove(key.name).as_deref() {
            None | Some([]) => problems.push(format!(
                "docs/configuration.md has no row for {}; add under its table:\n  {}",
                key.name,
                suggested_row(key)
            )),
            Some([row]) => problems.extend(check_row(key, row)),
            Some(more) => problems.push(format!("{} has {} rows", key.name, more.len())),
        }
    }
    for (name, rows) in by_key {
        let line = rows[0].line;
        problems.push(format!(
            "docs/configuration.md:{line}: {name} is not a declared key"
        ));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    assert!(rows.len() >= TABLE.len(), "the key tables were not found");
}

/// `(section, name, commented)` of every line that sets a key, commented out or not.
fn example_keys(text: &str) -> Vec<(String, String, bool)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (body, commented) = match line.strip_prefix('#') {
            Some(rest) => (rest.trim_start(), true),
            None => (line, false),
        };
        let Some((name, _)) = body.split_once(" = ") else {
            continue;
        };
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            found.push((section.clone(), name.to_string(), commented));
        }
    }
    found
}

#[test]
fn the_shipped_example_sets_or_shows_every_declared_key() {
    let lines = example_keys(&read("systemd/ringrelay.toml"));
    let mut problems = Vec::new();
    for key in TABLE {
        let section = section_of(key).unwrap_or("");
        if !lines
            .iter()
            .any(|(s, n, _)| s == section && n == key.field())
        {
            let line = match (key.toml)(&Config::default()) {
                Some(value) => format!("{} = {value}", key.field()),
                None => format!("# {} = <an example>", key.field()),
            };
            let table = section_of(key)
                .map(|s| format!("[{s}]"))
                .unwrap_or_default();
            problems.push(format!(
                "systemd/ringrelay.toml lacks {}; add to {table}:\n  # {}\n  {line}",
                key.name,
                key.doc_line(),
            ));
        }
    }
    for (section, name, commented) in &lines {
        let dotted = match section.as_str() {
            "" => name.clone(),
            s => format!("{s}.{name}"),
        };
        if apply::known_key(&dotted).is_none() {
            let how = if *commented { "commented " } else { "" };
            problems.push(format!(
                "systemd/ringrelay.toml {how}sets {dotted}, not a declared key"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_key_is_declared_once_with_a_doc_line() {
    let mut vars = std::collections::HashSet::new();
    for key in TABLE {
        assert!(!key.doc_line().is_empty(), "{} has no doc line", key.name);
        assert!(vars.insert(apply::env_var_name(key.name)), "{}", key.name);
        let expected = match section_of(key) {
            Some(s) => format!("{s}.{}", key.field()),
            None => key.field().to_string(),
        };
        assert_eq!(key.name, expected);
        assert!(
            section_of(key).is_none_or(|s| apply::SECTIONS.contains(&s)),
            "{}",
            key.name
        );
    }
    let names: Vec<&str> = TABLE.iter().map(|k| k.name).collect();
    assert_eq!(names, apply::KEYS);
}

/// The checks themselves: a table row out of step, a row for no key, and an example line for
/// no key are each found.
#[test]
fn the_docs_checks_find_what_is_out_of_step() {
    let doc = "### `[limits]`\n\n\
               | key | default | environment | meaning | memory |\n|---|---|---|---|---|\n\
               | `limits.max_headers` | `99` | `RINGRELAY_LIMITS_MAX_HEADERS` | 8 to 1024 | |\n\
               | `limits.nonsense` | `1` | `RINGRELAY_LIMITS_NONSENSE` | x | |\n";
    let rows = doc_rows(doc);
    assert_eq!(rows.len(), 2);
    let key = apply::known_key("limits.max_headers").unwrap();
    let problems = check_row(key, &rows[0]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("default should read `100`"),
        "{problems:?}"
    );
    assert!(apply::known_key(rows[1].cells[0].trim_matches('`')).is_none());
    let top = apply::known_key("workers").unwrap();
    let problems = check_row(top, &rows[0]);
    assert_eq!(
        problems.len(),
        4,
        "default, variable, range, table: {problems:?}"
    );
    assert!(
        problems[2].contains("should say \"1 to 1024\""),
        "{problems:?}"
    );

    let example = "workers = 2\n[limits]\n# max_headers = 100\n# Largest: 5 = 6\nbogus = 1\n";
    let lines = example_keys(example);
    let names: Vec<(&str, &str, bool)> = lines
        .iter()
        .map(|(s, n, c)| (s.as_str(), n.as_str(), *c))
        .collect();
    assert_eq!(
        names,
        [
            ("", "workers", false),
            ("limits", "max_headers", true),
            ("limits", "bogus", false)
        ]
    );
}
