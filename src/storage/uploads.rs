//! Blob uploads, resumable across requests, daemon restarts and nodes.
//!
//! An upload is a directory under the repository's `_uploads/` holding `data` (the one file registryd
//! appends to in place) and `hashstates/<alg>/<offset>` files. A hashstate file is written, durably,
//! only after the data up to its offset is fsynced, and only then is the chunk acknowledged: the
//! largest hashstate offset is the acknowledged offset. Bytes past it in `data` (from a request that
//! failed or a crash mid-chunk) are cut off before the next write, so the upload resumes exactly where
//! the client was told it stands. The file holds the serialized sha256 state, so resuming never
//! rehashes what came before (if it is unreadable, the data is rehashed instead).
//!
//! A chunk sent with a declared range (`ChunkSpan`, from `Content-Range`) must hold exactly the
//! bytes it declared; one that holds more or fewer is refused whole and acknowledges nothing.
//!
//! What this node keeps in memory per upload is bounded: the one-writer lock exists only while a
//! request holds or awaits it, and the hash-state cache is capped and forgets idle uploads.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::{Result, Storage, StorageError, atomic, exists};
use crate::registry::{Algorithm, Digest, RepoName};

/// Bytes of an upload body gathered before one file write.
const WRITE_BATCH: usize = 512 * 1024;

/// Where an upload stands: bytes acknowledged so far, and the running sha256 over them.
#[derive(Clone)]
pub(super) struct Cursor {
    offset: u64,
    sha: Sha256,
}

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

/// Upload hash states this node cached, at most [`Cursors::MAX`] and each forgotten after
/// [`Cursors::IDLE`] unused: the hashstate files on storage are authoritative, so a forgotten
/// entry costs one small read when its upload continues. Without the bounds, every upload a client
/// abandoned stayed here for the life of the process.
#[derive(Default)]
pub(super) struct Cursors {
    entries: HashMap<Uuid, (Cursor, Instant)>,
}

impl Cursors {
    const MAX: usize = 1024;
    const IDLE: Duration = Duration::from_secs(600);

    fn get(&mut self, id: &Uuid) -> Option<Cursor> {
        let (cursor, used) = self.entries.get_mut(id)?;
        *used = Instant::now();
        Some(cursor.clone())
    }

    fn insert(&mut self, id: Uuid, cursor: Cursor) {
        if self.entries.len() >= Self::MAX && !self.entries.contains_key(&id) {
            self.entries
                .retain(|_, (_, used)| used.elapsed() < Self::IDLE);
            if self.entries.len() >= Self::MAX
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(id, _)| *id)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(id, (cursor, Instant::now()));
    }

