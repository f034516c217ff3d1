//! The file as TOML: syntax errors with their excerpt, the line of every key, and reads of one key at a time,
//! so that every unknown key, wrong type and missing key of a file is reported, not only the first.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Problem;

/// The line of every key written in the file, so that a problem found by any later check can point at it.
#[derive(Debug, Clone, Default)]
pub(super) struct Lines(BTreeMap<String, usize>);

impl Lines {
    /// The line of `key`, or else of the nearest enclosing key that is written: a key left at its default is
    /// blamed on its table, a key of an array element on that element.
    pub(super) fn of(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(line) = self.0.get(k) {
                return Some(*line);
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }
}

/// A file that is valid TOML.
pub(super) struct Doc<'i> {
    pub(super) root: DeTable<'i>,
    pub(super) lines: Lines,
}

/// Parses `src`; a syntax error (every one the parser can recover from) comes back as problems instead.
pub(super) fn parse(src: &str) -> Result<Doc<'_>, Vec<Problem>> {
    let (root, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        return Err(errors.iter().map(|e| syntax_problem(src, e)).collect());
    }
    let root = root.into_inner();
    let mut lines = BTreeMap::new();
    record_lines(src, "", &root, &mut lines);
    Ok(Doc {
        root,
        lines: Lines(lines),
    })
}

fn line_at(src: &str, offset: usize) -> usize {
    let before = src.as_bytes().get(..offset).unwrap_or(src.as_bytes());
    before.iter().filter(|b| **b == b'\n').count() + 1
}

