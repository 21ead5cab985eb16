//! Cache fills in a bucket: a blob fetched from an upstream registry is written once, by the node
//! holding the fill's lease, while clients on every node read it as it arrives.
//!
//! Under `registryd/proxy/fills/<hex>/` the fetcher writes `size` (the blob's size, once the
//! upstream answered) and then the bytes as numbered chunk objects of [`CHUNK`] bytes, each one
//! PUT whole, so a reader on any node streams chunk after chunk as they appear. When the digest
//! of everything matches, the chunks are joined under the blob's key by a multipart upload of
//! server-side part copies (one plain copy for a single chunk): the blob appears whole, and its
//! bytes are not sent to the store a second time. The chunks are deleted then, or when a fetch
//! fails. The lease `fill-<hex>` stands in for the filesystem's `flock`: it lapses when its holder
//! dies, and the next fetcher removes what the dead one left.
//!
//! A blob the upstream sends without a size gets no `size` object: its chunks are written as they
//! arrive all the same (nothing is held beyond one chunk), and readers wait for the joined blob.
//!
//! Readers hash what they stream and fail the last chunk on a mismatch, so a client never
//! receives a complete body with the wrong content.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::S3Driver;
use super::client::PartSource;
use super::lifecycle::Lease;
use crate::registry::{Digest, RepoName};
use crate::storage::layout::Layout;
use crate::storage::{BlobStream, Result, StorageError, verify_fill};

/// Bytes per chunk object: what a follower reads at once, and a multipart part when joined.
pub const CHUNK: usize = 8 << 20;

/// How often a follower looks for the next chunk.
const POLL: Duration = Duration::from_millis(100);

impl S3Driver {
    fn fill_dir(&self, digest: &Digest) -> String {
        Self::key(&self.layout.s3_fill_dir(digest))
    }

    fn fill_size_key(&self, digest: &Digest) -> String {
        Self::key(&self.layout.s3_fill_size(digest))
    }

    fn fill_chunk_key(&self, digest: &Digest, n: u64) -> String {
        Self::key(&self.layout.s3_fill_chunk(digest, n))
    }

    fn fill_lease(digest: &Digest) -> String {
        Layout::fill_lease(digest.hex())
    }

    /// Deletes every object of the fill of `digest`.
    async fn clear_fill(&self, digest: &Digest) -> Result<()> {
        let listing = self
            .client
            .list(&format!("{}/", self.fill_dir(digest)), false)
            .await?;
        for o in listing.objects {
            self.client.delete(&o.key).await?;
        }
        Ok(())
    }

    /// Takes the fetch of `digest` unless another node (or task) holds it or the blob is stored.
    pub async fn try_lead_fill(self: &Arc<Self>, digest: &Digest) -> Result<Option<S3Fill>> {
        if self.blob_size_global(digest).await?.is_some() {
            return Ok(None);
        }
        let Some(lease) = self
            .take_lease(&Self::fill_lease(digest), Duration::ZERO)
            .await?
        else {
            return Ok(None);
        };
        // Whoever held it before may have finished, or died: start from nothing.
        if self.blob_size_global(digest).await?.is_some() {
            lease.release().await;
            return Ok(None);
        }
        if let Err(e) = self.clear_fill(digest).await {
            lease.release().await;
            return Err(e);
        }
        Ok(Some(S3Fill {
            driver: self.clone(),
            digest: digest.clone(),
            lease: Some(lease),
            buf: BytesMut::new(),
            chunks: 0,
            sha: Sha256::new(),
            written: 0,
            done: false,
        }))
    }

