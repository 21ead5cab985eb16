//! The one path by which the filesystem driver reaches the disk: a bounded pool of blocking calls,
//! each bounded in time and each checking the mount guard first, on the thread that makes the call.
//!
//! The [`Storage`](super::Storage) facade owns the pool (one per storage, whatever driver) and lends
//! it to the filesystem driver, whose every file operation runs through [`Pool::blocking`],
//! [`Pool::cached_or_blocking`], [`Pool::unbounded`] or [`Pool::detached`]. So nothing is read or
//! written under a mount point whose volume is gone, by construction: there is no other way in.

use std::io;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{Result, StorageError};
use crate::node::mount::MountGuard;

pub struct Pool {
    /// Bound on every storage call, so a hung mount turns into 503s instead of stuck requests.
    timeout: Duration,
    /// Blocking storage calls in flight. A call stuck on a hung mount keeps its permit, so hung
    /// threads stay bounded and later calls wait here (and time out) instead of piling up.
    slots: Arc<tokio::sync::Semaphore>,
    /// When set, every blocking storage call first checks that the storage mount is still there.
    guard: OnceLock<MountGuard>,
    /// Small hot reads may run on the async threads when the caches answer them (see
    /// `fs::cached`): the root is on a local filesystem and no mount guard is set. Looked at again
    /// by every storage check, in case a network filesystem got mounted over the root after start.
    inline: AtomicBool,
}

impl Pool {
    pub fn new(timeout: Duration, max_blocking: usize, inline: bool) -> Pool {
        Pool {
            timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(max_blocking.max(1))),
            guard: OnceLock::new(),
            inline: AtomicBool::new(inline),
        }
    }

    /// How long one storage call may take (`storage.operation_timeout_secs`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the mount guard (once). A guarded mount is a shared one: every call then goes through
    /// the guard's check, none is answered from the caches on the async threads.
    pub(super) fn set_guard(&self, guard: MountGuard) {
        if self.guard.set(guard).is_err() {
            tracing::error!("storage guard set twice; the first one stays");
        }
        self.inline.store(false, Ordering::Relaxed);
    }

    pub fn is_guarded(&self) -> bool {
        self.guard.get().is_some()
    }

    /// Whether small reads may be answered from the kernel's caches on the async threads.
    pub fn cached_reads(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Allows or stops cached reads (the filesystem check decides, for an unguarded root).
    pub fn set_cached_reads(&self, local: bool) {
        self.inline.store(local, Ordering::Relaxed);
    }

    /// Checks the mount guard, if any, on this thread.
    fn admit(guard: Option<&MountGuard>) -> Result<()> {
        match guard {
            Some(g) => g.admit().map_err(StorageError::Unavailable),
            None => Ok(()),
        }
    }

    /// Runs blocking filesystem work off the async threads, bounded in time and in number. A
    /// timeout names the call's place in the source, so a log says which storage call ran out.
    #[track_caller]
    pub fn blocking<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + '_
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let at = Location::caller();
        async move { self.start_at(at, f).await?.finish().await }
    }

    /// Starts blocking filesystem work once a pool slot is free (waiting for one is bounded by the
    /// timeout) and returns at once; [`Started::finish`] waits for the result, also bounded. Lets a
    /// caller overlap one call with its own work (an upload receives its next batch while the last
    /// one is written). Dropped before a slot is free, nothing runs; once started, the call runs
    /// to its end whatever becomes of the caller, so `f` must own whatever it needs held meanwhile.
    #[track_caller]
    pub fn start<T, F>(&self, f: F) -> impl Future<Output = Result<Started<T>>> + Send + '_
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.start_at(Location::caller(), f)
    }

    async fn start_at<T, F>(&self, at: &'static Location<'static>, f: F) -> Result<Started<T>>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.timeout;
        // The wait for a slot counts against the call's timeout, but fails with its own words: every
        // slot busy is a different trouble (too much at once, or calls stuck) than one slow call.
        let permit = tokio::time::timeout(limit, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| no_slot(limit, at))?
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let guard = self.guard.get().cloned();
        let task = tokio::task::spawn_blocking(move || {
            let _held_until_the_call_returns = permit;
            Self::admit(guard.as_ref())?;
            f()
        });
        Ok(Started {
            task,
            deadline: tokio::time::Instant::now() + limit,
            limit,
            at,
        })
    }

    /// Runs `f(true)` on this thread when the storage allows cached reads and `f` finishes from the
    /// kernel's caches (it must then read only through `fs::cached`, which says `WouldBlock` when
    /// it cannot); otherwise `f(false)` as a [`blocking`](Pool::blocking) call. Cached reads are
    /// allowed only without a mount guard, so this too never passes a guard.
    #[track_caller]
    pub fn cached_or_blocking<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + '_
    where
        F: Fn(bool) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let at = Location::caller();
        async move {
            if self.cached_reads() {
                match f(true) {
                    Err(StorageError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
            }
            self.start_at(at, move || f(false)).await?.finish().await
        }
    }

    /// A blocking call not bounded by the timeout nor counted in the pool (hashing a large blob
    /// takes as long as it takes), still through the mount guard.
    pub async fn unbounded<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.guard.get().cloned();
        tokio::task::spawn_blocking(move || {
            Self::admit(guard.as_ref())?;
            f()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Runs `f` on a thread of its own, not waited for (clean-up from a `Drop`, where nothing can
    /// be awaited and a hung mount must not stall an async thread); through the mount guard.
    pub fn detached<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let guard = self.guard.get().cloned();
        std::thread::spawn(move || {
            if Self::admit(guard.as_ref()).is_ok() {
                f()
            }
        });
    }
}

/// A blocking call [started](Pool::start) and still running.
pub struct Started<T> {
    task: tokio::task::JoinHandle<Result<T>>,
    deadline: tokio::time::Instant,
    limit: Duration,
    /// Where in the source the call was made, named when it times out.
    at: &'static Location<'static>,
}

impl<T> Started<T> {
    /// The call's result, once it returns or the storage timeout (from its start) passes.
    pub async fn finish(self) -> Result<T> {
        match tokio::time::timeout_at(self.deadline, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StorageError::Io(io::Error::other(e))),
            Err(_) => Err(call_timed_out(self.limit, self.at)),
        }
    }
}

/// A call that ran past the timeout, named by where it was made (`fs/lifecycle.rs:101`).
fn call_timed_out(limit: Duration, at: &Location<'_>) -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "storage did not answer within {}s (a hung mount?; call at {})",
            limit.as_secs(),
            short_place(at)
        ),
    ))
}

