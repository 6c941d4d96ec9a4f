//! Turning a deserializer error into a message that says where the problem is: the line and
//! column (from serde-saphyr or serde_json) and, when the position falls inside a `jobs`,
//! `files`, `resource_requirements` or `failure_handlers` entry, which entry.
//!
//! The deserializers know the position but not which job it belongs to, so on error the text is
//! read a second time into an [`Outline`]: the position of every top-level key and of every list
//! entry, with its `name`. JSON is read for the outline with serde-saphyr too (JSON is YAML flow
//! syntax); if that fails the message simply has no entry name.

use super::raw;
use super::{SpecError, SpecFormat};
use regex::Regex;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;
use std::sync::LazyLock;

/// Line and column, both 1-based; ordered as positions in the text.
type Pos = (u64, u64);

/// Where a list entry starts, and its `name` if it has a usable one.
type EntryStart = (Pos, Option<String>);

/// Which struct an unknown key was found in, recognised from serde's list of expected fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Top,
    Job,
    File,
    Resources,
    Handler,
    Rule,
}

impl Section {
    /// The keys that have an effect in this section, for the error message.
    pub fn accepted(self) -> &'static [&'static str] {
        match self {
            Section::Top => raw::SPEC_FIELDS,
            Section::Job => raw::JOB_FIELDS,
            Section::File => raw::FILE_FIELDS,
            Section::Resources => raw::RESOURCE_FIELDS,
            Section::Handler => raw::HANDLER_FIELDS,
            Section::Rule => raw::RULE_FIELDS,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Section::Top => "the top level",
            Section::Job => "a job",
            Section::File => "a file",
            Section::Resources => "a resource_requirements entry",
            Section::Handler => "a failure handler",
            Section::Rule => "a failure handler rule",
        }
    }

    /// Recognise the struct from the field names serde says it expected: each struct has one
    /// field no other has.
    fn from_expected(expected: &str) -> Option<Section> {
        static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z_]+").unwrap());
        let words: Vec<&str> = WORD.find_iter(expected).map(|m| m.as_str()).collect();
        let has = |w: &str| words.contains(&w);
        [
            ("jobs", Section::Top),
            ("command", Section::Job),
            ("path", Section::File),
            ("num_cpus", Section::Resources),
            ("rules", Section::Handler),
            ("exit_codes", Section::Rule),
        ]
        .into_iter()
        .find(|(w, _)| has(w))
        .map(|(_, s)| s)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// A YAML error as (message without location, position).
pub(super) fn yaml_error(text: &str, err: &serde_saphyr::Error) -> SpecError {
    // The user formatter words a few messages for people rather than API users (a duplicate key
    // is "not allowed here" rather than "set DuplicateKeyPolicy"); snippets are left out because
    // the error must stay one paragraph.
    let mut options = serde_saphyr::RenderOptions::new(&serde_saphyr::UserMessageFormatter);
    options.snippets = serde_saphyr::SnippetMode::Off;
    let rendered = err.render_with_options(options);
    static SUFFIX: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r" at line \d+, column \d+$").unwrap());
    let message = SUFFIX.replace(rendered.trim(), "").into_owned();
    let pos = err
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|&(line, _)| line > 0);
    classify(text, SpecFormat::Yaml, message, pos)
}

pub(super) fn json_error(text: &str, err: &serde_json::Error) -> SpecError {
    static SUFFIX: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r" at line \d+ column \d+$").unwrap());
    let rendered = err.to_string();
    let message = SUFFIX.replace(&rendered, "").into_owned();
    let pos = (err.line() > 0).then(|| (err.line() as u64, err.column() as u64));
    classify(text, SpecFormat::Json, message, pos)
}

