//! `config_keys!`, which turns the table in `keys.rs` into the config structs, their
//! `Default` and `Debug`, and the [`Key`] descriptors the loader, `--print-config` and the
//! docs test read. Nothing about a particular key is written here.

use std::fmt;

use super::apply::{Input, Raw};
use super::kinds::Kind;
use super::render::Out;
use super::{Config, ConfigError};

/// One key, as everything but its own field sees it.
#[cfg_attr(not(test), allow(dead_code))] // `doc`, `shown_default`, `toml`, `range`: the docs tests
pub(super) struct Key {
    /// Dotted, as errors and the docs name it: `limits.max_message_bytes`, `workers`.
    pub name: &'static str,
    /// Its TOML table (`limits`); empty for the keys at the top level.
    pub section: &'static str,
    /// Its doc comment in the table, one `\n`-ended line per `///` line.
    pub doc: &'static str,
    /// How docs/configuration.md shows the default when that is not the default's TOML
    /// (`workers`: "number of CPUs").
    pub shown_default: Option<&'static str>,
    /// Parses a raw value that came from `origin` and sets the key.
    pub set: fn(&mut Config, Raw<'_>, &str) -> Result<(), ConfigError>,
    /// Writes the key's `--print-config` lines.
    pub render: fn(&Config, &mut Out),
    /// The key's value as TOML; `None` when it is unset.
    pub toml: fn(&Config) -> Option<String>,
    /// The bounds of an integer key, inclusive.
    pub range: fn() -> Option<(usize, usize)>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl Key {
    /// Its name inside its table, as a TOML line writes it.
    pub fn field(&self) -> &'static str {
        self.name.rsplit('.').next().unwrap_or(self.name)
    }

    /// The doc comment as one line.
    pub fn doc_line(&self) -> String {
        let words: Vec<&str> = self.doc.lines().map(str::trim).collect();
        words.join(" ").trim().to_string()
    }
}

/// Reads one value with `kind`, so that its errors name `key` and hide what `kind` hides.
pub(super) fn parse<T, K: Kind<T>>(
    kind: &K,
    key: &'static str,
    raw: Raw<'_>,
    origin: &str,
) -> Result<T, ConfigError> {
    let secrecy = kind.secrecy();
    kind.parse(&Input {
        key,
        raw,
        origin,
        secrecy,
    })
}

/// A field's value as its kind shows it in `Debug` (secrets hidden).
pub(super) struct Shown<'a, K, T>(pub &'a K, pub &'a T);

impl<K: Kind<T>, T: fmt::Debug> fmt::Debug for Shown<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(self.1, f)
    }
}

/// The grammar, as `keys.rs` uses it:
///
/// ```text
/// /// doc of the struct
/// Config {
///     /// doc line of the key
///     name: Type { default: expr, parse: kind [, shown: "default as the docs say it"] }
/// }
/// /// doc of the section
/// [section] SectionStruct { ...keys as above... }
/// ```
macro_rules! config_keys {
    (@opt) => { None };
    (@opt $shown:literal) => { Some($shown) };

    (@key [$($path:tt)+] $name:expr, $section:expr, $field:ident, $ty:ty, $kind:expr,
        [$($doc:literal)*], [$($shown:literal)?]) => {
        $crate::config::declare::Key {
            name: $name,
            section: $section,
            doc: concat!($($doc, "\n",)*),
            shown_default: config_keys!(@opt $($shown)?),
            set: |cfg, raw, origin| {
                cfg.$($path)+ =
                    $crate::config::declare::parse::<$ty, _>(&$kind, $name, raw, origin)?;
                Ok(())
            },
            render: |cfg, out| {
                let value: &$ty = &cfg.$($path)+;
                $crate::config::kinds::Kind::render(&$kind, stringify!($field), value, out)
            },
            toml: |cfg| {
                let value: &$ty = &cfg.$($path)+;
                $crate::config::kinds::Kind::toml(&$kind, value)
            },
            range: || $crate::config::kinds::Kind::<$ty>::range(&$kind),
        }
    };

    (@debug $f:ident, $me:ident, $field:ident, $ty:ty, $kind:expr) => {
        $f.field(
            stringify!($field),
            &$crate::config::declare::Shown::<_, $ty>(&$kind, &$me.$field),
        )
    };

    (
        $(#[doc = $cdoc:literal])*
        $Config:ident {
            $(
                $(#[doc = $tdoc:literal])*
                $tfield:ident: $tty:ty {
                    default: $tdefault:expr, parse: $tkind:expr $(, shown: $tshown:literal)? $(,)?
                }
            )*
        }
        $(
            $(#[doc = $sdoc:literal])*
            [$sec:ident] $S:ident {
                $(
                    $(#[doc = $doc:literal])*
                    $field:ident: $ty:ty {
                        default: $default:expr, parse: $kind:expr $(, shown: $shown:literal)? $(,)?
                    }
                )*
            }
        )*
    ) => {
        $(#[doc = $cdoc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $Config {
            $( $(#[doc = $tdoc])* pub $tfield: $tty, )*
            $(
                #[doc = concat!("The `[", stringify!($sec), "]` table.")]
                pub $sec: $S,
            )*
        }

        impl Default for $Config {
            fn default() -> Self {
                $Config {
                    $( $tfield: $tdefault, )*
                    $( $sec: $S::default(), )*
                }
            }
        }

        impl std::fmt::Debug for $Config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut s = f.debug_struct(stringify!($Config));
                $( config_keys!(@debug s, self, $tfield, $tty, $tkind); )*
                $( s.field(stringify!($sec), &self.$sec); )*
                s.finish()
            }
        }

        $(
            $(#[doc = $sdoc])*
            #[derive(Clone, PartialEq, Eq)]
            pub struct $S {
                $( $(#[doc = $doc])* pub $field: $ty, )*
            }

            impl Default for $S {
                fn default() -> Self {
                    $S { $( $field: $default, )* }
                }
            }

            impl std::fmt::Debug for $S {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let mut s = f.debug_struct(stringify!($S));
                    $( config_keys!(@debug s, self, $field, $ty, $kind); )*
                    s.finish()
                }
            }
        )*

        /// Every key, in the order `--print-config` and the docs show them.
        pub(super) const TABLE: &[$crate::config::declare::Key] = &[
            $(
                config_keys!(@key [$tfield] stringify!($tfield), "", $tfield, $tty, $tkind,
                    [$($tdoc)*], [$($tshown)?]),
            )*
            $($(
                config_keys!(@key [$sec . $field]
                    concat!(stringify!($sec), ".", stringify!($field)), stringify!($sec),
                    $field, $ty, $kind, [$($doc)*], [$($shown)?]),
            )*)*
        ];

        /// Every key's dotted name, in [`TABLE`]'s order.
        pub(super) const NAMES: &[&str] = &[
            $( stringify!($tfield), )*
            $($( concat!(stringify!($sec), ".", stringify!($field)), )*)*
        ];

        /// The TOML tables, in [`TABLE`]'s order.
        pub(super) const SECTIONS: &[&str] = &[ $( stringify!($sec), )* ];
    };
}
