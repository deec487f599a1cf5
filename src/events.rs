//! Change notifications for live views (server-sent events).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put {
        name: String,
    },
    Delete {
        name: String,
    },
    /// A peer came up or went down.
    Membership,
}

/// Fans events out to subscribers. A subscriber that falls behind loses events rather than
/// slowing writers down; live views re-read the list anyway.
#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<async_channel::Sender<Event>>>,
    /// Counts changes to the node's own metadata (names under `.diststore/`), here or from a
    /// peer. Unlike subscriptions it loses nothing, so caches of that metadata compare it.
    system_changes: AtomicU64,
}

impl Events {
    pub fn subscribe(&self) -> async_channel::Receiver<Event> {
        let (tx, rx) = async_channel::bounded(64);
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Published after the change is stored, so a reader that took the count before reading
    /// never keeps what it read past a change.
    pub fn publish(&self, event: Event) {
        if let Event::Put { name } | Event::Delete { name } = &event
            && name.starts_with(crate::storage::HIDDEN_PREFIX)
        {
            self.system_changes.fetch_add(1, Ordering::SeqCst);
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            let _ = tx.try_send(event.clone());
        }
    }

    /// How many changes to the node's own metadata were published so far.
    pub fn system_changes(&self) -> u64 {
        self.system_changes.load(Ordering::SeqCst)
    }
}
