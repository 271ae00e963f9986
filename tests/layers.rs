//! The crate's layers point one way (docs/architecture.md, "Layers").
//!
//! Reads every `crate::` path (and every `super::` path that climbs out of its top-level
//! module) in the code under src/, comments and string literals left out, and fails, naming
//! the file and line, on an import that points up a layer, on an import between two modules of
//! the top layer, or on a cycle between top-level modules of one layer. The table below is the
//! one place the layers are written down; docs/architecture.md mirrors it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of src/ and its layer: a module may import a module of a lower
/// layer, or one of its own layer as long as no cycle forms. The top layer holds entry
/// points that none of the others imports, and that import none of each other: the server,
/// and the two clients of the relay (the agent and the load generator).
const LAYERS: &[(&str, u8)] = &[
    // I/O-free codecs and plain data: the WebSocket codec, HTTP heads, routes, answers and
    // their writer, the settings, the counters and histograms.
    ("ws", 0),
    ("http", 0),
    ("config", 0),
    ("stats", 0),
    ("tls", 0),
    // Per-core machinery and the state of each concern, none of which knows the worker's
    // context: buffers, sockets, the clock, the driver, the RNG; limiters, the per-IP tables,
    // capacity arithmetic and the refusal type; tokens; sessions, their peers, their events
    // and where each one lives (core and handoff); the cluster's state without I/O (the fleet
    // view, the messages to the cluster thread, each worker's carried links and peer
    // origins); the demo page's files (it needs only http's answer type and only the server
    // serves it).
    ("runtime", 1),
    ("limits", 1),
    ("auth", 1),
    ("session", 1),
    ("fleet", 1),
    ("demo", 1),
    // The worker's context (`Core`, `Shared`), which holds the per-core and shared state of
    // the layer below, and admission, whose checks read it.
    ("context", 2),
    // What runs on a connection once it is placed, each handed the context: forwarding, the
    // HTTP bridge, the cluster's I/O.
    ("relay", 3),
    ("bridge", 3),
    ("cluster", 3),
    // TCP tunnels: control connections, public ports, data connections spliced to them.
    ("tunnel", 3),
    // The reverse proxy: proxy.routes to upstream HTTP servers (docs/proxy.md).
    ("proxy", 3),
    // Entry points.
    ("server", 4),
    ("agent", 4),
    ("load", 4),
];

/// Files allowed to name modules beside or above their own, and which: none. Each entry's
/// imports would be left out of the graph (and each listed one must still be there, so the
/// list only shrinks); the worker's context, once the one entry, now sits in a layer of its
/// own above the state it holds (docs/architecture.md, "Layers"). Keep it empty.
const ROOT_EXCEPTIONS: &[(&str, &[&str])] = &[];

/// The crate roots: they declare and wire every module.
const CRATE_ROOTS: &[&str] = &["lib.rs", "main.rs"];

