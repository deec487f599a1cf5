//! The node's logging: femme (fixed by the user) at one level, writing through pipes the node
//! owns (`pumps.rs`), so a closed stdout never stops the node.
//!
//! femme chooses its format by build (readable lines in debug builds, one JSON object per line
//! in release builds) and filters by one level for every module; it cannot be wrapped, so
//! neither the format nor per-module filters are ours to choose while it is the logger.

mod pumps;

pub use pumps::finish;

/// Starts femme at `level`, behind the pumps. Call once, before other threads log.
pub fn start(level: log::LevelFilter) {
    pumps::start();
    femme::with_level(level);
}
