//! Blob uploads, resumable across requests, daemon restarts and nodes: the facade's side. Where the
//! bytes and the acknowledged state live is the driver's (`fs::uploads`: a data file appended to
//! and durable hash states; `s3::uploads`: multipart parts and a state object); here is what both
//! share: a chunk held to the range it declared, and one writer per upload in the whole cluster.
//!
//! A chunk sent with a declared range (`ChunkSpan`, from `Content-Range`) must hold exactly the
//! bytes it declared; one that holds more or fewer is refused whole and acknowledges nothing.
//!
//! One writer: a client behind a load balancer may send the requests of one upload to different
//! nodes, even at the same time. Each request holds the upload's lock from before it reads the
//! acknowledged offset until its own is durable: first this node's (so requests here queue in
//! memory, not by polling the storage), then the cluster's (`flock` on the upload's `startedat` on
//! a filesystem, a lease in a bucket). A request that finds the lock held waits; once it holds it,
//! it is judged on the offset it then finds: a chunk declaring the range it was sent for, now taken
//! by the other request, is refused with `RangeMismatch` (416 with the `Range` stored), and a chunk
//! without a range goes after the other's bytes. Bytes are never interleaved.
//!
//! What this node keeps in memory per upload is bounded: the one-writer lock exists only while a
//! request holds or awaits it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use super::{Driver, Result, Storage, StorageError};
use crate::registry::{Digest, RepoName};

/// Where a chunk says it belongs (an upload `PATCH` or `PUT` with `Content-Range`): the offset it
/// starts at and how many bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub start: u64,
    pub len: u64,
}

/// A chunk whose bytes did not match the span it declared.
#[derive(Debug, thiserror::Error)]
#[error("the chunk declared {declared} bytes but {}", received_text(*.received, *.over))]
struct SpanMismatch {
    declared: u64,
    received: u64,
    /// More arrived than declared (reading stopped at `received`).
    over: bool,
}

fn received_text(received: u64, over: bool) -> String {
    if over {
        format!("at least {received} arrived")
    } else {
        format!("only {received} arrived")
    }
}

/// Holds a body to the span its chunk declared: the bytes pass through until one would go past
/// the declared length (then an error instead of that bytes' chunk, so nothing past it is
/// written), and a body that ends short ends with an error. Counting saturates: it cannot wrap.
struct HeldToSpan<S> {
    inner: S,
    declared: Option<u64>,
    received: u64,
    done: bool,
}

impl<S> HeldToSpan<S> {
    fn new(inner: S, span: Option<ChunkSpan>) -> HeldToSpan<S> {
        HeldToSpan {
            inner,
            declared: span.map(|s| s.len),
            received: 0,
            done: false,
        }
    }
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> Stream for HeldToSpan<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(declared) = self.declared else {
            return Pin::new(&mut self.inner).poll_next(cx);
        };
        let next = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(n) => n,
            Poll::Pending => return Poll::Pending,
        };
        let mismatch = |received, over| {
            io::Error::other(SpanMismatch {
                declared,
                received,
                over,
            })
        };
        Poll::Ready(match next {
            Some(Ok(chunk)) => {
                let received = self.received.saturating_add(chunk.len() as u64);
                if received > declared {
                    self.done = true;
                    Some(Err(mismatch(received, true)))
                } else {
                    self.received = received;
                    Some(Ok(chunk))
                }
            }
            // A body cut off (the client went away, a timeout) keeps its usual meaning.
            Some(Err(e)) => Some(Err(e)),
            None => {
                self.done = true;
                (self.received != declared).then(|| Err(mismatch(self.received, false)))
            }
        })
    }
}

/// Whether a body that failed with `e` keeps what arrived before it (acknowledged, so the client
/// resumes from there): yes when the client was cut off or stalled; no when the body was refused
/// for what it is (too large for the limit, or not the chunk its range declared), which must
/// leave the upload where it stood.
pub(super) fn keeps_partial(e: &io::Error) -> bool {
    e.kind() != io::ErrorKind::FileTooLarge && !is_span_mismatch(e)
}

fn is_span_mismatch(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SpanMismatch>())
}

/// The storage error for a body that failed with `e`, at acknowledged offset `acked`.
pub(super) fn body_error(e: io::Error, acked: u64) -> StorageError {
    if is_span_mismatch(&e) {
        StorageError::ChunkLength {
            detail: e.to_string(),
            offset: acked,
        }
    } else {
        StorageError::Body(e)
    }
}