    fn remove(&mut self, id: &Uuid) {
        self.entries.remove(id);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// This node's one-writer lock of an upload, held for as long as this value lives. Its entry in
/// `upload_locks` is removed when the last request holding or awaiting it lets go, so the map holds
/// only uploads with a request in flight, whatever ids clients send.
struct UploadWriter {
    // Field order matters: the guard (and its reference to the mutex) goes before the entry
    // looks whether anyone else still refers to the mutex.
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
        if let Some(s3) = self.s3() {
            return s3.start_upload(name).await;
        }
        let id = Uuid::new_v4();
        let path = self.layout().upload_started_at(name, &id);
        self.blocking(move || {
            let now = httpdate::fmt_http_date(std::time::SystemTime::now());
            atomic::write_atomic(&path, now.as_bytes())?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// Waits for, and holds, this node's one-writer lock of upload `id`.
    async fn lock_upload(&self, id: &Uuid) -> UploadWriter {
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
        UploadWriter {
            _guard: lock.lock_owned().await,
            _entry: entry,
        }
    }

    /// Drops what this node cached of an upload that is finished, cancelled or unknown.
    fn forget_upload(&self, id: &Uuid) {
        self.cursors().remove(id);
    }

    fn cursors(&self) -> std::sync::MutexGuard<'_, Cursors> {
        self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `result`, having forgotten the upload if it says the upload is unknown (a 404).
    fn forget_if_unknown<T>(&self, id: &Uuid, result: Result<T>) -> Result<T> {
        if matches!(result, Err(StorageError::UploadUnknown)) {
            self.forget_upload(id);
        }
        result
    }

    /// The acknowledged state of an upload, from this node's cache or from storage.
    async fn cursor(&self, name: &RepoName, id: &Uuid) -> Result<Cursor> {
        let result = self.read_cursor(name, id).await;
        self.forget_if_unknown(id, result)
    }

    async fn read_cursor(&self, name: &RepoName, id: &Uuid) -> Result<Cursor> {
        let cached = self.cursors().get(id);
        let l = self.layout().clone();
        let (name, id) = (name.clone(), *id);
        self.blocking(move || {
            if !exists(&l.upload_started_at(&name, &id))? {
                return Err(StorageError::UploadUnknown);
            }
            let acked = acknowledged_offset(&l.upload_hashstates(&name, &id, Algorithm::Sha256))?;
            if let Some(c) = cached.filter(|c| c.offset == acked) {
                return Ok(c);
            }
            if acked == 0 {
                return Ok(Cursor {
                    offset: 0,
                    sha: Sha256::new(),
                });
            }
            let state = std::fs::read(l.upload_hashstate(&name, &id, Algorithm::Sha256, acked))?;
            if let Some(sha) = SerializedState::<Sha256>::try_from(state.as_slice())
                .ok()
                .and_then(|s| Sha256::deserialize(&s).ok())
            {
                return Ok(Cursor { offset: acked, sha });
            }
            // The state is unreadable (written by another implementation): rehash the data.
            let sha = hash_prefix::<Sha256>(&l.upload_data(&name, &id), acked)?;
            Ok(Cursor { offset: acked, sha })
        })
        .await
    }

    /// The acknowledged offset of an upload (for `GET` upload status).
    pub async fn upload_status(&self, name: &RepoName, id: &Uuid) -> Result<UploadStatus> {
        if let Some(s3) = self.s3() {
            let offset = s3.upload_offset(name, id).await;
            return Ok(UploadStatus {
                offset: self.forget_if_unknown(id, offset)?,
            });
        }
        Ok(UploadStatus {
            offset: self.cursor(name, id).await?.offset,
        })
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
        let _one_writer = self.lock_upload(id).await;
        if let Some(s3) = self.s3() {
            let result = s3.append_upload(name, id, start, body).await;
            return self.forget_if_unknown(id, result);
        }
        let cursor = self.cursor(name, id).await?;
        if let Some(s) = start
            && s != cursor.offset
        {
            return Err(StorageError::RangeMismatch(cursor.offset));
        }
        let cursor = self.write_chunk(name, id, cursor, body).await?;
        self.checkpoint(name, id, &cursor).await?;
        Ok(cursor.offset)
    }

    /// Appends `body` after the acknowledged offset and fsyncs it; not yet acknowledged.
    async fn write_chunk<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        mut cursor: Cursor,
        mut body: S,
    ) -> Result<Cursor>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut file = self
            .timed(
                tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.layout().upload_data(name, id)),
            )
            .await?;
        // Cut off anything past the acknowledged offset: a failed request or a crash left it.
        if self.timed(file.metadata()).await?.len() != cursor.offset {
            self.timed(file.set_len(cursor.offset)).await?;
        }
        self.timed(file.seek(io::SeekFrom::Start(cursor.offset)))
            .await?;
        let started_at = cursor.offset;
        // A request body arrives in frames of a TLS record or so (16 KiB); each file write is a
        // hop to a blocking thread, so frames are gathered into batches of WRITE_BATCH first
        // (one hop per batch instead of dozens, and the hop overlaps receiving the next batch).
        let mut batch = BytesMut::new();
        loop {
            let next = body.next().await;
            let flush_now = match &next {
                Some(Ok(chunk)) => batch.len() + chunk.len() > WRITE_BATCH,
                _ => true,
            };
            if flush_now && !batch.is_empty() {
                self.append(&mut file, &mut cursor, &batch).await?;
                batch.clear();
            }
            match next {
                Some(Ok(chunk)) if chunk.len() >= WRITE_BATCH => {
                    self.append(&mut file, &mut cursor, &chunk).await?;
                }
                Some(Ok(chunk)) => {
                    if batch.capacity() == 0 {
                        batch.reserve(WRITE_BATCH);
                    }
                    batch.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    // A body cut off by the client or a stall timeout: keep what arrived (the
                    // batch was written above), so the client resumes from there (GET on the
                    // upload says where) instead of sending it all again. A body refused for its
                    // size or for not matching its range keeps nothing: what it wrote lies past
                    // the acknowledged offset and is cut off before the next write.
                    if keeps_partial(&e) && cursor.offset > started_at {
                        self.timed(file.flush()).await?;
                        self.timed(file.sync_data()).await?;
                        self.checkpoint(name, id, &cursor).await?;
                        return Err(StorageError::Body(e));
                    }
                    return Err(body_error(e, started_at));
                }
                None => break,
            }
        }
        self.timed(file.flush()).await?;
        self.timed(file.sync_data()).await?;
        Ok(cursor)
    }

    /// Writes `bytes` at the end of an upload's data and advances `cursor` over them.
    async fn append(
        &self,
        file: &mut tokio::fs::File,
        cursor: &mut Cursor,
        bytes: &[u8],
    ) -> Result<()> {
        self.timed(file.write_all(bytes)).await?;
        cursor.sha.update(bytes);
        cursor.offset += bytes.len() as u64;
        Ok(())
    }

    /// Records `cursor` as acknowledged: durable hash state at its offset, older states removed.
    async fn checkpoint(&self, name: &RepoName, id: &Uuid, cursor: &Cursor) -> Result<()> {
        let l = self.layout().clone();
        let (name, id2, c) = (name.clone(), *id, cursor.clone());
        self.blocking(move || {
            let dir = l.upload_hashstates(&name, &id2, Algorithm::Sha256);
            let state = c.sha.serialize();
            atomic::write_atomic(&dir.join(c.offset.to_string()), state.as_slice())?;
            // Older states stay until the session is removed: the largest offset is the one that
            // counts, and pruning them here cost a directory read and an unlink per chunk, each a
            // network round trip on a shared mount.
            Ok(())
        })
        .await?;
        self.cursors().insert(*id, cursor.clone());
        Ok(())
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
        let _one_writer = self.lock_upload(id).await;
        if let Some(s3) = self.s3() {
            let result = s3.complete_upload(name, id, expected, start, last).await;
            // Done, or refused: either way the next request reads the state from the bucket.
            self.forget_upload(id);
            return result;
        }
        let mut cursor = self.cursor(name, id).await?;
        if let Some(s) = start
            && s != cursor.offset
        {
            return Err(StorageError::RangeMismatch(cursor.offset));
        }
        if let Some(body) = last {
            cursor = self.write_chunk(name, id, cursor, body).await?;
        }
        let l = self.layout().clone();
        let (n, i, exp) = (name.clone(), *id, expected.clone());
        let size = cursor.offset;
        // Publishing and linking must not interleave with a garbage collection sweep.
        let _sweep = self.push_guard().await?;
        let result = self
            .blocking(move || {
                let data = l.upload_data(&n, &i);
                // An upload of zero bytes may never have created its data file.
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&data)?;
                // Every chunk was made durable before it was acknowledged (write_chunk); only a
                // cut-back file has something left to sync. Each fsync is a network round trip to
                // every replica on a shared mount.
                if file.metadata()?.len() != size {
                    file.set_len(size)?;
                    file.sync_all()?;
                }
                let computed = match exp.algorithm() {
                    Algorithm::Sha256 => Digest::from_sha256_output(&cursor.sha.finalize()),
                    Algorithm::Sha512 => {
                        Digest::from_sha512_output(&hash_prefix::<Sha512>(&data, size)?.finalize())
                    }
                };
                if computed != exp {
                    atomic::remove_durable(&l.upload_dir(&n, &i))?;
                    return Err(StorageError::DigestMismatch {
                        expected: exp,
                        computed,
                    });
                }
                let dest = l.blob_data(&exp);
                // Blobs are immutable: if another push (on any node) published it first, keep theirs.
                if !exists(&dest)?
                    && let Err(e) = atomic::publish(&data, &dest)
                {
                    // Another node may have published the same digest at the same moment; its
                    // bytes are the same (verified before its rename), so that is success.
                    if !exists(&dest)? {
                        return Err(e.into());
                    }
                }
                let link = l.layer_link(&n, &exp);
                atomic::rewrite_link(&link, &super::layout::link_content(&exp))?;
                // The session is spent. Its removal need not be durable: if a crash brings it
                // back, it is an abandoned upload that garbage collection removes. So a
                // failed removal does not fail the push, whose blob is published and linked.
                let dir = l.upload_dir(&n, &i);
                match atomic::remove_tree(&dir) {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        upload = %dir.display(),
                        "finished upload's directory still listed after removal; gc removes it as abandoned"
                    ),
                    Err(e) => tracing::warn!(
                        upload = %dir.display(),
                        "finished upload's directory not removed ({e}); gc removes it as abandoned"
                    ),
                }
                Ok(size)
            })
            .await;
        self.forget_upload(id);
        result
    }

    /// Cancels an upload and removes its data.
    pub async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> Result<()> {
        let _one_writer = self.lock_upload(id).await;
        if let Some(s3) = self.s3() {
            let result = s3.cancel_upload(name, id).await;
            self.forget_upload(id);
            return result;
        }
        let dir = self.layout().upload_dir(name, id);
        let removed = self
            .blocking(move || Ok(atomic::remove_durable(&dir)?))
            .await;
        // Forgotten whatever the outcome: a cancelled upload is not resumed, and a failed removal
        // reads the state from storage again should it be.
        self.forget_upload(id);
        let removed = removed?;
        if removed {
            Ok(())
        } else {
            Err(StorageError::UploadUnknown)
        }
    }
}

