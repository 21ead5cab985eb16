//! Blob reads, links and deletes on the filesystem. A blob is served from a repository only when
//! the repository links it (`_layers`), as Distribution does; the bytes themselves live once in the
//! global blob store.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::{FsDriver, atomic, cached, exists, read_link, read_link_as};
use crate::registry::{Digest, RepoName};
use crate::storage::blobs::{BlobStream, ReadSize};
use crate::storage::layout::{self, Layout};
use crate::storage::{Result, StorageError};

/// Bytes read per storage call while streaming a blob. A chunk the page cache holds is read on the
/// async thread (see `read_cached`); any other is one hop to a blocking thread. Up to two or three
/// are alive per download (queued for the client, being sent, being read), so this trades calls
/// per download against memory per concurrent pull (64 KiB measured worse in both).
pub(super) const CHUNK: u64 = 256 * 1024;

/// Chunk buffers kept for reuse once the client has been sent their bytes. Reused buffers cost no
/// page faults or zeroing, and memory stays at what concurrent downloads hold: freed chunk buffers
/// would otherwise stay in the allocator's per-thread arenas.
const POOLED_CHUNKS: usize = 16;

static CHUNK_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A chunk buffer that goes back to the pool when the response is done with it.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        // `len` is what was read into `buf`, so never past its end.
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == CHUNK as usize
            && let Ok(mut pool) = CHUNK_POOL.lock()
            && pool.len() < POOLED_CHUNKS
        {
            pool.push(buf);
        }
    }
}

/// A buffer for a read of `want` bytes: a pooled chunk buffer, or for a read much smaller than a
/// chunk one of its own size (a small read into a chunk buffer would pin the whole chunk for as
/// long as the client takes to accept those few bytes).
fn buffer_for(want: usize) -> Vec<u8> {
    if want < CHUNK as usize / 2 {
        return vec![0; want];
    }
    let pooled = CHUNK_POOL.lock().ok().and_then(|mut p| p.pop());
    pooled.unwrap_or_else(|| vec![0; CHUNK as usize])
}

/// Reads up to `want` (≤ CHUNK) bytes of `file` at `pos` only as far as the page cache already
/// holds them (`preadv2` with `RWF_NOWAIT`), so the caller can do it on an async thread instead of
/// paying a hop to a blocking thread per chunk. Only for storage that allows cached reads (a local
/// filesystem, no mount guard: see `cached`). `None` when nothing was cached, or the filesystem
/// cannot tell without waiting: then the caller reads on a blocking thread, under the storage timeout.
fn read_cached(file: &std::fs::File, pos: u64, want: usize) -> Option<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = buffer_for(want);
    let mut got = 0;
    while got < want {
        // A buffer shorter than `want` leaves the rest to the blocking read, which reports it.
        let Some(rest) = buf.get_mut(got..want) else {
            break;
        };
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let offset = libc::off_t::try_from(pos + got as u64).ok()?;
        // SAFETY: the iovec points into `buf`, which outlives the call and holds `want` bytes.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        if n <= 0 {
            // EAGAIN (not cached), EOPNOTSUPP (the filesystem cannot say), or end of file: the
            // blocking read takes over, and reports a short file as an error.
            break;
        }
        got += n as usize;
    }
    let chunk = PooledChunk { buf, len: got };
    (got > 0).then(|| Bytes::from_owner(chunk))
}

/// Reads the next `want` (≤ CHUNK) bytes of `file` at `pos` into a pooled buffer.
fn read_chunk(file: &std::fs::File, pos: u64, want: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = buffer_for(want);
    let into = buf.get_mut(..want).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a blob read of {want} bytes is larger than a chunk"),
        )
    })?;
    file.read_exact_at(into, pos).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob data is shorter than its size on storage said",
            )
        } else {
            e
        }
    })?;
    Ok(Bytes::from_owner(PooledChunk { buf, len: want }))
}

