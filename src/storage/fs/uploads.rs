//! Blob uploads on the filesystem, resumable across requests, daemon restarts and nodes.
//!
//! An upload is a directory under the repository's `_uploads/` holding `data` (the one file registryd
//! appends to in place) and `hashstates/<alg>/<offset>` files. A hashstate file is written, durably,
//! only after the data up to its offset is fsynced, and only then is the chunk acknowledged: the
//! largest hashstate offset is the acknowledged offset. Bytes past it in `data` (from a request that
//! failed or a crash mid-chunk) are cut off before the next write, so the upload resumes exactly where
//! the client was told it stands. The file holds the serialized sha256 state, so resuming never
//! rehashes what came before (if it is unreadable, the data is rehashed instead).
//!
//! The one-writer lock per upload is the facade's (see `storage::uploads`); the hash-state cache
//! here is capped and forgets idle uploads.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};
use uuid::Uuid;

use super::{FsDriver, atomic, exists};
use crate::registry::{Algorithm, Digest, RepoName};
use crate::storage::layout::link_content;
use crate::storage::pool::{Pool, Started};
use crate::storage::uploads::{UploadWriter, body_error, keeps_partial};
use crate::storage::{Result, StorageError};

/// Bytes of an upload body gathered before one file write.
const WRITE_BATCH: usize = 512 * 1024;

/// Where an upload stands: bytes acknowledged so far, and the running sha256 over them.
#[derive(Clone)]
pub(super) struct Cursor {
    offset: u64,
    sha: Sha256,
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

/// An upload's data file being appended to, through the pool, one write in flight at a time: a
/// batch is hashed while it is written, and the next one received meanwhile.
///
/// Each write holds the upload's one-writer lock until it returns. A write already running when
/// its request is dropped (the client went away) so still ends before the upload's next request
/// looks at the file; one still waiting for a pool slot never starts.
struct Appender {
    pool: Arc<Pool>,
    file: Arc<File>,
    lock: Arc<UploadWriter>,
    /// Offset of the next write, and the hash of everything before it.
    at: u64,
    sha: Sha256,
    in_flight: Option<Started<()>>,
}

impl Appender {
    /// Waits for the write in flight, if any.
    async fn wait(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(w) => w.finish().await,
            None => Ok(()),
        }
    }

    /// Starts writing `bytes` after what was written before, once the previous write is done, and
    /// hashes them while they are written.
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.wait().await?;
        let (file, at, lock) = (self.file.clone(), self.at, self.lock.clone());
        let data = bytes.clone();
        let write = self.pool.start(move || {
            let _one_writer = lock;
            Ok(file.write_all_at(&data, at)?)
        });
        self.in_flight = Some(write.await?);
        self.at += bytes.len() as u64;
        self.sha.update(&bytes);
        Ok(())
    }

    /// Makes everything written so far durable and says where the upload stands.
    async fn sync(&mut self) -> Result<Cursor> {
        self.wait().await?;
        let file = self.file.clone();
        self.pool.blocking(move || Ok(file.sync_data()?)).await?;
        Ok(Cursor {
            offset: self.at,
            sha: self.sha.clone(),
        })
    }
}

