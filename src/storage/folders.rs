//! Maintained counts per folder, so a listing's `total` is one read instead of a count of
//! every matching name.
//!
//! A folder is any prefix of a name that ends in `/` (and the root, `""`). For each folder
//! with a live name under it, `folders_v1` keeps (names anywhere below, names directly in it,
//! folders directly in it): the totals of a listing by prefix, without and with `delimiter=/`.
//! The writer changes them as names become live or go; each change costs the name's depth.
//! Only the users' names count (not the node's own under `HIDDEN_PREFIX`), as in `Stats`.

use redb::{ReadableTable, Table};

use super::Result;

/// (below, direct files, direct folders) for one folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FolderCounts {
    pub below: u64,
    pub files: u64,
    pub folders: u64,
}

impl FolderCounts {
    pub(crate) fn from_value(v: (u64, u64, u64)) -> Self {
        Self { below: v.0, files: v.1, folders: v.2 }
    }

    fn value(self) -> (u64, u64, u64) {
        (self.below, self.files, self.folders)
    }
}

/// The folders `name` is in, deepest first, ending with the root `""`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    let deep = name.rmatch_indices('/').map(move |(i, _)| &name[..=i]);
    deep.chain(std::iter::once(""))
}

pub(crate) fn read(
    table: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    folder: &str,
) -> Result<FolderCounts> {
    Ok(table.get(folder)?.map(|v| FolderCounts::from_value(v.value())).unwrap_or_default())
}

/// Counts a name that became live (`live`) or went (`!live`) in every folder it is in.
pub(crate) fn count(
    table: &mut Table<'_, &'static str, (u64, u64, u64)>,
    name: &str,
    live: bool,
) -> Result<()> {
    // Whether the folder below the one at hand (the previous, deeper one) appeared or emptied:
    // that changes this folder's count of direct folders.
    let mut child_changed = false;
    for (depth, folder) in ancestors(name).enumerate() {
        let mut c = read(table, folder)?;
        let was_empty = c.below == 0;
        let step = |n: u64| if live { n + 1 } else { n.saturating_sub(1) };
        c.below = step(c.below);
        if depth == 0 {
            c.files = step(c.files);
        }
        if child_changed {
            c.folders = step(c.folders);
        }
        child_changed = if live { was_empty } else { c.below == 0 };
        if c.below == 0 {
            table.remove(folder)?;
        } else {
            table.insert(folder, c.value())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ancestors;

    #[test]
    fn a_name_is_in_each_prefix_ending_in_a_slash_and_the_root() {
        assert_eq!(ancestors("a/b/c.txt").collect::<Vec<_>>(), ["a/b/", "a/", ""]);
        assert_eq!(ancestors("top").collect::<Vec<_>>(), [""]);
        assert_eq!(ancestors("a//x").collect::<Vec<_>>(), ["a//", "a/", ""]);
    }
}
