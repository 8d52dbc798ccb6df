//! Bounded queues between tasks that hand work back when full instead of blocking forever or dropping it.
//! Only whole batches cross a queue.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Creates a queue that holds at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (QueueSender(tx), QueueReceiver(rx))
}

/// Why an item came back.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected<T> {
    /// The queue is full: try again later (back pressure).
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> Rejected<T> {
    pub fn into_inner(self) -> T {
        match self {
            Rejected::Full(t) | Rejected::Closed(t) => t,
        }
    }
}

#[derive(Debug)]
pub struct QueueSender<T>(Sender<T>);

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender(self.0.clone())
    }
}

impl<T> QueueSender<T> {
    /// Pushes without waiting; a full queue hands the item back.
    pub fn try_push(&self, item: T) -> Result<(), Rejected<T>> {
        self.0.try_send(item).map_err(|e| match e {
            TrySendError::Full(t) => Rejected::Full(t),
            TrySendError::Disconnected(t) => Rejected::Closed(t),
        })
    }

    /// Waits up to `timeout` for room; hands the item back if there was none.
    pub fn push_timeout(&self, item: T, timeout: Duration) -> Result<(), Rejected<T>> {
        self.0.send_timeout(item, timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(t) => Rejected::Full(t),
            crossbeam_channel::SendTimeoutError::Disconnected(t) => Rejected::Closed(t),
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
pub struct QueueReceiver<T>(Receiver<T>);

impl<T> QueueReceiver<T> {
    pub fn try_pop(&self) -> Option<T> {
        self.0.try_recv().ok()
    }

    /// Waits up to `timeout` for an item.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        self.0.recv_timeout(timeout).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_hands_the_item_back() {
        let (tx, rx) = bounded(2);
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        assert_eq!(tx.try_push(3), Err(Rejected::Full(3)));
        assert_eq!(tx.push_timeout(4, Duration::from_millis(5)), Err(Rejected::Full(4)));
        assert_eq!(rx.try_pop(), Some(1));
        tx.try_push(3).unwrap();
        assert_eq!(rx.len(), 2);
        drop(rx);
        assert_eq!(tx.try_push(5), Err(Rejected::Closed(5)));
    }
}
