//! The split between keys a reload applies and keys it keeps (`live.rs`), against the table
//! and against docs/configuration.md's "Reloading" section.

use super::*;
use crate::config::apply::{KEYS, TABLE};

/// A key added to the table must be put in one list or the other (`config/live.rs`): a key
/// live by default would be reported applied by a reload that nothing applies.
#[test]
fn every_key_is_either_live_or_fixed() {
    let listed: Vec<&str> = FIXED_KEYS.iter().chain(LIVE_KEYS).copied().collect();
    for (n, k) in listed.iter().enumerate() {
        assert!(KEYS.contains(k), "{k} is not a declared key");
        assert!(!listed[..n].contains(k), "{k} listed twice");
    }
    for k in KEYS {
        assert!(
            listed.contains(k),
            "{k}: put it in FIXED_KEYS or LIVE_KEYS (src/config/live.rs), and in docs/configuration.md's Reloading section"
        );
    }
    assert!(is_live("security.allowed_origins") && !is_live("listen"));
}

#[test]
fn keep_fixed_puts_back_every_fixed_key_and_nothing_else() {
    let running = Config::default();
    let mut new = everything_changed();
    let loaded = new.clone();
    let changed = new.keep_fixed(&running);
    // The samples change every key but the two secrets left out of everything_changed.
    let expected: Vec<&str> = FIXED_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "cluster.secret")
        .collect();
    assert_eq!(changed, expected);
    for key in TABLE {
        let now = (key.toml)(&new);
        if is_live(key.name) {
            assert_eq!(
                now,
                (key.toml)(&loaded),
                "{} is live: kept as loaded",
                key.name
            );
        } else {
            assert_eq!(
                now,
                (key.toml)(&running),
                "{} is fixed: kept running",
                key.name
            );
        }
    }
    // Nothing left to report a second time.
    assert!(new.clone().keep_fixed(&new).is_empty());
}

/// The docs list every key a reload keeps, and no other, between the "Reloading" heading and
/// the next one.
#[test]
fn the_docs_list_the_fixed_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("\n## Reloading")
        .expect("docs/configuration.md has a \"## Reloading\" section");
    let rest = &text[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |n| n + 3)];
    let list_start = section
        .find("Kept until a restart:")
        .expect("the Reloading section lists the fixed keys after \"Kept until a restart:\"");
    let list = &section[list_start..];
    let list = &list[..list.find("\n\n").unwrap_or(list.len())];
    for key in KEYS {
        let named = list.contains(&format!("`{key}`"));
        assert_eq!(
            named,
            !is_live(key),
            "{key}: the docs' list of keys kept until a restart must name exactly the fixed keys"
        );
    }
}