#[test]
fn imports_point_down_and_form_no_cycle() {
    let files = src_files();
    assert!(
        files.len() > 50,
        "read only {} files under src/",
        files.len()
    );
    let tops: BTreeSet<&str> = files
        .iter()
        .filter(|(p, _)| !CRATE_ROOTS.contains(&p.as_str()))
        .map(|(p, _)| top_of(p))
        .collect();
    for t in &tops {
        assert!(
            layer_of(t).is_some(),
            "src/{t}: a top-level module missing from LAYERS in tests/layers.rs (and from the \
             layer picture in docs/architecture.md)"
        );
    }
    let problems = check(&files, LAYERS, ROOT_EXCEPTIONS);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The only files that may contain `unsafe` (lib.rs denies it crate-wide; these two allow
/// it): the vectored write's iovecs and the raw socket calls.
const UNSAFE_FILES: &[&str] = &["runtime/chunk.rs", "runtime/socket.rs"];

#[test]
fn unsafe_stays_in_its_two_files_and_every_other_module_forbids_it() {
    let files = src_files();
    let problems = unsafe_problems(&files, UNSAFE_FILES);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// `unsafe` (or an `allow(unsafe_code)`) outside `allowed`, and a module that does not
/// `forbid` it: each top-level module's root file, except the one holding an allowed file,
/// whose other files each forbid it themselves (a `forbid` cannot be lifted below it).
fn unsafe_problems(files: &[(String, String)], allowed: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let holders: BTreeSet<&str> = allowed.iter().map(|f| top_of(f)).collect();
    for (path, source) in files {
        let code = blank_comments_and_literals(source);
        if !allowed.contains(&path.as_str()) {
            for (line, token) in tokenize(&code) {
                if token == "unsafe" {
                    problems.push(format!("src/{path}:{line}: unsafe outside {allowed:?}"));
                }
            }
            if code.contains("allow(unsafe_code)") {
                problems.push(format!("src/{path}: allows unsafe_code"));
            }
        }
        if CRATE_ROOTS.contains(&path.as_str()) || allowed.contains(&path.as_str()) {
            continue;
        }
        let top = top_of(path);
        let must_forbid = if holders.contains(top) {
            !path.ends_with("/mod.rs") || path.matches('/').count() > 1
        } else {
            *path == format!("{top}/mod.rs") || *path == format!("{top}.rs")
        };
        if must_forbid && !code.contains("#![forbid(unsafe_code)]") {
            problems.push(format!("src/{path}: has no #![forbid(unsafe_code)]"));
        }
    }
    problems
}

/// Every .rs file under src/, as (path below src/, text).
fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((
                rel,
                std::fs::read_to_string(&p).expect("a readable source file"),
            ));
        }
    }
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a file (path relative to src/) belongs to.
fn top_of(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    if path.contains('/') {
        first
    } else {
        first.strip_suffix(".rs").unwrap_or(first)
    }
}

/// One import of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// Every problem with `files` (path relative to src/, source) under `layers`, one line each,
/// naming the file and line.
fn check(
    files: &[(String, String)],
    layers: &[(&str, u8)],
    exceptions: &[(&str, &[&str])],
) -> Vec<String> {
    let layer = |m: &str| layers.iter().find(|(n, _)| *n == m).map(|(_, l)| *l);
    let top_layer = layers.iter().map(|(_, l)| *l).max().unwrap_or(0);
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    let mut excused: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, source) in files {
        let from = top_of(path);
        if CRATE_ROOTS.contains(&path.as_str()) {
            continue;
        }
        for (line, to) in imports(path, source) {
            if to == from {
                continue;
            }
            let exempt = exceptions
                .iter()
                .any(|(f, targets)| f == path && targets.contains(&to.as_str()));
            if exempt {
                excused.insert((path.clone(), to));
                continue;
            }
            let (Some(lf), Some(lt)) = (layer(from), layer(&to)) else {
                problems.push(format!(
                    "src/{path}:{line}: {from} imports {to}, and one of them has no layer"
                ));
                continue;
            };
            if lt > lf {
                problems.push(format!(
                    "src/{path}:{line}: {from} (layer {lf}) imports {to} (layer {lt}), which is above it"
                ));
            } else if lt == lf && lf == top_layer {
                problems.push(format!(
                    "src/{path}:{line}: {from} imports {to}: the top layer's entry points import none of each other"
                ));
            } else {
                let import = Import {
                    file: path.clone(),
                    line,
                    from: from.to_string(),
                    to: to.clone(),
                };
                graph
                    .entry(from.to_string())
                    .or_default()
                    .entry(to)
                    .or_insert(import);
            }
        }
    }
    for (file, targets) in exceptions {
        for t in *targets {
            if !excused.contains(&(file.to_string(), t.to_string())) {
                problems.push(format!(
                    "src/{file}: no longer imports {t}: take it off ROOT_EXCEPTIONS in tests/layers.rs"
                ));
            }
        }
    }
    for cycle in cycles(&graph) {
        let steps: Vec<String> = cycle
            .iter()
            .map(|i| format!("{} -> {} (src/{}:{})", i.from, i.to, i.file, i.line))
            .collect();
        problems.push(format!(
            "cycle between top-level modules: {}",
            steps.join(", ")
        ));
    }
    problems
}

/// One cycle through each strongly connected group of modules, as the imports that make it.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Import>>) -> Vec<Vec<Import>> {
    let mut found = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in graph.keys() {
        if reported.contains(start) {
            continue;
        }
        // Depth-first from `start`, looking for a way back to it.
        let mut path: Vec<Import> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        if back_to(graph, start, start, &mut path, &mut seen) {
            for i in &path {
                reported.insert(i.from.clone());
            }
            found.push(path);
        }
    }
    found
}

