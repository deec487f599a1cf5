//! The node's logging: a filtering logger (`format.rs`, `filter.rs`) writing through pipes the
//! node owns (`pumps.rs`), so a closed stdout never stops the node.

mod filter;
mod format;
mod pumps;

use std::io::IsTerminal;
use std::str::FromStr;

pub use filter::{Filter, FilterError};
pub use pumps::finish;

/// The `--log-format` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Pretty on a terminal, JSON otherwise (a file, a pipe, a container's log driver).
    Auto,
    /// Readable lines, the level coloured on a terminal.
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a log format: give auto, pretty or json")]
pub struct FormatError(String);

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Format, FormatError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "pretty" | "text" => Ok(Format::Pretty),
            "json" => Ok(Format::Json),
            _ => Err(FormatError(s.to_string())),
        }
    }
}

/// Starts the logger behind the pumps. Call once, before other threads log.
pub fn start(format: Format, filter: Filter) {
    // Decided before the pumps replace fd 1 with a pipe, which is never a terminal.
    let tty = std::io::stdout().is_terminal();
    pumps::start();
    let style = match format {
        Format::Json => format::Style::Json,
        Format::Auto if !tty => format::Style::Json,
        Format::Pretty | Format::Auto => format::Style::Pretty { color: tty },
    };
    let max = filter.max();
    if log::set_boxed_logger(Box::new(format::Logger { filter, style })).is_ok() {
        log::set_max_level(max);
    }
}
