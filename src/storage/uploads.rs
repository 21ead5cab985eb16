//! Blob uploads, resumable across requests, daemon restarts and nodes.
//!
//! An upload is a directory under the repository's `_uploads/` holding `data` (the one file registryd
//! appends to in place) and `hashstates/<alg>/<offset>` files. A hashstate file is written, durably,
//! only after the data up to its offset is fsynced, and only then is the chunk acknowledged: the
//! largest hashstate offset is the acknowledged offset. Bytes past it in `data` (from a request that
//! failed or a crash mid-chunk) are cut off before the next write, so the upload resumes exactly where
//! the client was told it stands. The file holds the serialized sha256 state, so resuming never
//! rehashes what came before (if it is unreadable, the data is rehashed instead).

use std::io;
use std::sync::Arc;

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

    fn upload_lock(&self, id: &Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .upload_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.entry(*id).or_default().clone()
    }

    fn forget_upload(&self, id: &Uuid) {
        self.inner
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.inner
            .upload_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The acknowledged state of an upload, from this node's cache or from storage.
    async fn cursor(&self, name: &RepoName, id: &Uuid) -> Result<Cursor> {
        let cached = self
            .inner
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
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
            return Ok(UploadStatus {
                offset: s3.upload_offset(name, id).await?,
            });
        }
        Ok(UploadStatus {
            offset: self.cursor(name, id).await?.offset,
        })
    }

    /// Appends a chunk. With `start`, the chunk must begin at the acknowledged offset (in-order
    /// `Content-Range`), or this fails with `RangeMismatch` and writes nothing. Returns the new offset,
    /// durable on return.
    pub async fn append_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        start: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        if let Some(s3) = self.s3() {
            let lock = self.upload_lock(id);
            let _one_writer = lock.lock().await;
            return s3.append_upload(name, id, start, body).await;
        }
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
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
                    // size keeps nothing.
                    if e.kind() != io::ErrorKind::FileTooLarge && cursor.offset > started_at {
                        self.timed(file.flush()).await?;
                        self.timed(file.sync_data()).await?;
                        self.checkpoint(name, id, &cursor).await?;
                    }
                    return Err(StorageError::Body(e));
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
        self.inner
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, cursor.clone());
        Ok(())
    }

    /// Finishes an upload: appends the optional last chunk, verifies the digest, publishes the blob
    /// and links it into `name`. On a digest mismatch nothing is published and the upload is dropped.
    pub async fn complete_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        expected: &Digest,
        start: Option<u64>,
        last: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        if let Some(s3) = self.s3() {
            let lock = self.upload_lock(id);
            let _one_writer = lock.lock().await;
            let result = s3.complete_upload(name, id, expected, start, last).await;
            self.forget_upload(id);
            return result;
        }
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
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
        if let Some(s3) = self.s3() {
            let lock = self.upload_lock(id);
            let _one_writer = lock.lock().await;
            let result = s3.cancel_upload(name, id).await;
            self.forget_upload(id);
            return result;
        }
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let dir = self.layout().upload_dir(name, id);
        let removed = self
            .blocking(move || Ok(atomic::remove_durable(&dir)?))
            .await?;
        self.forget_upload(id);
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
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h)
}
