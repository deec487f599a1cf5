//! Repair's persisted work: chunks found missing or damaged (`repair_queue_v1`), and the walk
//! of the chunk references a ranking pass makes in bounded pages.
//!
//! A chunk enters the queue when something finds it missing or damaged (the scrub dropping a
//! copy, in the same transaction as the drop; a peer asking for or verifying a chunk this node
//! lacks; names arriving by anti-entropy). Each entry keeps when it is next due and how many
//! tries it has had, so a chunk no node can give yet waits with a backoff instead of being
//! retried in a loop. The table is created by the first write that needs it: a database that
//! never had one reads as an empty queue, so it needs no schema step.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

use super::{CHUNK_INDEX, CHUNK_REFS, Op, Result, Store, has_sealed};
use crate::content::ChunkId;

/// Chunk id → (unix ms when next due, tries so far).
pub(crate) const REPAIR_QUEUE: TableDefinition<[u8; 32], (u64, u32)> =
    TableDefinition::new("repair_queue_v1");

/// A queued chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: ChunkId,
    pub due_ms: u64,
    pub tries: u32,
}

/// One look at the queue: see [`Store::repair_queue`].
#[derive(Debug, Default)]
pub struct QueuePage {
    pub due: Vec<Queued>,
    pub queued: u64,
    pub next_due: Option<u64>,
}

/// What the writer does to the queue in one operation.
#[derive(Debug, Default)]
pub(crate) struct QueueChange {
    /// Added (or, if queued already, made due at once: a new finding is news).
    pub add: Vec<ChunkId>,
    /// Put back with a later due time and one more try.
    pub defer: Vec<(ChunkId, u64)>,
    pub remove: Vec<ChunkId>,
}

/// Applies `change` inside the writer's transaction.
pub(crate) fn apply(
    queue: &mut redb::Table<'_, [u8; 32], (u64, u32)>,
    change: QueueChange,
    now_ms: u64,
) -> Result<()> {
    for id in change.add {
        let tries = queue.get(id.as_bytes())?.map_or(0, |v| v.value().1);
        queue.insert(id.as_bytes(), (now_ms, tries))?;
    }
    for (id, due) in change.defer {
        let tries = queue.get(id.as_bytes())?.map_or(0, |v| v.value().1);
        queue.insert(id.as_bytes(), (due, tries.saturating_add(1)))?;
    }
    for id in change.remove {
        queue.remove(id.as_bytes())?;
    }
    Ok(())
}

impl Store {
    /// Puts chunks in the repair queue, durably.
    pub async fn enqueue_repair(&self, ids: Vec<ChunkId>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.submit(|reply| Op::RepairQueue { change: QueueChange { add: ids, ..Default::default() }, reply })
            .await
    }

    /// Removes done entries and defers the rest to their new due times, in one commit.
    pub async fn settle_repair(&self, done: Vec<ChunkId>, defer: Vec<(ChunkId, u64)>) -> Result<()> {
        if done.is_empty() && defer.is_empty() {
            return Ok(());
        }
        self.submit(|reply| Op::RepairQueue {
            change: QueueChange { add: Vec::new(), defer, remove: done },
            reply,
        })
        .await
    }

    /// Up to `limit` queued chunks due at `now_ms`, in id order, how many are queued in all,
    /// and the earliest due time of those not due yet (complete when none is due, as the walk
    /// then read the whole queue: it holds only chunks found missing, few in a healthy cluster).
    pub async fn repair_queue(&self, limit: usize, now_ms: u64) -> Result<QueuePage> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let queue = match txn.open_table(REPAIR_QUEUE) {
                Ok(q) => q,
                Err(TableError::TableDoesNotExist(_)) => return Ok(QueuePage::default()),
                Err(e) => return Err(e.into()),
            };
            let mut page = QueuePage { queued: queue.len()?, ..QueuePage::default() };
            for item in queue.iter()? {
                let (k, v) = item?;
                let (due_ms, tries) = v.value();
                if due_ms <= now_ms {
                    page.due.push(Queued { id: ChunkId::from_bytes(k.value()), due_ms, tries });
                    if page.due.len() >= limit {
                        break;
                    }
                } else {
                    page.next_due = Some(page.next_due.map_or(due_ms, |n| n.min(due_ms)));
                }
            }
            Ok(page)
        })
        .await
    }

    /// One page of a ranking pass: up to `limit` chunk ids some manifest uses, after `after`,
    /// each with whether this node holds it. `None` as the cursor starts from the first.
    pub async fn referenced_chunks_after(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, bool)>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let refs = txn.open_table(CHUNK_REFS)?;
            let chunks = txn.open_table(CHUNK_INDEX)?;
            let mut range = match after {
                Some(id) => {
                    refs.range((std::ops::Bound::Excluded(*id.as_bytes()), std::ops::Bound::Unbounded))?
                }
                None => refs.range::<[u8; 32]>(..)?,
            };
            let mut out = Vec::with_capacity(limit.min(4096));
            while out.len() < limit {
                let Some(item) = range.next() else { break };
                let (k, v) = item?;
                if v.value() > 0 {
                    let id = ChunkId::from_bytes(k.value());
                    out.push((id, has_sealed(&chunks, &id)?));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Which of `ids` some stored manifest still uses, each with whether this node holds it.
    pub async fn chunk_states(&self, ids: Vec<ChunkId>) -> Result<Vec<(bool, bool)>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let refs = txn.open_table(CHUNK_REFS)?;
            let chunks = txn.open_table(CHUNK_INDEX)?;
            ids.iter()
                .map(|id| {
                    let used = refs.get(id.as_bytes())?.is_some_and(|v| v.value() > 0);
                    Ok((used, has_sealed(&chunks, id)?))
                })
                .collect()
        })
        .await
    }
}
