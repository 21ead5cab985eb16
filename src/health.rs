//! Storage health as the HTTP edge and the daemon share it: whether storage may be used, why not,
//! and the mount guard. While storage is unhealthy every registry request answers 503 with the
//! reason, and nothing is written.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::node::mount::MountGuard;
use crate::storage::Storage;

pub struct Health {
    ready: AtomicBool,
    reason: Mutex<String>,
    guard: Option<MountGuard>,
    failures: AtomicU64,
    /// Why writes are refused for lack of space (free space under `storage.min_free_bytes`).
    low_space: Mutex<Option<String>>,
    /// When the last check ran and why it failed, if it did (a failure may leave the storage
    /// ready until `threshold` of them come in a row).
    last_check: Mutex<Option<(SystemTime, Option<String>)>>,
}

impl Health {
    /// Health around `guard`; give the storage driver a clone of the same guard
    /// ([`Storage::with_guard`]) so that a storage call that finds the mount gone turns this unready.
    pub fn new(guard: Option<MountGuard>) -> Health {
        let h = Health {
            ready: AtomicBool::new(guard.is_none()),
            reason: Mutex::new(String::new()),
            guard,
            failures: AtomicU64::new(0),
            low_space: Mutex::new(None),
            last_check: Mutex::new(None),
        };
        if let Some(g) = &h.guard {
            h.set_unready(format!("{} not checked yet", g.mount().display()));
        }
        crate::metrics::get()
            .storage_ready
            .set(i64::from(h.is_ready()));
        h
    }

    /// Always ready (tests, and deployments without a guard before the first check).
    pub fn always() -> Health {
        Health::new(None)
    }

    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_unready(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
        self.ready.store(false, Ordering::SeqCst);
    }

    fn set_ready(&self) {
        self.failures.store(0, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Why writes are refused for lack of space, if they are.
    pub fn low_space(&self) -> Option<String> {
        self.low_space.lock().ok().and_then(|g| g.clone())
    }

    /// Records the free-space verdict; `true` when it changed (worth a log line and a status).
    pub fn set_low_space(&self, reason: Option<String>) -> bool {
        let Ok(mut g) = self.low_space.lock() else {
            return false;
        };
        let changed = g.is_some() != reason.is_some();
        *g = reason;
        changed
    }

    /// When the last check ran, and why it failed if it did.
    pub fn last_check(&self) -> Option<(SystemTime, Option<String>)> {
        self.last_check.lock().ok().and_then(|g| g.clone())
    }

    fn record_check(&self, error: Option<String>) {
        if let Ok(mut g) = self.last_check.lock() {
            *g = Some((SystemTime::now(), error));
        }
    }

    /// `/readyz`: the last verdict, without touching storage.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Before a request touches storage: `Err(reason)` when it must not. No I/O here (a hung mount
    /// must not stall the async threads): the storage driver checks the mount on its own threads
    /// before each call, and a call that found it gone is seen here through the shared guard.
    pub fn admit(&self) -> Result<(), String> {
        if let Some(g) = &self.guard
            && !g.passed()
            && self.is_ready()
        {
            self.set_unready(format!(
                "{} is no longer mounted (storage.require_mount); nothing is written until it is back",
                g.mount().display()
            ));
        }
        if self.is_ready() {
            Ok(())
        } else {
            Err(self.reason())
        }
    }

    /// One health check: the guard (an absent mount is unhealthy at once, since writing would land
    /// on the local disk), then a durable write and read under `timeout`. I/O failures count toward
    /// `threshold` before storage is declared unhealthy. Returns whether the verdict changed.
    pub async fn verify(&self, storage: &Storage, timeout: Duration, threshold: u64) -> bool {
        let was = self.is_ready();
        if let Some(g) = self.guard.clone() {
            let checked =
                tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || g.check())).await;
            let reason = match checked {
                Ok(Ok(Ok(_))) => None,
                Ok(Ok(Err(reason))) => Some(reason),
                Ok(Err(e)) => Some(format!("mount check failed: {e}")),
                Err(_) => Some(format!(
                    "the storage mount did not answer within {}s (a hung mount?)",
                    timeout.as_secs()
                )),
            };
            if let Some(reason) = reason {
                self.record_check(Some(reason.clone()));
                self.set_unready(reason);
                let m = crate::metrics::get();
                m.storage_check(false);
                m.storage_ready.set(0);
                return was != self.is_ready();
            }
        }
        let result = match tokio::time::timeout(timeout, storage.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("storage check failed: {e}")),
            Err(_) => Err(format!(
                "storage check did not finish within {}s",
                timeout.as_secs()
            )),
        };
        crate::metrics::get().storage_check(result.is_ok());
        self.record_check(result.as_ref().err().cloned());
        match result {
            Ok(()) => self.set_ready(),
            Err(reason) => {
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::warn!(failures = n, reason = %reason, "storage check failed");
                if n >= threshold || !was {
                    self.set_unready(reason);
                }
            }
        }
        crate::metrics::get()
            .storage_ready
            .set(i64::from(self.is_ready()));
        was != self.is_ready()
    }
}