/// Every slot held for the whole timeout: calls stuck on the mount, or more work at once than
/// `storage.max_blocking` allows.
fn no_slot(limit: Duration, at: &Location<'_>) -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "storage did not answer within {}s: every storage slot stayed busy (a hung mount, or \
             too much at once?; call at {})",
            limit.as_secs(),
            short_place(at)
        ),
    ))
}

/// `src/storage/fs/lifecycle.rs:101` as `fs/lifecycle.rs:101`.
fn short_place(at: &Location<'_>) -> String {
    let file = at.file();
    let file = file.strip_prefix("src/storage/").unwrap_or(file);
    format!("{file}:{}", at.line())
}

pub(super) fn timed_out(limit: Duration) -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "storage did not answer within {}s (a hung mount?)",
            limit.as_secs()
        ),
    ))
}

/// Bounds `fut` by the storage timeout.
pub(super) async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_names_the_call_and_a_full_pool_says_so() {
        let pool = Pool::new(Duration::from_millis(200), 1, false);
        let slow = || {
            std::thread::sleep(Duration::from_millis(600));
            Ok(())
        };
        let (held, line) = (pool.blocking(slow), line!());
        let err = held.await.unwrap_err().to_string();
        assert!(err.contains("did not answer within 0s"), "{err}");
        assert!(err.contains(&format!("call at pool.rs:{line}")), "{err}");
        assert!(!err.contains("slot"), "{err}");
        // The slow call still holds the only slot (it runs to its end): the next one waits for a
        // slot past the timeout, and says so.
        let err = pool.blocking(|| Ok(())).await.unwrap_err().to_string();
        assert!(err.contains("every storage slot stayed busy"), "{err}");
        assert!(err.contains("call at pool.rs:"), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        pool.blocking(|| Ok(())).await.unwrap();
    }
}
