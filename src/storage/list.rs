//! Listing names: one range scan from the prefix (or the `after` cursor), a page kept as the
//! scan meets it in name order, or a bounded top-k heap for the orders `sorted` does not answer;
//! folders folded, each with one seek past the names under it,
//! when a delimiter is asked for.

use redb::ReadableTable;

use super::records::decode;
use super::{ListPage, ListQuery, NameEntry, NameRecord, Result, SortBy};

/// One item of a listing: a file, or (with a delimiter) a folder standing for every name under it.
enum Listed {
    File(NameEntry),
    Folder(String),
}

impl Listed {
    fn key(&self) -> &str {
        match self {
            Listed::File(e) => &e.name,
            Listed::Folder(f) => f,
        }
    }
}

pub(super) fn list_names(
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    q: &ListQuery,
) -> Result<ListPage> {
    let mut page = ListPage::default();
    let limit = q.limit.max(1);
    let by_name_ascending = q.sort == SortBy::Name && !q.descending;
    let hidden = q.hidden;
    let search = q.search.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
    // Memory stays one page (plus the offset, for other orders): name order keeps the page as
    // the scan meets it; other orders keep the best `offset + limit + 1` files seen so far in
    // a heap whose top is the one to drop, so `total` and a small top-k never hold every
    // record. Folders have no size or time to sort by: in those orders they come apart, the
    // first `limit` of them by name.
    let keep = q.offset.saturating_add(limit).saturating_add(1);
    let mut skipped = 0;
    let mut ascending: Vec<Listed> = Vec::new();
    let mut ranked = std::collections::BinaryHeap::new();
    let mut last_folder: Option<String> = None;
    // Paging by `after` without a total starts the scan there, so a listing read page by
    // page costs each name once rather than every page rescanning from the prefix.
    let mut start = match q.after.as_deref() {
        Some(after) if by_name_ascending && !q.count && after > q.prefix.as_str() => after.to_owned(),
        _ => q.prefix.clone(),
    };
    // With a delimiter, once a folder is listed the scan seeks past every name under it, so a
    // folder costs one seek, not a read of all it holds. A search must look at each name (a
    // folder is listed if any name under it matches), so it reads them all.
    let skip_folders = q.delimiter && search.is_none();
    'seek: loop {
        for item in names.range(start.as_str()..)? {
            let (key, value) = item?;
            let name = key.value();
            if !name.starts_with(&q.prefix) {
                break 'seek;
            }
            if hidden.is_some_and(|h| name.starts_with(h)) {
                continue;
            }
            if search.as_deref().is_some_and(|s| !name.to_lowercase().contains(s)) {
                continue;
            }
            let record: NameRecord = decode("name record", value.value())?;
            if record.file.is_none() {
                continue;
            }
            // Names below the next '/' fold into their folder, listed once (names are scanned
            // in order, so a folder's names are contiguous).
            let listed = match q.delimiter.then(|| name[q.prefix.len()..].find('/')).flatten() {
                Some(i) => {
                    let folder = &name[..q.prefix.len() + i + 1];
                    if last_folder.as_deref() == Some(folder) {
                        continue;
                    }
                    last_folder = Some(folder.to_owned());
                    Listed::Folder(folder.to_owned())
                }
                None => Listed::File(NameEntry { name: name.to_owned(), record }),
            };
            // '0' follows '/': the first name past everything under the folder.
            let past_folder = match &listed {
                Listed::Folder(f) if skip_folders => Some(format!("{}0", &f[..f.len() - 1])),
                _ => None,
            };
            page.total += 1;
            if by_name_ascending {
                // A folder named as `after` was the last item of the previous page.
                if q.after.as_deref().is_some_and(|after| listed.key() <= after) {
                    // Already on an earlier page: only counted.
                } else if skipped < q.offset {
                    skipped += 1;
                } else if ascending.len() <= limit {
                    // One extra entry past the page says whether there is a next page.
                    ascending.push(listed);
                } else if !q.count {
                    break 'seek;
                }
            } else {
                match listed {
                    Listed::Folder(f) => {
                        if page.folders.len() < limit {
                            page.folders.push(f);
                        }
                    }
                    Listed::File(entry) => {
                        ranked.push(Ranked::new(entry, q));
                        if ranked.len() > keep {
                            ranked.pop();
                        }
                    }
                }
            }
            if let Some(past) = past_folder {
                start = past;
                continue 'seek;
            }
        }
        break;
    }
    let all: Vec<Listed> = if by_name_ascending {
        ascending
    } else {
        ranked.into_sorted_vec().into_iter().skip(q.offset).map(|r| Listed::File(r.entry)).collect()
    };
    let mut items: Vec<Listed> = all.into_iter().take(limit + 1).collect();
    if items.len() > limit {
        items.truncate(limit);
        if by_name_ascending {
            page.next = items.last().map(|l| l.key().to_owned());
        }
    }
    for item in items {
        match item {
            Listed::File(e) => page.entries.push(e),
            Listed::Folder(f) => page.folders.push(f),
        }
    }
    Ok(page)
}