    /// Streams `digest` as it is being fetched (by any node), or from the bucket once stored.
    /// Same contract as [`crate::storage::Storage::follow_fill`].
    pub async fn follow_fill(
        self: &Arc<Self>,
        digest: &Digest,
        start_wait: Duration,
        stall: Duration,
    ) -> Result<Option<(u64, BlobStream)>> {
        let began = Instant::now();
        let mut rounds = 0u32;
        loop {
            if let Some(size) = self.blob_size_global(digest).await? {
                return Ok(Some((size, self.open_blob(digest, 0, size).await?)));
            }
            if let Some(b) = self.client.get(&self.fill_size_key(digest)).await?
                && let Ok(size) = String::from_utf8_lossy(&b).trim().parse::<u64>()
            {
                return Ok(Some((size, self.tail(digest.clone(), size, stall))));
            }
            rounds += 1;
            // Ended without a blob: the fetch failed, or its holder died.
            if rounds.is_multiple_of(5)
                && !self.lease_held(&Self::fill_lease(digest)).await?
                && self.blob_size_global(digest).await?.is_none()
            {
                return Ok(None);
            }
            if began.elapsed() > start_wait {
                return Err(StorageError::Unavailable(format!(
                    "the fetch of {digest} from upstream did not start within {}s",
                    start_wait.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads a fill in progress, chunk by chunk as they appear; once the blob is stored (and the
    /// chunks are gone), the rest from the blob.
    fn tail(self: &Arc<Self>, digest: Digest, size: u64, stall: Duration) -> BlobStream {
        struct Tail {
            driver: Arc<S3Driver>,
            digest: Digest,
            size: u64,
            pos: u64,
            sha: Sha256,
            last_progress: Instant,
            stored: Option<BlobStream>,
        }
        impl Tail {
            fn advance(&mut self, chunk: &[u8]) -> io::Result<()> {
                self.pos += chunk.len() as u64;
                self.sha.update(chunk);
                self.last_progress = Instant::now();
                if self.pos > self.size {
                    return Err(io::Error::other(format!(
                        "the fill of {} holds more than its {} bytes",
                        self.digest, self.size
                    )));
                }
                if self.pos == self.size {
                    let got = Digest::from_sha256_output(&self.sha.clone().finalize());
                    if got != self.digest {
                        return Err(io::Error::other(format!(
                            "upstream sent content with digest {got}, not {}",
                            self.digest
                        )));
                    }
                }
                Ok(())
            }
        }
        let state = Tail {
            driver: self.clone(),
            digest,
            size,
            pos: 0,
            sha: Sha256::new(),
            last_progress: Instant::now(),
            stored: None,
        };
        let stream = futures_util::stream::try_unfold(state, move |mut t| async move {
            if t.pos == t.size {
                return Ok(None);
            }
            loop {
                if let Some(stored) = t.stored.as_mut() {
                    let Some(chunk) = stored.next().await else {
                        return Err(io::Error::other(format!(
                            "blob {} ended before its {} bytes",
                            t.digest, t.size
                        )));
                    };
                    let chunk = chunk?;
                    t.advance(&chunk)?;
                    return Ok(Some((chunk, t)));
                }
                let n = t.pos / CHUNK as u64;
                let key = t.driver.fill_chunk_key(&t.digest, n);
                if let Some(chunk) = t.driver.client.get(&key).await.map_err(io::Error::from)? {
                    let want = (t.size - n * CHUNK as u64).min(CHUNK as u64);
                    if chunk.len() as u64 != want || t.pos != n * CHUNK as u64 {
                        return Err(io::Error::other(format!(
                            "fill chunk {key} holds {} bytes, not {want}",
                            chunk.len()
                        )));
                    }
                    t.advance(&chunk)?;
                    return Ok(Some((chunk, t)));
                }
                // Joined into the blob, and the chunks removed: read on from the blob.
                if t.driver
                    .blob_size_global(&t.digest)
                    .await
                    .map_err(io::Error::from)?
                    .is_some()
                {
                    let rest = t
                        .driver
                        .open_blob(&t.digest, t.pos, t.size - t.pos)
                        .await
                        .map_err(io::Error::from)?;
                    t.stored = Some(rest);
                    continue;
                }
                if t.last_progress.elapsed() > stall {
                    let held = t
                        .driver
                        .lease_held(&S3Driver::fill_lease(&t.digest))
                        .await
                        .map_err(io::Error::from)?;
                    if !held {
                        return Err(io::Error::other(
                            "the upstream fetch this download followed was interrupted; retry",
                        ));
                    }
                    t.last_progress = Instant::now();
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Box::pin(stream)
    }
}

impl S3Driver {
    /// Deletes the chunks of fills whose fetcher died (no lease, nothing written since
    /// `older_than`); returns how many fills that was. With `dry_run`, only counts them.
    pub async fn remove_abandoned_fills(
        &self,
        older_than: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<usize> {
        let top = format!("{}/", Self::key(&self.layout.fills_dir()));
        let listing = self.client.list(&top, false).await?;
        let mut fills: std::collections::BTreeMap<String, Vec<super::client::Object>> =
            Default::default();
        for o in listing.objects {
            let rest = o.key.strip_prefix(&top).unwrap_or(&o.key);
            let hex = rest.split('/').next().unwrap_or(rest).to_string();
            fills.entry(hex).or_default().push(o);
        }
        let mut removed = 0;
        for (hex, objects) in fills {
            if objects.iter().any(|o| o.modified >= older_than)
                || self.lease_held(&Layout::fill_lease(&hex)).await?
            {
                continue;
            }
            removed += 1;
            if !dry_run {
                for o in objects {
                    self.client.delete(&o.key).await?;
                }
            }
        }
        Ok(removed)
    }

    /// When the stamp object at `path` was last written, by the store's clock.
    pub async fn stamp_time(
        &self,
        path: &std::path::Path,
    ) -> Result<Option<std::time::SystemTime>> {
        Ok(self
            .client
            .stat(&Self::key(path))
            .await?
            .map(|o| o.modified))
    }

    /// Writes the (empty) stamp object at `path`, setting its time to now.
    pub async fn touch_stamp(&self, path: &std::path::Path) -> Result<()> {
        self.client.put(&Self::key(path), Bytes::new()).await
    }
}

/// The right to fetch one blob into the bucket. Dropped without [`S3Fill::finish`], it deletes
/// what it wrote and releases the lease, and readers following it fail.
pub struct S3Fill {
    driver: Arc<S3Driver>,
    digest: Digest,
    lease: Option<Lease>,
    /// Bytes not yet written as a chunk (less than [`CHUNK`]).
    buf: BytesMut,
    /// Chunks written.
    chunks: u64,
    sha: Sha256,
    written: u64,
    done: bool,
}

impl S3Fill {
    /// Announces the blob's size, when the upstream's answer had one. Without it, the chunks are
    /// written all the same, and readers wait for the joined blob (as on a filesystem).
    pub async fn begin(&mut self, size: Option<u64>) -> Result<()> {
        let Some(size) = size else {
            return Ok(());
        };
        let key = self.driver.fill_size_key(&self.digest);
        self.driver
            .client
            .put(&key, Bytes::from(size.to_string()))
            .await
    }

    /// Appends the next bytes; every full chunk is written at once.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.sha.update(&chunk);
        self.written += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        while self.buf.len() >= CHUNK {
            let full = self.buf.split_to(CHUNK).freeze();
            self.put_chunk(full).await?;
        }
        Ok(())
    }

    async fn put_chunk(&mut self, bytes: Bytes) -> Result<()> {
        let key = self.driver.fill_chunk_key(&self.digest, self.chunks);
        self.driver.client.put(&key, bytes).await?;
        self.chunks += 1;
        Ok(())
    }

    /// Verifies the digest, joins the chunks under the blob's key, and links it into `name`.
    pub async fn finish(mut self, name: &RepoName) -> Result<u64> {
        verify_fill(&self.sha, &self.digest)?;
        let full_chunks = self.chunks;
        let rest = self.buf.split().freeze();
        if !rest.is_empty() {
            // For followers; the join sends these bytes itself (a store may refuse to copy from
            // an object this small).
            self.put_chunk(rest.clone()).await?;
        }
        let d = self.driver.clone();
        let dest = S3Driver::key(&d.layout.blob_data(&self.digest));
        if d.client.head(&dest).await? != Some(self.written) {
            if full_chunks == 0 {
                d.client.put(&dest, rest).await?;
            } else if full_chunks == 1 && rest.is_empty() {
                d.client
                    .copy(&d.fill_chunk_key(&self.digest, 0), &dest)
                    .await?;
            } else {
                let mut sources: Vec<_> = (0..full_chunks)
                    .map(|n| PartSource::Copy {
                        key: d.fill_chunk_key(&self.digest, n),
                        range: None,
                    })
                    .collect();
                if !rest.is_empty() {
                    sources.push(PartSource::Bytes(rest));
                }
                d.client.compose(&dest, &sources, self.written).await?;
            }
        }
        d.link_blob(name, &self.digest).await?;
        self.done = true;
        if let Err(e) = d.clear_fill(&self.digest).await {
            tracing::warn!(digest = %self.digest, error = %e, "cannot remove a finished fill's chunks");
        }
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        Ok(self.written)
    }
}

impl Drop for S3Fill {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (driver, digest, lease) = (self.driver.clone(), self.digest.clone(), self.lease.take());
        // Chunks of a failed fetch may hold wrong bytes: remove them before the lease goes, so the
        // next fetcher's followers never read them.
        rt.spawn(async move {
            if let Err(e) = driver.clear_fill(&digest).await {
                tracing::warn!(digest = %digest, error = %e, "cannot remove a failed fill's chunks");
            }
            if let Some(lease) = lease {
                lease.release().await;
            }
        });
    }
}