/// The largest offset with a hashstate file, 0 when there is none.
fn acknowledged_offset(dir: &std::path::Path) -> Result<u64> {
    let Some(entries) = super::read_dir_if_exists(dir)? else {
        return Ok(0);
    };
    let mut max = 0;
    for e in entries {
        let e = e?;
        if let Some(o) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            max = max.max(o);
        }
    }
    Ok(max)
}

/// Hashes the first `len` bytes of a file.
pub(crate) fn hash_prefix<H: sha2::Digest>(path: &std::path::Path, len: u64) -> io::Result<H> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file).take(len);
    let mut h = H::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        // A read returns at most the buffer's length.
        let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else {
            break;
        };
        h.update(read);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.cursors().len(), 2);
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
        assert_eq!(s.cursors().len(), 0);
        assert_eq!(locks(&s), 0);

        // An upload removed behind this node's back (GC on another node): its cursor goes on 404.
        let c = s.start_upload(&name()).await.expect("start");
        s.append_upload(&name(), &c, None, body(&[b"z"]))
            .await
            .expect("append");
        std::fs::remove_dir_all(s.layout().upload_dir(&name(), &c)).expect("remove");
        assert!(s.upload_status(&name(), &c).await.is_err());
        assert_eq!(s.cursors().len(), 0);
    }

    #[tokio::test]
    async fn a_writer_waiting_for_the_lock_keeps_the_entry_and_the_last_one_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path()).expect("storage");
        let id = Uuid::new_v4();
        let first = s.lock_upload(&id).await;
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let _second = s2.lock_upload(&id).await;
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(first);
        // The waiter still refers to the entry, so it stayed; it goes when the waiter is done.
        waiter.await.expect("waiter");
        assert_eq!(locks(&s), 0);

        // A waiter that gives up (its client went away) does not leave the entry behind either.
        let first = s.lock_upload(&id).await;
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let _second = s2.lock_upload(&id).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert_eq!(locks(&s), 0);
    }

    #[test]
    fn the_cursor_cache_is_capped() {
        let mut c = Cursors::default();
        for _ in 0..Cursors::MAX + 10 {
            c.insert(
                Uuid::new_v4(),
                Cursor {
                    offset: 1,
                    sha: Sha256::new(),
                },
            );
        }
        assert_eq!(c.len(), Cursors::MAX);
    }
}
