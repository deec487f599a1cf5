//! Change notifications for live views (server-sent events).

use std::sync::Mutex;

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
}

impl Events {
    pub fn subscribe(&self) -> async_channel::Receiver<Event> {
        let (tx, rx) = async_channel::bounded(64);
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    pub fn publish(&self, event: Event) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            let _ = tx.try_send(event.clone());
        }
    }
}