impl FsDriver {
    /// Starts an upload in `name`; it is durable (survives a restart) when this returns.
    pub async fn start_upload(&self, name: &RepoName) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let (l, path) = (
            self.layout.clone(),
            self.layout.upload_started_at(name, &id),
        );
        self.pool
            .blocking(move || {
                let now = httpdate::fmt_http_date(std::time::SystemTime::now());
                atomic::write_atomic(&l, &path, now.as_bytes())?;
                Ok(())
            })
            .await?;
        Ok(id)
    }

    /// The cluster's one-writer lock of an upload: `flock` on its `startedat`, which every upload
    /// has from its start (Distribution's too) and nobody rewrites, so the lock adds no file to
    /// Distribution's tree and goes with the upload. Waits while a request on another node holds
    /// it, polling without holding a thread (a request that goes away stops waiting); a finished
    /// or cancelled upload is `UploadUnknown`, also to a request that waited for the one ending it.
    pub async fn lock_upload(&self, name: &RepoName, id: &Uuid) -> Result<std::fs::File> {
        let path = self.layout.upload_started_at(name, id);
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            let p = path.clone();
            let taken = self
                .pool
                .blocking(move || {
                    let f = match atomic::retry_stale(|| std::fs::File::open(&p)) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(StorageError::UploadUnknown);
                        }
                        Err(e) => return Err(e.into()),
                    };
                    Ok(atomic::flock_nb(&f, libc::LOCK_EX)?.then_some(f))
                })
                .await?;
            if let Some(f) = taken {
                return Ok(f);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// Drops what this node cached of an upload that is finished, cancelled or unknown.
    fn forget_upload(&self, id: &Uuid) {
        self.cursors().remove(id);
    }

    fn cursors(&self) -> std::sync::MutexGuard<'_, Cursors> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many uploads this node keeps a hash state of.
    #[cfg(test)]
    pub(crate) fn cached_cursors(&self) -> usize {
        self.cursors().len()
    }

    /// The acknowledged state of an upload, from this node's cache or from storage; forgotten
    /// here when storage says the upload is unknown (a 404).
    async fn cursor(&self, name: &RepoName, id: &Uuid) -> Result<Cursor> {
        let result = self.read_cursor(name, id).await;
        if matches!(result, Err(StorageError::UploadUnknown)) {
            self.forget_upload(id);
        }
        result
    }

    async fn read_cursor(&self, name: &RepoName, id: &Uuid) -> Result<Cursor> {
        let cached = self.cursors().get(id);
        let l = self.layout.clone();
        let (name, id) = (name.clone(), *id);
        self.pool
            .blocking(move || {
                if !exists(&l.upload_started_at(&name, &id))? {
                    return Err(StorageError::UploadUnknown);
                }
                let acked =
                    acknowledged_offset(&l.upload_hashstates(&name, &id, Algorithm::Sha256))?;
                if let Some(c) = cached.filter(|c| c.offset == acked) {
                    return Ok(c);
                }
                if acked == 0 {
                    return Ok(Cursor {
                        offset: 0,
                        sha: Sha256::new(),
                    });
                }
                let state =
                    std::fs::read(l.upload_hashstate(&name, &id, Algorithm::Sha256, acked))?;
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
    pub async fn upload_offset(&self, name: &RepoName, id: &Uuid) -> Result<u64> {
        Ok(self.cursor(name, id).await?.offset)
    }

    /// Appends a chunk that must begin at `start` when given (else `RangeMismatch`, nothing
    /// written). The caller holds the upload's one-writer lock, `lock`, and held `body` to its span.
    /// Returns the new offset, durable on return.
    pub async fn append_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        start: Option<u64>,
        body: S,
        lock: &Arc<UploadWriter>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let cursor = self.cursor(name, id).await?;
        if let Some(s) = start
            && s != cursor.offset
        {
            return Err(StorageError::RangeMismatch(cursor.offset));
        }
        let cursor = self.write_chunk(name, id, cursor, body, lock).await?;
        self.checkpoint(name, id, &cursor).await?;
        Ok(cursor.offset)
    }

    /// Appends `body` after the acknowledged offset and fsyncs it; not yet acknowledged.
    async fn write_chunk<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        cursor: Cursor,
        body: S,
        lock: &Arc<UploadWriter>,
    ) -> Result<Cursor>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let path = self.layout.upload_data(name, id);
        let acked = cursor.offset;
        let file = self
            .pool
            .blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                // Cut off anything past the acknowledged offset: a failed request or a crash left it.
                if file.metadata()?.len() != acked {
                    file.set_len(acked)?;
                }
                Ok(Arc::new(file))
            })
            .await?;
        let mut out = Appender {
            pool: self.pool.clone(),
            file,
            lock: lock.clone(),
            at: acked,
            sha: cursor.sha,
            in_flight: None,
        };
        let result = self.append_body(name, id, acked, body, &mut out).await;
        // A write this request started ends before the request does, whatever the outcome.
        let waited = out.wait().await;
        let cursor = result?;
        waited?;
        Ok(cursor)
    }

    async fn append_body<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        started_at: u64,
        mut body: S,
        out: &mut Appender,
    ) -> Result<Cursor>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
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
                out.write(batch.split().freeze()).await?;
            }
            match next {
                Some(Ok(chunk)) if chunk.len() >= WRITE_BATCH => out.write(chunk).await?,
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
                    if keeps_partial(&e) && out.at > started_at {
                        let cursor = out.sync().await?;
                        self.checkpoint(name, id, &cursor).await?;
                        return Err(StorageError::Body(e));
                    }
                    return Err(body_error(e, started_at));
                }
                None => break,
            }
        }
        out.sync().await
    }

    /// Records `cursor` as acknowledged: durable hash state at its offset, older states removed.
    async fn checkpoint(&self, name: &RepoName, id: &Uuid, cursor: &Cursor) -> Result<()> {
        let l = self.layout.clone();
        let (name, id2, c) = (name.clone(), *id, cursor.clone());
        self.pool
            .blocking(move || {
                let state = c.sha.serialize();
                let path = l.upload_hashstate(&name, &id2, Algorithm::Sha256, c.offset);
                atomic::write_atomic(&l, &path, state.as_slice())?;
                // Older states stay until the session is removed: the largest offset is the one that
                // counts, and pruning them here cost a directory read and an unlink per chunk, each a
                // network round trip on a shared mount.
                Ok(())
            })
            .await?;
        self.cursors().insert(*id, cursor.clone());
        Ok(())
    }

    /// Finishes an upload: appends the optional last chunk (which must begin at `start` when
    /// given), verifies the digest, publishes the blob and links it into `name`. On a digest
    /// mismatch nothing is published and the upload is dropped. The caller holds the upload's
    /// one-writer lock.
    pub async fn complete_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        expected: &Digest,
        start: Option<u64>,
        last: Option<S>,
        lock: &Arc<UploadWriter>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut cursor = self.cursor(name, id).await?;
        if let Some(s) = start
            && s != cursor.offset
        {
            return Err(StorageError::RangeMismatch(cursor.offset));
        }
        if let Some(body) = last {
            cursor = self.write_chunk(name, id, cursor, body, lock).await?;
        }
        let l = self.layout.clone();
        let (n, i, exp) = (name.clone(), *id, expected.clone());
        let size = cursor.offset;
        // Publishing and linking must not interleave with a garbage collection sweep.
        let _sweep = self.push_guard().await?;
        let result = self
            .pool
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
                    && let Err(e) = atomic::publish(&l, &data, &dest)
                {
                    // Another node may have published the same digest at the same moment; its
                    // bytes are the same (verified before its rename), so that is success.
                    if !exists(&dest)? {
                        return Err(e.into());
                    }
                }
                let link = l.layer_link(&n, &exp);
                atomic::rewrite_link(&l, &link, &link_content(&exp))?;
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
        let dir = self.layout.upload_dir(name, id);
        let removed = self
            .pool
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