/// `body`, held to `span` when one was declared.
pub(super) fn held_to_span<S>(
    body: S,
    span: Option<ChunkSpan>,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    HeldToSpan::new(body, span)
}

/// This node's one-writer lock of an upload, held for as long as this value lives. Its entry in
/// `upload_locks` is removed when the last request holding or awaiting it lets go, so the map holds
/// only uploads with a request in flight, whatever ids clients send. A driver may hold it past its
/// request (an `Arc` in a file write still running when the request was dropped), so the next
/// request of the upload never sees bytes change after it looked at them.
pub(super) struct UploadWriter {
    // Field order matters: the cluster's lock goes first (another node may take it as soon as this
    // node's requests no longer need it), then the guard (and its reference to the mutex), before
    // the entry looks whether anyone else still refers to the mutex.
    _cluster: super::Held,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _entry: LockEntry,
}

/// A reference to an upload's lock entry; the last one removes the entry.
struct LockEntry {
    storage: Storage,
    id: Uuid,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for LockEntry {
    fn drop(&mut self) {
        let mut locks = self
            .storage
            .inner
            .upload_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or awaits this lock. Counted under the
        // map's lock, which every new reference is also taken under.
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
            && Arc::strong_count(&self.lock) <= 2
        {
            locks.remove(&self.id);
        }
    }
}

/// What an upload status request reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    pub offset: u64,
}

impl Storage {
    /// Starts an upload in `name`; it is durable (survives a restart) when this returns.
    pub async fn start_upload(&self, name: &RepoName) -> Result<Uuid> {
        match self.driver() {
            Driver::Fs(fs) => fs.start_upload(name).await,
            Driver::S3(s3) => s3.start_upload(name).await,
        }
    }

