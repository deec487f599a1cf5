//! Names in size and modified order, kept by the writer, so a listing in those orders reads
//! its page from one range scan instead of ranking every matching name.
//!
//! `sorted_names_v1` holds, for each live name of the users (not the node's own under
//! `HIDDEN_PREFIX`, as in `folders_v1`), four keys (order, scope, sort key, name):
//! its size and its modified time under its parent folder (the names directly in a folder:
//! a `delimiter=/` listing), and both again under the whole store (scope [`ALL`], a listing
//! of every name). The writer removes a name's keys with the record they were made from and
//! inserts the new record's, in the same transaction, so the index never disagrees with
//! `names_v3`. A listing seeks to the `after` name's own key (its live record's sort key)
//! and reads `limit + 1` keys from there, forwards or backwards.

use std::ops::Bound;

use redb::{ReadableTable, Table};

use super::records::decode;
use super::{ListPage, ListQuery, NameEntry, NameRecord, Result, SortBy, StorageError};

/// Key: (order, scope, sort key, name). Scope is the parent folder (`""` for the root), or
/// [`ALL`] for the whole store.
pub(crate) type SortedKey<'a> = (u8, &'a str, u64, &'a str);

const SIZE: u8 = 0;
const MODIFIED: u8 = 1;
/// The scope of the whole store's keys. No folder is named this: every folder but the root
/// ends in `/`, and the root is `""`.
const ALL: &str = "*";

/// The folder a name is directly in (`""` for the root).
fn parent(name: &str) -> &str {
    name.rfind('/').map_or("", |i| &name[..=i])
}

/// The index keys of one live name with `record`.
fn keys<'a>(name: &'a str, record: &NameRecord) -> [SortedKey<'a>; 4] {
    let dir = parent(name);
    [
        (SIZE, dir, record.size, name),
        (MODIFIED, dir, record.modified_ms, name),
        (SIZE, ALL, record.size, name),
        (MODIFIED, ALL, record.modified_ms, name),
    ]
}

/// Adds (`live`) or removes the keys of `name` as `record` describes it. The caller passes the
/// record the keys were made from when removing, so they are found exactly.
pub(crate) fn index(
    table: &mut Table<'_, SortedKey<'static>, ()>,
    name: &str,
    record: &NameRecord,
    live: bool,
) -> Result<()> {
    for key in keys(name, record) {
        if live {
            table.insert(key, ())?;
        } else {
            table.remove(key)?;
        }
    }
    Ok(())
}

/// Whether the index answers `q`: a size or modified order over the users' names, without
/// `search`, either a folder's own names (`delimiter=/`, prefix a folder or empty) or every
/// name (no delimiter, empty prefix). Anything else (a recursive listing of a folder, a
/// search) ranks the matching names as before.
pub(crate) fn answers(q: &ListQuery) -> bool {
    let folder = q.prefix.is_empty() || q.prefix.ends_with('/');
    q.sort != SortBy::Name
        && q.hidden == Some(super::HIDDEN_PREFIX)
        && q.search.is_none()
        && ((q.delimiter && folder) || (!q.delimiter && q.prefix.is_empty()))
}

/// One page of a listing [`answers`] holds true for: entries, `next` (the last entry's name,
/// when more follow) and, with a delimiter, the folder's first `limit` folders by name (as the
/// ranked path gives them: folders have no size or time). `total` is left to the caller.
pub(crate) fn list(
    sorted: &impl ReadableTable<SortedKey<'static>, ()>,
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    folders: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    q: &ListQuery,
) -> Result<ListPage> {
    let limit = q.limit.max(1);
    let order = if q.sort == SortBy::Size { SIZE } else { MODIFIED };
    let scope = if q.delimiter { q.prefix.as_str() } else { ALL };
    // The smallest string above `scope` bounds its keys from above.
    let past = format!("{scope}\0");
    let lowest: SortedKey = (order, scope, 0, "");
    let beyond: SortedKey = (order, &past, 0, "");
    let cursor = match q.after.as_deref() {
        Some(after) => Some((cursor_key(names, q, after)?, after)),
        None => None,
    };
    let range =
        match (cursor, q.descending) {
            (None, _) => sorted.range::<SortedKey>(lowest..beyond)?,
            (Some((k, after)), false) => sorted
                .range::<SortedKey>((Bound::Excluded((order, scope, k, after)), Bound::Excluded(beyond)))?,
            (Some((k, after)), true) => sorted
                .range::<SortedKey>((Bound::Included(lowest), Bound::Excluded((order, scope, k, after))))?,
        };
    let mut page = ListPage::default();
    let keys: Box<dyn Iterator<Item = _>> =
        if q.descending { Box::new(range.rev()) } else { Box::new(range) };
    for item in keys.skip(q.offset).take(limit + 1) {
        let (key, _) = item?;
        let name = key.value().3;
        if page.entries.len() == limit {
            page.next = page.entries.last().map(|e| e.name.clone());
            break;
        }
        let record = live_record(names, name)?.ok_or_else(|| {
            StorageError::Corrupt(format!("the size and time index names {name:?}, which is not live"))
        })?;
        page.entries.push(NameEntry { name: name.to_owned(), record });
    }
    if q.delimiter {
        page.folders = child_folders(folders, &q.prefix, limit)?;
    }
    Ok(page)
}

fn live_record(
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<NameRecord>> {
    let Some(raw) = names.get(name)? else { return Ok(None) };
    let record: NameRecord = decode("name record", raw.value())?;
    Ok(record.file.is_some().then_some(record))
}

/// The sort key of the `after` name: its live record's, so the page goes on right after it.
/// A name that is gone (or not in this listing) has no place to go on from.
fn cursor_key(
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    q: &ListQuery,
    after: &str,
) -> Result<u64> {
    let in_listing =
        if q.delimiter { parent(after) == q.prefix } else { !after.starts_with(super::HIDDEN_PREFIX) };
    let record = if in_listing { live_record(names, after)? } else { None };
    let record = record.ok_or_else(|| {
        StorageError::StaleCursor(format!(
            "`after` ({after:?}) is not a file of this listing any more (deleted or moved since the \
             last page?); list again from the first page"
        ))
    })?;
    Ok(if q.sort == SortBy::Size { record.size } else { record.modified_ms })
}

/// The first `limit` folders directly in `folder`, by name: each found with one seek into
/// `folders_v1`, jumping over the folders below it.
fn child_folders(
    folders: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    folder: &str,
    limit: usize,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut from = format!("{folder}\0");
    while found.len() < limit {
        let Some(item) = folders.range::<&str>(from.as_str()..)?.next() else { break };
        let (key, _) = item?;
        let key = key.value();
        let Some(rest) = key.strip_prefix(folder) else { break };
        // Every folder below `folder` has a direct one above it in `folders_v1` (counts are
        // kept in each folder a name is in), met first in key order.
        let Some(slash) = rest.find('/') else { break };
        let child = &key[..folder.len() + slash + 1];
        found.push(child.to_owned());
        // '0' follows '/': the next key from here is past everything under `child`.
        from = format!("{}0", &child[..child.len() - 1]);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::parent;

    #[test]
    fn a_name_is_directly_in_the_folder_before_its_last_slash() {
        assert_eq!(parent("a/b/c.txt"), "a/b/");
        assert_eq!(parent("top"), "");
        assert_eq!(parent("a//x"), "a//");
    }
}