fn record_lines(src: &str, prefix: &str, table: &DeTable<'_>, lines: &mut BTreeMap<String, usize>) {
    for (k, v) in table.iter() {
        let key = join(prefix, k.get_ref());
        lines.insert(key.clone(), line_at(src, k.span().start));
        match v.get_ref() {
            DeValue::Table(t) => record_lines(src, &key, t, lines),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{key}[{i}]");
                    lines.insert(at.clone(), line_at(src, item.span().start));
                    if let DeValue::Table(t) = item.get_ref() {
                        record_lines(src, &at, t, lines);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The parser's message, then the offending line with a caret under the spot, each on its own line.
fn syntax_problem(src: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim();
    let Some(start) = e.span().map(|s| s.start) else {
        return Problem::file(format!("TOML syntax: {message}"));
    };
    let line = line_at(src, start);
    let line_start = src
        .get(..start)
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1);
    let text = src
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let column = src.get(line_start..start).map_or(0, |s| s.chars().count());
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    Problem {
        line: Some(line),
        ..Problem::file(format!(
            "TOML syntax: {message}\n  {number} | {text}\n  {pad} | {}^",
            " ".repeat(column)
        ))
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Collects what reading found wrong, and which keys could not be read at all.
#[derive(Default)]
pub(super) struct Reader {
    problems: RefCell<Vec<Problem>>,
    failed: RefCell<BTreeSet<String>>,
}

impl Reader {
    fn fail(&self, key: String, problem: impl Into<String>) {
        self.problems.borrow_mut().push(Problem::at(&key, problem));
        self.failed.borrow_mut().insert(key);
    }

    /// The problems, and the keys whose value is missing or unreadable: what later checks see there is a
    /// stand-in, so anything they would say about those keys (or keys inside them) is left unsaid.
    pub(super) fn finish(self) -> (Vec<Problem>, BTreeSet<String>) {
        (self.problems.into_inner(), self.failed.into_inner())
    }
}

/// One table of the file; every key read through it is known, and whatever else it holds is reported by
/// [`Table::finish`].
pub(super) struct Table<'r, 'i> {
    reader: &'r Reader,
    key: String,
    /// None when the table is absent: every key then reads as absent.
    entries: Option<&'r DeTable<'i>>,
    known: Vec<&'static str>,
}

impl<'r, 'i> Table<'r, 'i> {
    pub(super) fn root(reader: &'r Reader, root: &'r DeTable<'i>) -> Self {
        Table {
            reader,
            key: String::new(),
            entries: Some(root),
            known: Vec::new(),
        }
    }

    /// The dotted key of this table, e.g. `upstream.admin` or `trust_anchors[0]`.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    fn path(&self, name: &str) -> String {
        join(&self.key, name)
    }

    fn lookup(&mut self, name: &'static str) -> Option<&'r Spanned<DeValue<'i>>> {
        self.known.push(name);
        self.entries?.get(name)
    }

    fn read<T: DeserializeOwned>(&self, name: &str, v: &Spanned<DeValue<'i>>) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(v.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                self.reader
                    .fail(self.path(name), in_toml_terms(e.message().trim()));
                None
            }
        }
    }

    /// `name` if written; a value of the wrong type is a problem and reads as absent.
    pub(super) fn opt<T: DeserializeOwned>(&mut self, name: &'static str) -> Option<T> {
        let v = self.lookup(name)?;
        self.read(name, v)
    }

    /// `name`, or `default` when it is not written (or written with the wrong type, which is a problem).
    pub(super) fn or<T: DeserializeOwned>(
        &mut self,
        name: &'static str,
        default: impl Into<T>,
    ) -> T {
        self.opt(name).unwrap_or_else(|| default.into())
    }

    /// `name`, which must be written; when it is not (or has the wrong type) the problem is recorded and a
    /// stand-in returned, so the rest of the file is still checked.
    pub(super) fn req<T: DeserializeOwned + Default>(&mut self, name: &'static str) -> T {
        match self.lookup(name) {
            Some(v) => self.read(name, v).unwrap_or_default(),
            None => {
                // A missing table was reported once, as a whole.
                if self.entries.is_some() {
                    self.reader
                        .fail(self.path(name), "missing; this key is required");
                }
                T::default()
            }
        }
    }

    fn sub(&self, key: String, entries: Option<&'r DeTable<'i>>) -> Table<'r, 'i> {
        Table {
            reader: self.reader,
            key,
            entries,
            known: Vec::new(),
        }
    }

    fn as_table(&self, key: &str, v: &'r Spanned<DeValue<'i>>) -> Option<&'r DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.reader
                    .fail(key.to_string(), format!("must be a table, like [{key}]"));
                None
            }
        }
    }

    /// The table `name`, or None when it is not written.
    pub(super) fn table(&mut self, name: &'static str) -> Option<Table<'r, 'i>> {
        let v = self.lookup(name)?;
        let key = self.path(name);
        let t = self.as_table(&key, v)?;
        Some(self.sub(key, Some(t)))
    }

    /// The table `name`, read as empty (all its keys at their defaults) when it is not written.
    pub(super) fn table_or_empty(&mut self, name: &'static str) -> Table<'r, 'i> {
        let key = self.path(name);
        match self.lookup(name) {
            Some(v) => {
                let t = self.as_table(&key, v);
                self.sub(key, t)
            }
            None => self.sub(key, None),
        }
    }

    /// The table `name`, which must be written.
    pub(super) fn req_table(&mut self, name: &'static str) -> Table<'r, 'i> {
        if self.entries.is_some() && self.entries.and_then(|e| e.get(name)).is_none() {
            self.reader.fail(
                self.path(name),
                format!("missing; the [{name}] table is required"),
            );
        }
        self.table_or_empty(name)
    }

    /// The array of tables `name` (`[[name]]`), empty when it is not written.
    pub(super) fn tables(&mut self, name: &'static str) -> Vec<Table<'r, 'i>> {
        let key = self.path(name);
        let Some(v) = self.lookup(name) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.reader
                .fail(key, format!("must be an array of tables, like [[{name}]]"));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let at = format!("{key}[{i}]");
                let t = self.as_table(&at, item)?;
                Some(self.sub(at, Some(t)))
            })
            .collect()
    }

    /// Reports every key of this table that nothing asked for.
    pub(super) fn finish(self) {
        let Some(entries) = self.entries else {
            return;
        };
        for (k, v) in entries.iter() {
            let name: &str = k.get_ref();
            if self.known.contains(&name) {
                continue;
            }
            let what = match v.get_ref() {
                DeValue::Table(_) => "unknown table",
                _ => "unknown key",
            };
            let problem = match closest(name, &self.known) {
                Some(known) => format!("{what}; did you mean `{known}`?"),
                None => format!("{what}; expected one of: {}", self.known.join(", ")),
            };
            self.reader
                .problems
                .borrow_mut()
                .push(Problem::at(&self.path(name), problem));
        }
    }
}

/// serde names Rust types ("expected u64"); the operator wrote TOML.
fn in_toml_terms(message: &str) -> String {
    message
        .replace("expected u64", "expected a whole number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
}

/// The known key a typo most likely meant: at most two edits away.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