fn back_to(
    graph: &BTreeMap<String, BTreeMap<String, Import>>,
    start: &str,
    at: &str,
    path: &mut Vec<Import>,
    seen: &mut BTreeSet<String>,
) -> bool {
    if !seen.insert(at.to_string()) {
        return false;
    }
    for (to, import) in graph.get(at).into_iter().flatten() {
        path.push(import.clone());
        if to == start || back_to(graph, start, to, path, seen) {
            return true;
        }
        path.pop();
    }
    false
}

/// The top-level modules a file names, with the line of each naming: `crate::x`, each `x` of
/// `crate::{x::.., y}`, and `super::` chains that climb to the crate root. Comments, string
/// and character literals are blanked first, so a path in a doc comment or a message is not
/// an import.
fn imports(path: &str, source: &str) -> Vec<(usize, String)> {
    let code = blank_comments_and_literals(source);
    let tokens = tokenize(&code);
    // The file's own module path: src/x/mod.rs is [x], src/x/a.rs is [x, a].
    let mut module: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .filter(|s| *s != "mod")
        .map(str::to_string)
        .collect();
    // Inline `mod name { .. }` blocks, with the brace depth that closes each.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].1.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                    module.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.1 == "{") => {
                module.push(tokens[i + 1].1.clone());
                inline.push(depth);
            }
            "crate" if tokens.get(i + 1).is_some_and(|t| t.1 == "::") => {
                out.extend(heads(&tokens, i + 2));
            }
            "super" if tokens.get(i + 1).is_some_and(|t| t.1 == "::") => {
                let mut ups = 0;
                let mut j = i;
                while tokens.get(j).is_some_and(|t| t.1 == "super")
                    && tokens.get(j + 1).is_some_and(|t| t.1 == "::")
                {
                    ups += 1;
                    j += 2;
                }
                if ups >= module.len() {
                    out.extend(heads(&tokens, j));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The first segment of the path at `at`, or of each path in the group `{..}` at `at`, each
/// with its line.
fn heads(tokens: &[(usize, String)], at: usize) -> Vec<(usize, String)> {
    let Some((line, t)) = tokens.get(at) else {
        return Vec::new();
    };
    if t != "{" {
        return if is_ident(t) {
            vec![(*line, t.clone())]
        } else {
            Vec::new()
        };
    }
    let mut names = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (line, t) in &tokens[at + 1..] {
        match t.as_str() {
            "{" => depth += 1,
            "}" if depth == 0 => break,
            "}" => depth -= 1,
            "," if depth == 0 => expect_head = true,
            _ if depth == 0 && expect_head => {
                if is_ident(t) && t != "self" {
                    names.push((*line, t.clone()));
                }
                expect_head = false;
            }
            _ => {}
        }
    }
    names
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_alphabetic())
}

/// Identifiers, `::`, braces and commas, each with its line; anything else is dropped.
fn tokenize(code: &str) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c == b'_' || c.is_ascii_alphabetic() {
            let s = i;
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push((line, code[s..i].to_string()));
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push((line, "::".into()));
            i += 2;
        } else {
            if matches!(c, b'{' | b'}' | b',') {
                out.push((line, (c as char).to_string()));
            }
            i += 1;
        }
    }
    out
}