    /// Waits for, and holds, the one-writer lock of upload `id` in `name`: this node's, then the
    /// cluster's. `UploadUnknown` when the upload is not (or no longer) there.
    async fn lock_upload(&self, name: &RepoName, id: &Uuid) -> Result<UploadWriter> {
        let lock = self
            .inner
            .upload_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*id)
            .or_default()
            .clone();
        // Taken before waiting, so a request that goes away while it waits still removes the entry.
        let entry = LockEntry {
            storage: self.clone(),
            id: *id,
            lock: lock.clone(),
        };
        let guard = lock.lock_owned().await;
        let cluster = match self.driver() {
            Driver::Fs(fs) => super::Held::File(fs.lock_upload(name, id).await?),
            Driver::S3(s3) => super::Held::Lease(s3.lock_upload(name, id).await?),
        };
        Ok(UploadWriter {
            _cluster: cluster,
            _guard: guard,
            _entry: entry,
        })
    }

    /// The acknowledged offset of an upload (for `GET` upload status).
    pub async fn upload_status(&self, name: &RepoName, id: &Uuid) -> Result<UploadStatus> {
        let offset = match self.driver() {
            Driver::Fs(fs) => fs.upload_offset(name, id).await?,
            Driver::S3(s3) => s3.upload_offset(name, id).await?,
        };
        Ok(UploadStatus { offset })
    }

    /// Appends a chunk. With `span`, the chunk must begin at the acknowledged offset (in-order
    /// `Content-Range`), or this fails with `RangeMismatch` and writes nothing; and it must hold
    /// exactly `span.len` bytes, or this fails with `ChunkLength` and acknowledges nothing of it.
    /// Returns the new offset, durable on return.
    pub async fn append_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        span: Option<ChunkSpan>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let body = held_to_span(body, span);
        let start = span.map(|s| s.start);
        let one_writer = Arc::new(self.lock_upload(name, id).await?);
        match self.driver() {
            Driver::Fs(fs) => fs.append_upload(name, id, start, body, &one_writer).await,
            Driver::S3(s3) => s3.append_upload(name, id, start, body).await,
        }
    }

    /// Finishes an upload: appends the optional last chunk (held to `span` as in
    /// [`append_upload`](Storage::append_upload)), verifies the digest, publishes the blob and
    /// links it into `name`. On a digest mismatch nothing is published and the upload is dropped.
    pub async fn complete_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        expected: &Digest,
        span: Option<ChunkSpan>,
        last: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let last = last.map(|body| held_to_span(body, span));
        let start = span.map(|s| s.start);
        let one_writer = Arc::new(self.lock_upload(name, id).await?);
        match self.driver() {
            Driver::Fs(fs) => {
                fs.complete_upload(name, id, expected, start, last, &one_writer)
                    .await
            }
            Driver::S3(s3) => s3.complete_upload(name, id, expected, start, last).await,
        }
    }

    /// Cancels an upload and removes its data.
    pub async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> Result<()> {
        let _one_writer = self.lock_upload(name, id).await?;
        match self.driver() {
            Driver::Fs(fs) => fs.cancel_upload(name, id).await,
            Driver::S3(s3) => s3.cancel_upload(name, id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn body(parts: &[&[u8]]) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
        let items: Vec<io::Result<Bytes>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures_util::stream::iter(items)
    }

    fn span(start: u64, len: u64) -> Option<ChunkSpan> {
        Some(ChunkSpan { start, len })
    }

    fn name() -> RepoName {
        "t/uploads".parse().expect("valid name")
    }

    fn cursors(s: &Storage) -> usize {
        match s.driver() {
            Driver::Fs(fs) => fs.cached_cursors(),
            Driver::S3(_) => 0,
        }
    }

    fn locks(s: &Storage) -> usize {
        s.inner.upload_locks.lock().map(|l| l.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_chunk_must_hold_what_its_range_declares_and_a_refused_one_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path()).expect("storage");
        let id = s.start_upload(&name()).await.expect("start");
        s.append_upload(&name(), &id, span(0, 3), body(&[b"abc"]))
            .await
            .expect("a chunk as declared");

        // Content-Range 3-4 (2 bytes) with 10 bytes in the body: refused, nothing kept.
        let over = s
            .append_upload(&name(), &id, span(3, 2), body(&[b"0123", b"456789"]))
            .await;
        assert!(
            matches!(over, Err(StorageError::ChunkLength { offset: 3, .. })),
            "{over:?}"
        );
        assert_eq!(
            s.upload_status(&name(), &id).await.expect("status").offset,
            3
        );

        // A body that ends short of its range: refused as well, although its bytes all arrived.
        let short = s
            .append_upload(&name(), &id, span(3, 10), body(&[b"0123"]))
            .await;
        assert!(
            matches!(short, Err(StorageError::ChunkLength { offset: 3, .. })),
            "{short:?}"
        );
        assert_eq!(
            s.upload_status(&name(), &id).await.expect("status").offset,
            3
        );

        // The same on the last chunk of a PUT.
        let digest = Digest::from_sha256_output(&Sha256::digest(b"abcdefg"));
        let put = s
            .complete_upload(&name(), &id, &digest, span(3, 4), Some(body(&[b"defgh"])))
            .await;
        assert!(
            matches!(put, Err(StorageError::ChunkLength { offset: 3, .. })),
            "{put:?}"
        );

        // The upload goes on from where it was acknowledged: the refused bytes left no trace.
        let size = s
            .complete_upload(
                &name(),
                &id,
                &digest,
                span(3, 4),
                Some(body(&[b"de", b"fg"])),
            )
            .await
            .expect("complete");
        assert_eq!(size, 7);
        assert!(s.blob_size_global(&digest).await.expect("size") == Some(7));
    }

    #[tokio::test]
    async fn upload_locks_and_cursors_do_not_outlive_their_uploads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path()).expect("storage");
        // PATCH and PUT to ids nobody started: 404 each, and no entry left behind.
        let digest = Digest::from_sha256_output(&Sha256::digest(b"x"));
        for _ in 0..50 {
            let id = Uuid::new_v4();
            let r = s.append_upload(&name(), &id, None, body(&[b"x"])).await;
            assert!(matches!(r, Err(StorageError::UploadUnknown)), "{r:?}");
            let r = s
                .complete_upload(&name(), &id, &digest, None, Some(body(&[b"x"])))
                .await;
            assert!(matches!(r, Err(StorageError::UploadUnknown)), "{r:?}");
        }
        assert_eq!(locks(&s), 0);

        // A chunk leaves its cursor cached (that is its use) and no lock; completion and
        // cancellation drop the cursor.
        let a = s.start_upload(&name()).await.expect("start");
        let b = s.start_upload(&name()).await.expect("start");
        s.append_upload(&name(), &a, None, body(&[b"x"]))
            .await
            .expect("append");
        s.append_upload(&name(), &b, None, body(&[b"y"]))
            .await
            .expect("append");
        assert_eq!(locks(&s), 0);
        assert_eq!(cursors(&s), 2);
        s.complete_upload(
            &name(),
            &a,
            &digest,
            None,
            None::<futures_util::stream::Empty<_>>,
        )
        .await
        .expect("complete");
        s.cancel_upload(&name(), &b).await.expect("cancel");
        assert_eq!(cursors(&s), 0);
        assert_eq!(locks(&s), 0);

        // An upload removed behind this node's back (GC on another node): its cursor goes on 404.
        let c = s.start_upload(&name()).await.expect("start");
        s.append_upload(&name(), &c, None, body(&[b"z"]))
            .await
            .expect("append");
        std::fs::remove_dir_all(s.layout().upload_dir(&name(), &c)).expect("remove");
        assert!(s.upload_status(&name(), &c).await.is_err());
        assert_eq!(cursors(&s), 0);
    }

    #[tokio::test]
    async fn a_writer_waiting_for_the_lock_keeps_the_entry_and_the_last_one_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path()).expect("storage");
        let id = s.start_upload(&name()).await.expect("start");
        let first = s.lock_upload(&name(), &id).await.expect("lock");
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let _second = s2.lock_upload(&name(), &id).await.expect("lock");
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(first);
        // The waiter still refers to the entry, so it stayed; it goes when the waiter is done.
        waiter.await.expect("waiter");
        assert_eq!(locks(&s), 0);

        // A waiter that gives up (its client went away) does not leave the entry behind either.
        let first = s.lock_upload(&name(), &id).await.expect("lock");
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let _second = s2.lock_upload(&name(), &id).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert_eq!(locks(&s), 0);
    }

    /// A body whose bytes arrive when the test sends them.
    fn slow_body(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(b), rx))
        }))
    }

    /// Two nodes on one storage (two `Storage` values share no memory, as two daemons): one upload
    /// driven through both, in turn and at once.
    #[tokio::test]
    async fn one_upload_through_two_nodes_is_serialised_by_the_storage_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n1 = Storage::open(dir.path()).expect("node 1");
        let n2 = Storage::open(dir.path()).expect("node 2");

        // In turn: each chunk through the other node, then completed on node 2.
        let id = n1.start_upload(&name()).await.expect("start");
        let mut all = Vec::new();
        for (k, node) in [&n1, &n2, &n1, &n2].into_iter().enumerate() {
            let chunk = vec![k as u8; 1000 + k];
            let at = all.len() as u64;
            let end = node
                .append_upload(&name(), &id, span(at, chunk.len() as u64), body(&[&chunk]))
                .await
                .expect("chunk");
            all.extend_from_slice(&chunk);
            assert_eq!(end, all.len() as u64);
        }
        let digest = Digest::from_sha256_output(&Sha256::digest(&all));
        let none = None::<futures_util::stream::Empty<_>>;
        n2.complete_upload(&name(), &id, &digest, None, none)
            .await
            .expect("complete on the other node");
        assert_eq!(
            n1.blob_size_global(&digest).await.expect("size"),
            Some(all.len() as u64)
        );

        // At once: node 1's chunk is in flight (half of it arrived) when node 2's, for the same
        // offset, comes in. Node 2's waits for node 1's to end, then finds the offset moved.
        let id = n1.start_upload(&name()).await.expect("start");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let a = vec![b'a'; 2000];
        let first = {
            let n1 = n1.clone();
            tokio::spawn(async move {
                n1.append_upload(&name(), &id, span(0, 2000), slow_body(rx))
                    .await
            })
        };
        tx.send(Bytes::from(vec![b'a'; 1000])).await.expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let second = {
            let n2 = n2.clone();
            tokio::spawn(async move {
                n2.append_upload(&name(), &id, span(0, 2000), body(&[&[b'b'; 2000]]))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "node 2 did not wait for node 1's chunk"
        );
        tx.send(Bytes::from(vec![b'a'; 1000])).await.expect("send");
        drop(tx);
        assert_eq!(first.await.expect("join").expect("node 1's chunk"), 2000);
        let second = second.await.expect("join");
        assert!(
            matches!(second, Err(StorageError::RangeMismatch(2000))),
            "{second:?}"
        );
        let digest = Digest::from_sha256_output(&Sha256::digest(&a));
        let none = None::<futures_util::stream::Empty<_>>;
        assert_eq!(
            n2.complete_upload(&name(), &id, &digest, None, none)
                .await
                .expect("node 1's bytes, exactly"),
            2000
        );
    }
}
