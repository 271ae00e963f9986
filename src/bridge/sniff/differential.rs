//! The streaming reader against serde_json on generated JSON texts: whatever the whitespace,
//! key order, escapes, repeated keys and nesting, it finds what a real parser finds at the
//! top level (the first `type`, the first usable `id`, any request-shaped `type`), and on a
//! text serde_json refuses it never reports a type or id serde_json would not have read
//! before the error.

use super::*;
use proptest::prelude::*;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// What serde_json's reading of the top level finds, member by member, in order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    first_type: Option<Kind>,
    request_like: bool,
    id: Option<String>,
}

struct Top<'a>(&'a mut Found);

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: serde_json::Value = map.next_value()?;
            let text = value.as_str();
            if key == "type" && self.0.first_type.is_none() {
                self.0.first_type = Some(match text {
                    Some("http_response") => Kind::HttpResponse,
                    Some("http_request") => Kind::HttpRequest,
                    _ => Kind::Other,
                });
            }
            if key.eq_ignore_ascii_case("type") && text == Some("http_request") {
                self.0.request_like = true;
            }
            if key == "id" && self.0.id.is_none() {
                // The reader keeps ids only when every escaped character is ASCII (the
                // generated texts escape every non-ASCII character they hold).
                let usable = |t: &&str| !t.is_empty() && t.len() <= VALUE_KEEP && t.is_ascii();
                if let Some(t) = text.filter(usable) {
                    self.0.id = Some(t.to_string());
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_string<E>(self, _: String) -> Result<(), E> {
        Ok(())
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// serde_json's findings, and whether the whole text is JSON.
fn reference(text: &str) -> (Found, bool) {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let ok = de.deserialize_any(Top(&mut found)).is_ok() && de.end().is_ok();
    (found, ok)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "type",
        "TYPE",
        "Type",
        "id",
        "iD",
        "x",
        "types",
        "typ",
        "",
        "t\\u0079pe",
        "\\u0069d",
        "kind",
        "t\\\"ype",
    ])
    .prop_map(str::to_string)
}

fn string() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "http_response",
        "http_request",
        "HTTP_REQUEST",
        "chat",
        "",
        "7f",
        "http\\u005fresponse",
        "http\\u005Frequest",
        "a\\\"b",
        "\\\\",
        "x\\ny",
        "\\u00e9",
        "http_response ",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
    ])
    .prop_map(|s| format!("\"{s}\""))
}

fn ws() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", " ", "\n  ", "\t", "\r\n"]).prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        string(),
        prop::sample::select(vec!["1", "-2.5e3", "true", "false", "null", "0"])
            .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|v| {
                let items: Vec<String> = v.into_iter().map(|(a, x, b)| a + &x + &b).collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((ws(), key(), ws(), inner, ws()), 0..4).prop_map(|v| {
                let items: Vec<String> = v
                    .into_iter()
                    .map(|(a, k, b, x, c)| format!("{a}\"{k}\"{b}:{x}{c}"))
                    .collect();
                format!("{{{}}}", items.join(","))
            }),
        ]
    })
}

/// A top-level object, with possible damage (a byte dropped, one changed).
fn text() -> impl Strategy<Value = String> {
    (
        ws(),
        prop::collection::vec((ws(), key(), ws(), value(), ws()), 0..6),
        ws(),
    )
        .prop_map(|(a, members, b)| {
            let items: Vec<String> = members
                .into_iter()
                .map(|(a, k, b, x, c)| format!("{a}\"{k}\"{b}:{x}{c}"))
                .collect();
            format!("{a}{{{}}}{b}", items.join(","))
        })
}

fn sniffed(text: &str, cut: usize) -> Found {
    let mut s = Sniff::new(Goal::All);
    let (a, b) = text.as_bytes().split_at(cut.min(text.len()));
    s.feed(a);
    s.feed(b);
    Found {
        first_type: s.first_type(),
        request_like: s.request_like(),
        id: s.id().map(str::to_string),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn valid_texts_read_as_serde_json_reads_them(t in text(), cut in 0usize..400) {
        let (want, ok) = reference(&t);
        prop_assert!(ok, "the generator makes JSON: {}", t);
        let got = sniffed(&t, cut);
        prop_assert_eq!(&got, &want, "{}", t);
        prop_assert!(sniff(t.as_bytes()).complete());
    }

    #[test]
    fn damaged_texts_never_show_more_than_their_valid_start(
        t in text(), at in 0usize..400, byte in prop::sample::select(vec![b'"', b'}', b']', b',', b':', b'\\', b'x', b' ']),
    ) {
        let mut b = t.into_bytes();
        let at = at % (b.len() + 1);
        if at < b.len() { b[at] = byte; } else { b.push(byte); }
        let Ok(t) = String::from_utf8(b) else { return Ok(()) };
        let (want, ok) = reference(&t);
        let got = sniffed(&t, at);
        if ok {
            prop_assert_eq!(&got, &want, "{}", t);
        } else {
            // Anything serde_json read before refusing, the reader finds too; the reader may
            // read on where serde_json stopped only if it is more liberal there.
            if want.first_type.is_some() {
                prop_assert_eq!(got.first_type, want.first_type, "{}", t);
            }
            if want.request_like {
                prop_assert!(got.request_like, "{}", t);
            }
        }
    }
}