/// A name entry ordered as a listing asks: ties on size or time go by name, and a descending
/// listing reverses the whole order.
struct Ranked {
    primary: u64,
    descending: bool,
    entry: NameEntry,
}

impl Ranked {
    fn new(entry: NameEntry, q: &ListQuery) -> Ranked {
        let primary = match q.sort {
            SortBy::Name => 0,
            SortBy::Size => entry.record.size,
            SortBy::Modified => entry.record.modified_ms,
        };
        Ranked { primary, descending: q.descending, entry }
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let order = self.primary.cmp(&other.primary).then_with(|| self.entry.name.cmp(&other.entry.name));
        if self.descending { order.reverse() } else { order }
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ranked {}

/// Whether [`list_descending`] answers `q`: descending name order without a delimiter or a
/// search (the kept totals give `total`).
pub(super) fn descends(q: &ListQuery) -> bool {
    q.sort == SortBy::Name && q.descending && !q.delimiter && q.search.is_none() && !q.count
}

/// Descending name order, read backwards from the end of the prefix (or from before `after`):
/// a page costs its own size (plus `offset`) and the deleted names met on the way.
pub(super) fn list_descending(
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    q: &ListQuery,
) -> Result<ListPage> {
    use std::ops::Bound;
    let limit = q.limit.max(1);
    let end = past_prefix(&q.prefix);
    let upper = match (q.after.as_deref(), end.as_deref()) {
        (Some(after), _) => Bound::Excluded(after),
        (None, Some(end)) => Bound::Excluded(end),
        (None, None) => Bound::Unbounded,
    };
    let mut page = ListPage::default();
    let mut skipped = 0;
    for item in names.range::<&str>((Bound::Included(q.prefix.as_str()), upper))?.rev() {
        let (key, value) = item?;
        let name = key.value();
        if !name.starts_with(&q.prefix) || q.hidden.is_some_and(|h| name.starts_with(h)) {
            continue;
        }
        let record: NameRecord = decode("name record", value.value())?;
        if record.file.is_none() {
            continue;
        }
        if skipped < q.offset {
            skipped += 1;
            continue;
        }
        if page.entries.len() == limit {
            page.next = page.entries.last().map(|e| e.name.clone());
            break;
        }
        page.entries.push(NameEntry { name: name.to_owned(), record });
    }
    Ok(page)
}

/// The smallest string above every string starting with `prefix`; `None` for none (the
/// empty prefix, or one of only the largest char).
fn past_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::past_prefix;

    #[test]
    fn past_a_prefix_is_its_last_char_plus_one() {
        assert_eq!(past_prefix("dir/").as_deref(), Some("dir0"));
        assert_eq!(past_prefix(""), None);
        assert_eq!(past_prefix("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(past_prefix("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
