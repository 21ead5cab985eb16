//! Response bodies paced to what the client takes, so a client that stops taking cannot make
//! this process hold memory for it.
//!
//! hyper polls a response body for its next chunk before it knows whether the HTTP/2 stream's
//! flow-control window has room, and h2 then buffers that chunk until the window opens. A client
//! that announces a window of one byte, opens many streams and never sends `WINDOW_UPDATE` had a
//! blob's chunks (256 KiB each, three per stream counting the read-ahead) pinned on every stream:
//! one connection with 100 streams took 50 MB, and PINGs kept it alive. So:
//!
//! - every chunk of a streamed blob is counted, per stream and per connection, from the moment it
//!   is read until the connection has written it (its buffer is dropped);
//! - a stream reads small chunks until it has shown that its client takes them (the chunk size
//!   grows with what the stream has sent, as TCP's slow start does), and every stream reads small
//!   chunks while its connection, or the whole process, holds more than its budget unsent;
//! - a stream with bytes waiting that has sent none of them for `limits.send_stall_timeout_secs`
//!   gets its connection closed (see `server::conn_watch`); PINGs do not count as progress;
//! - after a connection that held much closes, freed memory is handed back to the kernel
//!   ([`give_back_memory`]): glibc keeps freed chunks in its arenas otherwise, and RSS stayed at
//!   the peak after such connections were gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::storage::BlobStream;

/// The smallest read: what a stream reads while it has not shown that its client takes its bytes,
/// or while its connection or the process is over budget. One HTTP/2 frame (and TLS record).
pub const MIN_READ: u64 = 16 * 1024;

/// The largest read a paced stream asks for (storage caps reads at its own chunk size as well).
const MAX_READ: u64 = 256 * 1024;

/// Unsent response bytes a connection may hold before each of its streams reads only
/// [`MIN_READ`] at a time: room for about five blob downloads at full chunk size at once.
pub const CONNECTION_BUDGET: u64 = 4 * 1024 * 1024;

/// The same for the whole process, so many connections together stay bounded as well.
const PROCESS_BUDGET: u64 = 64 * 1024 * 1024;

/// A connection whose unsent bytes peaked at this or more has memory given back when it closes.
const TRIM_AFTER_PEAK: u64 = 1024 * 1024;

/// Unsent bytes of streamed responses, all connections together.
static PROCESS_PENDING: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// The ledger of the connection a request arrived on, set around the request's handler.
    static CONNECTION: Arc<Ledger>;
}

/// Runs `fut` (a request's handling) with `ledger` as the connection its responses count against.
pub async fn within<F: std::future::Future>(ledger: Arc<Ledger>, fut: F) -> F::Output {
    CONNECTION.scope(ledger, fut).await
}

/// What one connection's streamed responses hold unsent.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
    /// The most this connection held unsent at once.
    peak: AtomicU64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: u64,
    streams: HashMap<u64, StreamState>,
}

struct StreamState {
    /// Bytes read and not yet written to the connection.
    pending: u64,
    /// Bytes written so far.
    sent: u64,
    /// When this stream last made progress: a chunk written, or bytes starting to wait.
    progress: Instant,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the most stalled stream has had bytes waiting without any being written; `None`
    /// when no stream has bytes waiting.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.state()
            .streams
            .values()
            .filter(|s| s.pending > 0)
            .map(|s| s.progress.elapsed())
            .max()
    }

    /// Bytes waiting to be written now.
    pub fn pending(&self) -> u64 {
        self.state().pending
    }

    /// Whether this connection held enough at once that its memory is worth giving back.
    pub fn was_heavy(&self) -> bool {
        self.peak.load(Ordering::Relaxed) >= TRIM_AFTER_PEAK
    }

    /// A new stream of this connection.
    pub fn stream(self: &Arc<Ledger>) -> Pace {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.streams.insert(
            id,
            StreamState {
                pending: 0,
                sent: 0,
                progress: Instant::now(),
            },
        );
        Pace(Arc::new(PaceInner {
            ledger: self.clone(),
            id,
        }))
    }
}

/// The pacing of one response stream. Cheap to clone; the stream leaves its connection's ledger
/// when the response and every chunk it read are gone.
#[derive(Clone)]
pub struct Pace(Arc<PaceInner>);

struct PaceInner {
    ledger: Arc<Ledger>,
    id: u64,
}

impl Drop for PaceInner {
    fn drop(&mut self) {
        self.ledger.state().streams.remove(&self.id);
    }
}

impl Pace {
    /// A stream of the connection the current request arrived on; outside a connection (tests,
    /// tools), a stream of a ledger of its own.
    pub fn current() -> Pace {
        CONNECTION
            .try_with(|l| l.clone())
            .unwrap_or_else(|_| Ledger::new())
            .stream()
    }

    /// How many bytes the stream's next read should take.
    pub fn next_read(&self) -> u64 {
        let st = self.0.ledger.state();
        let sent = st.streams.get(&self.0.id).map_or(0, |s| s.sent);
        let room = CONNECTION_BUDGET.saturating_sub(st.pending);
        let process_room = PROCESS_BUDGET.saturating_sub(PROCESS_PENDING.load(Ordering::Relaxed));
        sent.min(MAX_READ).min(room).min(process_room).max(MIN_READ)
    }

