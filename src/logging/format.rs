//! The logger: a [`Filter`] in front of one of two line formats, written to stdout.
//!
//! femme (the user's choice of logger) cannot be wrapped: its pretty and ndjson loggers are
//! private to it and it installs itself as the process's only logger, with one level for every
//! module and the format chosen by the build profile. So the lines are formatted here, in the
//! spirit of its two outputs: a readable line for a person, or one JSON object per line
//! (with the level as a word, not femme's number) for a log pipeline.

use std::fmt::Write as _;
use std::io::Write as _;

use log::{Level, Log, Metadata, Record, kv};
use serde_json::{Map, Value};

use super::Filter;
use crate::time::{rfc3339, unix_ms};

/// How a line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `TIME LEVEL target: message key=value`, the level coloured when `color`.
    Pretty { color: bool },
    /// One JSON object per line: `time`, `level`, `target`, `msg`, then the record's fields.
    Json,
}

pub struct Logger {
    pub filter: Filter,
    pub style: Style,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata.target(), metadata.level())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = match self.style {
            Style::Pretty { color } => pretty(record, color),
            Style::Json => json(record),
        };
        line.push('\n');
        // One write per line, so lines from threads never interleave; stdout is the pump's pipe,
        // which never fails (see `pumps`), but a failure would still only lose this line.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stdout().lock().flush();
    }
}

fn pretty(record: &Record<'_>, color: bool) -> String {
    let level = record.level();
    let mut out = rfc3339(unix_ms());
    let name = format!("{level:<5}");
    if color {
        let code = match level {
            Level::Error => "31",
            Level::Warn => "33",
            Level::Info => "32",
            Level::Debug | Level::Trace => "2",
        };
        let _ = write!(out, " \x1b[1;{code}m{name}\x1b[0m");
    } else {
        let _ = write!(out, " {name}");
    }
    let _ = write!(out, " {}: {}", record.target(), record.args());
    struct Pairs<'a>(&'a mut String);
    impl<'kvs> kv::VisitSource<'kvs> for Pairs<'_> {
        fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
            let _ = write!(self.0, " {key}={value}");
            Ok(())
        }
    }
    let _ = record.key_values().visit(&mut Pairs(&mut out));
    out
}

fn json(record: &Record<'_>) -> String {
    let mut fields = Map::new();
    fields.insert("time".into(), rfc3339(unix_ms()).into());
    fields.insert("level".into(), record.level().as_str().to_ascii_lowercase().into());
    fields.insert("target".into(), record.target().into());
    fields.insert("msg".into(), record.args().to_string().into());
    struct Fields<'a>(&'a mut Map<String, Value>);
    impl<'kvs> kv::VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
            // Numbers and flags stay numbers and flags, so a pipeline can sum and filter them.
            let value = if let Some(n) = value.to_u64() {
                n.into()
            } else if let Some(n) = value.to_i64() {
                n.into()
            } else if let Some(b) = value.to_bool() {
                b.into()
            } else if let Some(x) = value.to_f64() {
                serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
            } else {
                value.to_string().into()
            };
            self.0.insert(key.as_str().to_owned(), value);
            Ok(())
        }
    }
    let _ = record.key_values().visit(&mut Fields(&mut fields));
    Value::Object(fields).to_string()
}

#[cfg(test)]
mod tests {
    use super::{json, pretty};

    #[test]
    fn json_lines_carry_the_level_as_a_word_and_fields_as_typed_values() {
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("diststore::access")
            .args(format_args!("GET /health 200"))
            .key_values(&[("status", 200u64)])
            .build();
        let v: serde_json::Value = serde_json::from_str(&json(&record)).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "diststore::access");
        assert_eq!(v["msg"], "GET /health 200");
        assert_eq!(v["status"], 200);
        let line = pretty(&record, false);
        assert!(line.ends_with(" WARN  diststore::access: GET /health 200 status=200"), "{line}");
    }
}
