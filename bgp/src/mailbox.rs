//! A small bounded queue between a session's tasks.
//!
//! A reflector holds a session per client, and each session four queues: commands from
//! the core, events from its connection, and the control and data queues of its writer.
//! Tokio's channel is built for throughput between busy tasks: its shared state is
//! cache-padded (about 512 octets, allocated aligned) and it allocates a block of 32
//! slots up front, so the four cost some 3 KiB a session before a message is sent. These
//! queues carry a few messages at a time; a mutex around a `VecDeque` and two `Notify`s
//! do the same job in under 200 octets, and hold no slots while empty.
//!
//! Semantics follow `tokio::sync::mpsc` where the session relies on them: FIFO, a
//! capacity that `try_send` reports as `Full` and `send` waits on, `Closed` once the
//! receiver is gone, `recv` yielding `None` once every sender is gone and the queue is
//! empty, and a `recv` that is cancel safe (nothing is taken from the queue unless it is
//! returned).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::Notify;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// A message arrived, or the last sender went.
    readable: Notify,
    /// Room was made, or the receiver went.
    writable: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiver: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The lock is never held across anything that can panic with the state half
        // changed, so a poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end; clone it for more senders.
pub(crate) struct Tx<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end.
pub(crate) struct Rx<T> {
    shared: Arc<Shared<T>>,
}

/// A queue holding at most `capacity` messages (at least one).
pub(crate) fn channel<T>(capacity: usize) -> (Tx<T>, Rx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            receiver: true,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (
        Tx {
            shared: shared.clone(),
        },
        Rx { shared },
    )
}

impl<T> Tx<T> {
    /// Queue `v` if there is room.
    pub(crate) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut s = self.shared.lock();
        if !s.receiver {
            return Err(TrySendError::Closed(v));
        }
        if s.queue.len() >= s.capacity {
            return Err(TrySendError::Full(v));
        }
        s.queue.push_back(v);
        drop(s);
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Queue `v`, waiting for room.
    pub(crate) async fn send(&self, v: T) -> Result<(), SendError<T>> {
        loop {
            let room = self.shared.writable.notified();
            tokio::pin!(room);
            // Registered before looking, so room made after the look wakes this wait.
            room.as_mut().enable();
            {
                let mut s = self.shared.lock();
                if !s.receiver {
                    return Err(SendError(v));
                }
                if s.queue.len() < s.capacity {
                    s.queue.push_back(v);
                    drop(s);
                    self.shared.readable.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Messages sent and not yet received.
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Tx {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Tx<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders -= 1;
        let last = s.senders == 0;
        drop(s);
        if last {
            self.shared.readable.notify_one();
        }
    }
}

impl<T> std::fmt::Debug for Tx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Tx")
    }
}

impl<T> Rx<T> {
    /// The next message; `None` once every sender is gone and nothing is queued. Cancel
    /// safe.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            let arrived = self.shared.readable.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut s = self.shared.lock();
                if let Some(v) = s.queue.pop_front() {
                    if s.queue.is_empty() {
                        // A quiet queue holds no slots.
                        s.queue = VecDeque::new();
                    }
                    drop(s);
                    self.shared.writable.notify_one();
                    return Some(v);
                }
                if s.senders == 0 {
                    return None;
                }
            }
            arrived.await;
        }
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl<T> Drop for Rx<T> {
    fn drop(&mut self) {
        let queued = {
            let mut s = self.shared.lock();
            s.receiver = false;
            std::mem::take(&mut s.queue)
        };
        // Dropped outside the lock: a message's own drop may use this queue.
        drop(queued);
        self.shared.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn messages_arrive_in_order_and_none_after_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        tx2.send(2).await.unwrap();
        tx.try_send(3).unwrap();
        assert_eq!(rx.len(), 3);
        assert_eq!(tx.queued(), 3);
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(tx2);
        // Queued before the senders went: still delivered.
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_try_send_and_holds_send_until_there_is_room() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(3).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "send went past a full queue");
        assert_eq!(rx.recv().await, Some(1));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room made did not wake the sender")
            .unwrap()
            .unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
    }

    #[tokio::test]
    async fn senders_learn_that_the_receiver_is_gone() {
        let (tx, rx) = channel(1);
        tx.try_send(1).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a sender waiting for room was not told the receiver went")
            .unwrap();
        assert!(matches!(r, Err(SendError(2))));
        assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
        assert_eq!(
            tx.queued(),
            0,
            "what was queued is dropped with the receiver"
        );
    }

    #[tokio::test]
    async fn a_receive_cancelled_in_a_select_loses_nothing() {
        let (tx, mut rx) = channel(4);
        for round in 0..50u32 {
            let sender = tx.clone();
            let send = tokio::spawn(async move {
                tokio::task::yield_now().await;
                sender.send(round).await.unwrap();
            });
            let mut got = None;
            while got.is_none() {
                tokio::select! {
                    v = rx.recv() => got = v,
                    () = tokio::task::yield_now() => {}
                }
            }
            assert_eq!(got, Some(round));
            send.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = channel::<u8>(4);
        let recv = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), recv)
            .await
            .expect("the receiver was not woken")
            .unwrap();
        assert_eq!(got, (Some(7), None));
    }

    #[test]
    fn an_empty_queue_is_small_and_holds_no_slots() {
        // The shared state of a tokio channel is over 500 octets before its first block
        // of 32 slots; a session keeps four of these.
        assert!(
            std::mem::size_of::<Shared<[u8; 64]>>() <= 160,
            "{}",
            std::mem::size_of::<Shared<[u8; 64]>>()
        );
        let (tx, mut rx) = channel::<[u8; 64]>(64);
        tx.try_send([0; 64]).unwrap();
        tx.try_send([1; 64]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            rx.recv().await;
            assert!(rx.shared.lock().queue.capacity() > 0);
            rx.recv().await;
        });
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
    }
}