    /// A reader's size function for [`Storage::open_blob_sized`](crate::storage::Storage::open_blob_sized).
    pub fn read_size(&self) -> crate::storage::ReadSize {
        let me = self.clone();
        Arc::new(move || me.next_read() as usize)
    }

    /// `stream`, with every chunk counted as waiting until the connection has written it.
    pub fn track(&self, stream: BlobStream) -> BlobStream {
        let me = self.clone();
        Box::pin(stream.map(move |item| {
            item.map(|bytes: Bytes| {
                let len = bytes.len() as u64;
                me.read(len);
                Bytes::from_owner(Counted {
                    bytes,
                    pace: me.clone(),
                })
            })
        }))
    }

    fn read(&self, len: u64) {
        let ledger = &self.0.ledger;
        let mut st = ledger.state();
        st.pending = st.pending.saturating_add(len);
        let total = st.pending;
        if let Some(s) = st.streams.get_mut(&self.0.id) {
            if s.pending == 0 {
                s.progress = Instant::now();
            }
            s.pending = s.pending.saturating_add(len);
        }
        drop(st);
        ledger.peak.fetch_max(total, Ordering::Relaxed);
        PROCESS_PENDING.fetch_add(len, Ordering::Relaxed);
    }

    fn written(&self, len: u64) {
        let mut st = self.0.ledger.state();
        st.pending = st.pending.saturating_sub(len);
        if let Some(s) = st.streams.get_mut(&self.0.id) {
            s.pending = s.pending.saturating_sub(len);
            s.sent = s.sent.saturating_add(len);
            s.progress = Instant::now();
        }
        drop(st);
        // Every `written` follows the `read` that added `len`: this cannot go below zero.
        PROCESS_PENDING.fetch_sub(len, Ordering::Relaxed);
    }
}

/// A chunk on its way to the client; dropped once the connection has written it (or the
/// response was abandoned), which is when it stops counting.
struct Counted {
    bytes: Bytes,
    pace: Pace,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.pace.written(self.bytes.len() as u64);
    }
}

/// Hands memory freed by closed connections back to the kernel (glibc's `malloc_trim`). glibc
/// keeps freed memory in its arenas for reuse; after connections that held megabytes closed, RSS
/// stayed near its peak. At most one trim runs at a time, on a blocking thread (it walks every
/// arena), and only after a connection that held [`TRIM_AFTER_PEAK`] or more.
pub fn give_back_memory() {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::task::spawn_blocking(|| {
        trim();
        RUNNING.store(false, Ordering::Release);
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it touches no
    // memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn chunks(sizes: &[usize]) -> BlobStream {
        let items: Vec<io::Result<Bytes>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![7u8; *n])))
            .collect();
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn a_stream_reads_small_until_its_client_takes_what_it_was_given() {
        let ledger = Ledger::new();
        let pace = ledger.stream();
        assert_eq!(pace.next_read(), MIN_READ);
        let mut s = pace.track(chunks(&[16 * 1024, 16 * 1024]));
        let a = s.next().await.unwrap().unwrap();
        let b = s.next().await.unwrap().unwrap();
        // Nothing written yet: still small, and both chunks count as waiting.
        assert_eq!(pace.next_read(), MIN_READ);
        assert_eq!(ledger.pending(), 32 * 1024);
        assert!(ledger.stalled_for().is_some());
        drop(a);
        drop(b);
        // Taken: the stream may read as much as it has sent, up to the largest read.
        assert_eq!(pace.next_read(), 32 * 1024);
        assert_eq!(ledger.pending(), 0);
        assert_eq!(ledger.stalled_for(), None);
    }

    #[tokio::test]
    async fn a_connection_over_budget_reads_small_on_every_stream() {
        let ledger = Ledger::new();
        let fast = ledger.stream();
        // A stream that has shown its client takes bytes reads large chunks.
        fast.read(MAX_READ);
        fast.written(MAX_READ);
        assert_eq!(fast.next_read(), MAX_READ);
        // Another stream of the connection pins the budget.
        let stuck = ledger.stream();
        let held = stuck.track(chunks(&[CONNECTION_BUDGET as usize]));
        let held: Vec<_> = held.collect().await;
        assert_eq!(fast.next_read(), MIN_READ);
        drop(held);
        assert_eq!(fast.next_read(), MAX_READ);
    }

    #[tokio::test]
    async fn a_stalled_stream_ages_and_progress_resets_it() {
        let ledger = Ledger::new();
        let pace = ledger.stream();
        let mut s = pace.track(chunks(&[100, 100]));
        let a = s.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let b = s.next().await.unwrap().unwrap();
        // A new chunk read while one waits is no progress.
        assert!(ledger.stalled_for().unwrap() >= Duration::from_millis(60));
        drop(a);
        assert!(ledger.stalled_for().unwrap() < Duration::from_millis(60));
        drop(b);
        assert_eq!(ledger.stalled_for(), None);
        drop(s);
        drop(pace);
        assert!(ledger.state().streams.is_empty());
    }

    #[tokio::test]
    async fn the_request_sees_its_connection() {
        let ledger = Ledger::new();
        let pace = within(ledger.clone(), async { Pace::current() }).await;
        pace.read(10);
        assert_eq!(ledger.pending(), 10);
        pace.written(10);
        // Outside a connection, a ledger of its own.
        let alone = Pace::current();
        alone.read(5);
        assert_eq!(ledger.pending(), 0);
        alone.written(5);
    }
}