impl FsDriver {
    /// Size of `digest` if `name` links it (as a layer, or as a manifest revision).
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let l = self.layout.clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.pool
            .cached_or_blocking(move |from_cache| {
                let linked = read_link_as(&l.layer_link(&name, &digest), from_cache)?.as_ref()
                    == Some(&digest)
                    || read_link_as(&l.revision_link(&name, &digest), from_cache)?.as_ref()
                        == Some(&digest);
                if !linked {
                    return Ok(None);
                }
                data_size_as(&l.blob_data(&digest), from_cache)
            })
            .await
    }

    /// Size of `digest` anywhere in the registry, regardless of repository links.
    pub async fn blob_size_global(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.layout.blob_data(digest);
        self.pool.blocking(move || data_size(&path)).await
    }

    /// Streams `len` bytes of a blob from `start`, each read taking what `size` says (at most
    /// [`CHUNK`]), each under the storage timeout.
    pub async fn open_blob(
        self: &Arc<Self>,
        digest: &Digest,
        start: u64,
        len: u64,
        size: Option<ReadSize>,
    ) -> Result<BlobStream> {
        let path = self.layout.blob_data(digest);
        let file = self
            .pool
            .cached_or_blocking(move |from_cache| {
                let opened = if from_cache {
                    cached::open(&path, libc::O_RDONLY)
                } else {
                    atomic::retry_stale(|| std::fs::File::open(&path))
                };
                match opened {
                    Ok(f) => Ok(Arc::new(f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::BlobUnknown),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        let me = self.clone();
        let end = start + len;
        let chunks = futures_util::stream::try_unfold(start, move |pos| {
            let (me, file, size) = (me.clone(), file.clone(), size.clone());
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let asked = size.map_or(CHUNK, |f| f().max(1) as u64);
                let want = (end - pos).min(CHUNK).min(asked) as usize;
                let cached = if me.pool.cached_reads() {
                    read_cached(&file, pos, want)
                } else {
                    None
                };
                let chunk = match cached {
                    Some(c) => c,
                    None => me
                        .pool
                        .blocking(move || Ok(read_chunk(&file, pos, want)?))
                        .await
                        .map_err(io::Error::from)?,
                };
                let pos = pos + chunk.len() as u64;
                Ok(Some((chunk, pos)))
            }
        });
        Ok(Box::pin(chunks))
    }

    /// Links an existing blob into `name` (cross-repository mount, completed upload).
    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let l = self.layout.clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.pool
            .blocking(move || {
                let link = l.layer_link(&name, &digest);
                atomic::rewrite_link(&l, &link, &layout::link_content(&digest))?;
                Ok(())
            })
            .await
    }

    /// Whether `name` links `digest` as a layer (mount source check).
    pub async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let link = self.layout.layer_link(name, digest);
        let d = digest.clone();
        self.pool
            .blocking(move || Ok(read_link(&link)?.as_ref() == Some(&d)))
            .await
    }

    /// Removes `name`'s link to a blob. The bytes stay until garbage collection.
    pub async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let (dir, link) = (
            self.layout.layer_dir(name, digest),
            self.layout.layer_link(name, digest),
        );
        self.pool
            .blocking(move || {
                if !exists(&link)? {
                    return Err(StorageError::BlobUnknown);
                }
                atomic::remove_durable(&dir)?;
                Ok(())
            })
            .await
    }
}

/// Writes a small blob (a manifest) whose digest the caller computed, if not already stored.
pub(super) fn put_small_blob_sync(l: &Layout, digest: &Digest, bytes: &[u8]) -> Result<()> {
    let path = l.blob_data(digest);
    if data_size(&path)? == Some(bytes.len() as u64) {
        return Ok(());
    }
    atomic::write_atomic(l, &path, bytes)?;
    Ok(())
}

pub(super) fn data_size(path: &Path) -> Result<Option<u64>> {
    data_size_as(path, false)
}

/// [`data_size`], or from the kernel's caches alone when `from_cache` (as [`read_link_as`]).
fn data_size_as(path: &Path, from_cache: bool) -> Result<Option<u64>> {
    let size = if from_cache {
        cached::size(path)
    } else {
        atomic::retry_stale(|| std::fs::metadata(path)).map(|m| m.len())
    };
    match size {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
