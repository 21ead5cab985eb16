//! Shutdown as one type: every task the daemon starts (listeners, the storage health check, cache
//! eviction, garbage collection, the file watchers, the systemd watchdog) learns that it must stop
//! the same way, from a [`Shutdown`] it was given when it started. The daemon owns the
//! [`Notifier`] they were all made from, and fires it once, on SIGTERM or SIGINT.
//!
//! Modelled on mini-redis's `Shutdown`: `recv()` waits for the signal, `is_shutdown()` asks without
//! waiting. It is built on tokio-util's `CancellationToken` rather than a broadcast or watch
//! channel: a token is cloned rather than subscribed, `recv` takes `&self` (so a loop can `select!`
//! on it again and again without `mut`), and there is no lagging, no closed channel and no value to
//! borrow to reason about. A leaf module: any part may import it, it imports nothing of registryd.

use tokio_util::sync::CancellationToken;

/// The sending side, owned by whoever decides when to stop (the daemon; a test). Firing it, or
/// dropping it, tells every [`Shutdown`] made from it: a daemon that returns early on an error
/// cannot leave its tasks running.
#[derive(Debug, Default)]
pub struct Notifier {
    token: CancellationToken,
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier::default()
    }

    /// A receiver for one task; as many as there are tasks.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            token: self.token.clone(),
        }
    }

    /// Tells every receiver to stop. Idempotent.
    pub fn notify(&self) {
        self.token.cancel();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What a task holds to learn that it must stop. Cheap to clone: a task that starts sub-tasks
/// hands each a clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// Whether shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is signalled (at once if it already was).
    pub async fn recv(&self) {
        self.token.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_hears_one_notify_and_late_ones_too() {
        let notifier = Notifier::new();
        let (a, b) = (notifier.subscribe(), notifier.subscribe());
        assert!(!a.is_shutdown());
        notifier.notify();
        a.recv().await;
        b.clone().recv().await;
        assert!(b.is_shutdown());
        assert!(notifier.subscribe().is_shutdown());
    }

    #[tokio::test]
    async fn dropping_the_notifier_is_a_shutdown() {
        let notifier = Notifier::new();
        let s = notifier.subscribe();
        drop(notifier);
        s.recv().await;
        assert!(s.is_shutdown());
    }
}