fn classify(text: &str, format: SpecFormat, message: String, pos: Option<Pos>) -> SpecError {
    static UNKNOWN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^unknown field `([^`]*)`, expected (.*)$").unwrap());
    let entry = pos.and_then(|p| Outline::read(text).and_then(|o| o.entry_at(p)));
    if let Some(caps) = UNKNOWN.captures(&message) {
        if let Some(section) = Section::from_expected(&caps[2]) {
            let key = caps[1].to_string();
            let suggestion = super::build::closest(&key, section.accepted().iter().copied());
            return SpecError::UnknownField {
                key,
                section,
                entry,
                line: pos.map(|p| p.0),
                column: pos.map(|p| p.1),
                suggestion,
            };
        }
    }
    SpecError::Parse {
        format,
        message,
        entry,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
    }
}

/// The four top-level lists whose entries have names.
const LISTS: &[(&str, &str)] = &[
    ("jobs", "job"),
    ("files", "file"),
    ("resource_requirements", "resource group"),
    ("failure_handlers", "failure handler"),
];

/// Positions of top-level keys and of the entries of the named lists.
#[derive(Debug, Default)]
struct Outline {
    /// Top-level keys in document order.
    keys: Vec<(String, Pos)>,
    /// For each list key: entry start positions and names, in order.
    lists: Vec<(String, Vec<EntryStart>)>,
}

impl Outline {
    fn read(text: &str) -> Option<Outline> {
        serde_saphyr::from_str_with_options::<Outline>(text, super::yaml_options()).ok()
    }

    /// A label such as `job "b"` (or `job #2` when it has no usable name) for the entry that
    /// contains `pos`, if any.
    fn entry_at(&self, pos: Pos) -> Option<String> {
        // The section is the last top-level key at or before the position; an error on the key
        // itself belongs to the top level.
        let (key, key_pos) = self.keys.iter().rev().find(|(_, p)| *p <= pos)?;
        if *key_pos == pos {
            return None;
        }
        let (_, entries) = self.lists.iter().find(|(k, _)| k == key)?;
        let index = entries.iter().rposition(|(start, _)| *start <= pos)?;
        let noun = LISTS.iter().find(|(k, _)| k == key).map(|(_, n)| *n)?;
        Some(match &entries[index].1 {
            Some(name) => format!("{noun} {name:?}"),
            None => format!("{noun} #{} (counting from 1)", index + 1),
        })
    }
}

impl<'de> Deserialize<'de> for Outline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OutlineVisitor;
        impl<'de> Visitor<'de> for OutlineVisitor {
            type Value = Outline;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline, A::Error> {
                let mut outline = Outline::default();
                while let Some(key) = map.next_key::<Spanned<Loose>>()? {
                    let pos = (key.referenced.line(), key.referenced.column());
                    let name = key.value.0.unwrap_or_default();
                    if LISTS.iter().any(|(k, _)| *k == name) {
                        let entries: Entries = map.next_value()?;
                        outline.lists.push((name.clone(), entries.0));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                    outline.keys.push((name, pos));
                }
                Ok(outline)
            }
        }
        d.deserialize_map(OutlineVisitor)
    }
}

/// Visitor methods that accept any scalar and return `$value` (which may use `v`, the
/// scalar as text). Used by the permissive outline types below, which must never fail.
macro_rules! scalars_give {
    ($ty:ty, |$v:ident| $value:expr) => {
        fn visit_str<E: de::Error>(self, $v: &str) -> Result<$ty, E> {
            let $v = $v.to_string();
            Ok($value)
        }
        fn visit_bool<E: de::Error>(self, $v: bool) -> Result<$ty, E> {
            let $v = $v.to_string();
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, $v: i64) -> Result<$ty, E> {
            let $v = $v.to_string();
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, $v: u64) -> Result<$ty, E> {
            let $v = $v.to_string();
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, $v: f64) -> Result<$ty, E> {
            let $v = $v.to_string();
            Ok($value)
        }
    };
}

/// The entries of a list: start position and `name`. Anything that is not a list gives none.
struct Entries(Vec<EntryStart>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<Spanned<EntryName>>()? {
                    let pos = (entry.referenced.line(), entry.referenced.column());
                    out.push((pos, entry.value.0));
                }
                Ok(Entries(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entries, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Entries(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            scalars_give!(Entries, |_v| Entries(Vec::new()));
        }
        d.deserialize_any(V)
    }
}

/// The `name` of a list entry, if it is a mapping with a scalar `name`; any other value gives
/// none.
struct EntryName(Option<String>);

impl<'de> Deserialize<'de> for EntryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EntryName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryName, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<Loose>()? {
                    let value: Loose = map.next_value()?;
                    if key.0.as_deref() == Some("name") {
                        name = value.0;
                    }
                }
                Ok(EntryName(name))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<EntryName, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| EntryName(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<EntryName, E> {
                Ok(EntryName(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<EntryName, E> {
                Ok(EntryName(None))
            }
            scalars_give!(EntryName, |_v| EntryName(None));
        }
        d.deserialize_any(V)
    }
}

/// Any value, kept as text when it is a scalar.
struct Loose(Option<String>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Loose(None))
            }
            scalars_give!(Loose, |v| Loose(Some(v)));
        }
        d.deserialize_any(V)
    }
}