/// `source` with every comment, string literal and character literal replaced by spaces
/// (newlines kept, so lines still count).
fn blank_comments_and_literals(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for x in &mut out[from..to] {
            if *x != b'\n' {
                *x = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            // Block comments nest in Rust.
            let (mut j, mut depth) = (i + 2, 1);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(end) = raw_string_end(b, i) {
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{1F600}', '"'); a lifetime has no closing quote.
            let end = if b.get(i + 1) == Some(&b'\\') {
                // The escaped character is skipped, so '\'' ends at its last quote.
                b.get(i + 3..)
                    .and_then(|r| r.iter().position(|&c| c == b'\''))
                    .map(|n| i + 3 + n + 1)
            } else {
                let ch = source[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
            };
            match end {
                Some(e) => {
                    blank(&mut out, i, e);
                    i = e;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// The end of a raw string (`r"..."`, `r#"..."#`, `br#"..."#`) starting at `i`, if one does.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1] == b'_' || b[i - 1].is_ascii_alphanumeric()) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let mut closing = vec![b'"'];
    closing.extend(std::iter::repeat_n(b'#', hashes));
    let body = j + 1;
    b[body..]
        .windows(closing.len())
        .position(|w| w == closing.as_slice())
        .map(|n| body + n + closing.len())
}

// The checker itself, on small made-up crates: it must catch what it is there to catch.

const TOY: &[(&str, u8)] = &[
    ("ws", 0),
    ("http", 0),
    ("relay", 2),
    ("bridge", 2),
    ("server", 3),
    ("agent", 3),
];

fn toy(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    check(&files, TOY, &[])
}

#[test]
fn the_checker_names_an_upward_import_with_its_file_and_line() {
    let problems = toy(&[
        (
            "ws/frame.rs",
            "use std::io;\n\nuse crate::server::accept::refuse;\n",
        ),
        ("server/mod.rs", "use crate::ws::frame;\n"),
    ]);
    assert_eq!(
        problems,
        ["src/ws/frame.rs:3: ws (layer 0) imports server (layer 3), which is above it"]
    );
}

#[test]
fn the_checker_finds_a_cycle_inside_a_layer() {
    let problems = toy(&[
        ("relay/join.rs", "use crate::bridge::serve::serve;\n"),
        (
            "bridge/answers.rs",
            "use crate::{\n    http::Response,\n    relay::inbound::HeldAnswer,\n};\n",
        ),
    ]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("cycle between top-level modules: "),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("bridge -> relay (src/bridge/answers.rs:3)"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("relay -> bridge (src/relay/join.rs:1)"),
        "{problems:?}"
    );
}

#[test]
fn the_checker_keeps_the_top_layers_entry_points_apart() {
    let problems = toy(&[("agent/run.rs", "fn f() { crate::server::start(); }\n")]);
    assert_eq!(
        problems,
        ["src/agent/run.rs:1: agent imports server: the top layer's entry points import none of each other"]
    );
}

#[test]
fn the_checker_follows_super_out_of_a_module_but_not_inside_it() {
    let problems = toy(&[
        ("ws/mod.rs", "use super::relay::x;\n"),
        (
            "ws/frame.rs",
            "mod tests {\n    use super::super::mask;\n}\n",
        ),
    ]);
    assert_eq!(
        problems,
        ["src/ws/mod.rs:1: ws (layer 0) imports relay (layer 2), which is above it"]
    );
}

#[test]
fn the_checker_ignores_paths_in_comments_and_strings() {
    let problems = toy(&[(
        "ws/frame.rs",
        "//! Used by `crate::server`.\n/* crate::relay */\nconst A: &str = \"crate::server\";\nconst B: &str = r#\"crate::relay \"x\"\"#;\nconst C: char = '\"';\nconst D: char = '\\'';\nfn f<'a>(x: &'a str) -> &'a str { x }\n",
    )]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn the_checker_allows_a_downward_group_and_reports_a_stale_exception() {
    let files = vec![
        (
            "server/mod.rs".to_string(),
            "use crate::{relay::{join, conn}, ws::{self, frame}, http};\n".to_string(),
        ),
        (
            "relay/conn.rs".to_string(),
            "use crate::ws::frame;\n".to_string(),
        ),
    ];
    assert!(check(&files, TOY, &[]).is_empty());
    let stale = check(&files, TOY, &[("relay/conn.rs", &["bridge"])]);
    assert_eq!(
        stale,
        ["src/relay/conn.rs: no longer imports bridge: take it off ROOT_EXCEPTIONS in tests/layers.rs"]
    );
}

#[test]
fn the_unsafe_check_names_a_stray_block_and_a_module_without_forbid() {
    let files: Vec<(String, String)> = [
        (
            "runtime/chunk.rs",
            "#![allow(unsafe_code)]\nfn a() { unsafe { f() } }",
        ),
        (
            "runtime/pool.rs",
            "#![forbid(unsafe_code)]\n// unsafe in a comment\nfn b() {}",
        ),
        ("runtime/mod.rs", "mod chunk; mod pool;"),
        ("ws/mod.rs", "#![forbid(unsafe_code)]\nmod frame;"),
        (
            "ws/frame.rs",
            "fn c() {\n    let s = \"unsafe\";\n    unsafe { g() }\n}",
        ),
        ("http/mod.rs", "fn d() {}"),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    let problems = unsafe_problems(&files, &["runtime/chunk.rs"]);
    assert_eq!(
        problems,
        [
            "src/ws/frame.rs:3: unsafe outside [\"runtime/chunk.rs\"]",
            "src/http/mod.rs: has no #![forbid(unsafe_code)]",
        ]
    );
}
