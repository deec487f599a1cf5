//! `RUST_LOG`-style filters: `info`, `warn,diststore::cluster=debug`, `diststore::access=off`.
//!
//! A filter is a comma-separated list of directives, each a level (the default for every
//! target) or `target=level`. A record's target (its module path, or the name given with
//! `target:`) takes the level of the longest directive target that is a prefix of it at a
//! `::` boundary, else the default. The syntax is env_logger's, without its regex suffix.

use std::str::FromStr;

use log::{Level, LevelFilter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Longest target first, so the first match is the most specific.
    targets: Vec<(String, LevelFilter)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a log filter: give comma-separated directives, each a level (off, error, warn, \
     info, debug, trace) or target=level, e.g. info,diststore::cluster=debug"
)]
pub struct FilterError(String);

impl Filter {
    /// Everything at `level` and above.
    pub fn level(level: LevelFilter) -> Filter {
        Filter { default: level, targets: Vec::new() }
    }

    /// The most verbose level any target may log at: what `log::set_max_level` is given, so
    /// records no directive wants cost no formatting.
    pub fn max(&self) -> LevelFilter {
        self.targets.iter().map(|(_, l)| *l).fold(self.default, std::cmp::max)
    }

    pub fn enabled(&self, target: &str, level: Level) -> bool {
        let wanted = self
            .targets
            .iter()
            .find(|(prefix, _)| {
                target
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l);
        level <= wanted
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        let bad = || FilterError(s.to_string());
        let mut filter = Filter::level(LevelFilter::Info);
        let mut seen_default = false;
        for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => {
                    let target = target.trim();
                    if target.is_empty() || target.contains(char::is_whitespace) {
                        return Err(bad());
                    }
                    let level = level.trim().parse().map_err(|_| bad())?;
                    filter.targets.retain(|(t, _)| t != target);
                    filter.targets.push((target.to_string(), level));
                }
                None => {
                    filter.default = directive.parse().map_err(|_| bad())?;
                    seen_default = true;
                }
            }
        }
        if !seen_default && filter.targets.is_empty() {
            return Err(bad());
        }
        filter.targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use log::{Level, LevelFilter};

    use super::Filter;

    #[test]
    fn the_longest_matching_target_decides_at_module_boundaries() {
        let f: Filter = "warn, diststore::cluster=debug ,diststore::cluster::link=off".parse().unwrap();
        assert!(f.enabled("diststore::cluster", Level::Debug));
        assert!(f.enabled("diststore::cluster::repair", Level::Debug));
        assert!(!f.enabled("diststore::cluster::link", Level::Error));
        assert!(!f.enabled("diststore::clusterx", Level::Info));
        assert!(!f.enabled("diststore::node", Level::Info));
        assert!(f.enabled("diststore::node", Level::Warn));
        assert_eq!(f.max(), LevelFilter::Debug);
    }

    #[test]
    fn a_target_alone_keeps_the_default_level_for_the_rest() {
        let f: Filter = "diststore::access=off".parse().unwrap();
        assert!(!f.enabled("diststore::access", Level::Info));
        assert!(f.enabled("diststore::node", Level::Info));
        assert!(!f.enabled("diststore::node", Level::Debug));
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in ["", "loud", "a=loud", "=info", "a b=info", ","] {
            assert!(bad.parse::<Filter>().is_err(), "{bad:?} was accepted");
        }
    }
}
