//! Cache fills on the filesystem: a blob fetched from an upstream registry is written once, by one
//! node, while any number of clients on any node read it as it arrives.
//!
//! Beside Distribution's tree, under `registryd/proxy/fills/`, each blob being fetched has:
//! - `<hex>.lock`: held with `flock` by the one fetcher (exclusive across GlusterFS mounts and
//!   released by the kernel when the holder dies, so a crashed fetcher never blocks the next one);
//! - `<hex>.partial`: the bytes so far, created before the size is announced;
//! - `<hex>.size`: the blob's size, written once the upstream answered with one. An upstream that
//!   sends a blob without a size (a chunked answer) gets none: its bytes still go to the partial
//!   file as they arrive, and readers wait until the blob is stored, then stream it from there;
//! - `<hex>.synced`: how many bytes of the partial file the fetcher has fsynced. Readers on other
//!   nodes read no further: on GlusterFS a file written through another client can show its new
//!   size before every earlier write has reached the bricks (write-behind flushes out of order), so
//!   reading up to the size alone returned holes as zeros and failed the digest.
//!
//! The fetcher verifies the digest, then renames the partial file onto the blob's data path. A
//! reader that opened the partial file keeps reading the same inode, so the rename never cuts it off.
//! Readers hash what they stream and fail the last chunk on a mismatch, so a client never receives
//! a complete body with the wrong content.
//!
//! Stamps (a tag's "validated at", a manifest's "pulled at") are the mtimes of one small file per
//! entry, where `Layout::stamp` puts them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::blobs::{CHUNK, data_size};
use super::{FsDriver, atomic, exists, read_link};
use crate::registry::{Digest, RepoName};
use crate::storage::blobs::BlobStream;
use crate::storage::layout::link_content;
use crate::storage::{Result, StorageError, verify_fill};

/// The files of one blob's fill.
#[derive(Clone)]
struct FillPaths {
    lock: PathBuf,
    partial: PathBuf,
    size: PathBuf,
    synced: PathBuf,
    size_tmp: PathBuf,
    synced_tmp: PathBuf,
}

/// The files of a fill besides its lock, by extension (see [`Layout::fill_file`]).
///
/// [`Layout::fill_file`]: crate::storage::layout::Layout::fill_file
const FILL_FILES: [&str; 5] = ["partial", "size", "synced", "size.tmp", "synced.tmp"];

/// Bytes the fetcher writes between two fsyncs that let readers on other nodes go further.
const SYNC_EVERY: u64 = 8 << 20;

/// Reads the `.synced` offset (0 when absent or half-written).
fn synced_offset(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes the `.synced` offset by rename (through `.synced.tmp`), so readers see the old value
/// or the new one.
fn write_synced(p: &FillPaths, offset: u64) -> io::Result<()> {
    std::fs::write(&p.synced_tmp, offset.to_string())?;
    std::fs::rename(&p.synced_tmp, &p.synced)
}

impl FsDriver {
    fn fill_paths(&self, digest: &Digest) -> FillPaths {
        let (l, hex) = (&self.layout, digest.hex());
        FillPaths {
            lock: l.fill_file(hex, "lock"),
            partial: l.fill_file(hex, "partial"),
            size: l.fill_file(hex, "size"),
            synced: l.fill_file(hex, "synced"),
            size_tmp: l.fill_file(hex, "size.tmp"),
            synced_tmp: l.fill_file(hex, "synced.tmp"),
        }
    }

    /// Takes the fetch of `digest` if no one (on any node) holds it. `None`: another fetch is
    /// running, or the blob is already stored.
    pub async fn try_lead_fill(self: &Arc<Self>, digest: &Digest) -> Result<Option<FileFill>> {
        let paths = self.fill_paths(digest);
        let data = self.layout.blob_data(digest);
        let p = paths.clone();
        let lock = self
            .pool
            .blocking(move || {
                let Some(f) = atomic::try_lock_file(&p.lock)? else {
                    return Ok(None);
                };
                // Whoever held it before may have finished, or died: start from nothing.
                if exists(&data)? {
                    return Ok(None);
                }
                for stale in [&p.size, &p.partial, &p.synced] {
                    match std::fs::remove_file(stale) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                Ok(Some(f))
            })
            .await?;
        Ok(lock.map(|lock| FileFill {
            driver: self.clone(),
            digest: digest.clone(),
            paths,
            lock: Some(lock),
            file: None,
            sha: Sha256::new(),
            written: 0,
            synced: 0,
            done: false,
        }))
    }

    /// Streams `digest` as it is being fetched (by this node or another), or from storage once it
    /// is stored. Waits up to `start_wait` for the fetch to announce the size; a stream fails when
    /// the fetcher stops making progress for `stall` and no longer holds the fill. `None`: no
    /// fetch is running (it ended without storing the blob); the caller may start one.
    pub async fn follow_fill(
        self: &Arc<Self>,
        digest: &Digest,
        start_wait: Duration,
        stall: Duration,
    ) -> Result<Option<(u64, BlobStream)>> {
        let paths = self.fill_paths(digest);
        let data = self.layout.blob_data(digest);
        /// What one look at the fill found.
        enum Seen {
            Stored(u64),
            Growing(u64, File),
            /// No fetch holds the fill and the blob is not stored: it ended without it.
            Ended,
            NotYet,
        }
        let began = Instant::now();
        let mut rounds = 0u32;
        loop {
            let (p, d) = (paths.clone(), data.clone());
            rounds += 1;
            let look_at_lock = rounds.is_multiple_of(10);
            let found = self
                .pool
                .blocking(move || {
                    if let Some(size) = data_size(&d)? {
                        return Ok(Seen::Stored(size));
                    }
                    // Ended without a blob: the fetch failed, or its holder died.
                    if look_at_lock && !fill_held(&p.lock)? && data_size(&d)?.is_none() {
                        return Ok(Seen::Ended);
                    }
                    let size = match std::fs::read_to_string(&p.size) {
                        Ok(s) => s.trim().parse::<u64>().ok(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e.into()),
                    };
                    let Some(size) = size else {
                        return Ok(Seen::NotYet);
                    };
                    match File::open(&p.partial) {
                        Ok(f) => Ok(Seen::Growing(size, f)),
                        // Published (or abandoned) between the two reads: look again.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Seen::NotYet),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
            match found {
                Seen::Ended => return Ok(None),
                Seen::Stored(size) => {
                    return Ok(Some((size, self.open_blob(digest, 0, size, None).await?)));
                }
                Seen::Growing(size, file) => {
                    let stream = self.tail(file, size, digest.clone(), paths.clone(), stall);
                    return Ok(Some((size, stream)));
                }
                Seen::NotYet if began.elapsed() > start_wait => {
                    return Err(StorageError::Unavailable(format!(
                        "the fetch of {digest} from upstream did not start within {}s",
                        start_wait.as_secs()
                    )));
                }
                Seen::NotYet => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Reads `file` (a fill in progress) up to `size` bytes as they are written.
    fn tail(
        self: &Arc<Self>,
        file: File,
        size: u64,
        digest: Digest,
        paths: FillPaths,
        stall: Duration,
    ) -> BlobStream {
        struct Tail {
            driver: Arc<FsDriver>,
            file: std::sync::Arc<File>,
            pos: u64,
            /// How far the fetcher has fsynced: safe to read up to here.
            limit: u64,
            sha: Sha256,
            last_progress: Instant,
        }
        let state = Tail {
            driver: self.clone(),
            file: std::sync::Arc::new(file),
            pos: 0,
            limit: 0,
            sha: Sha256::new(),
            last_progress: Instant::now(),
        };
        let data = self.layout.blob_data(&digest);
        let stream = futures_util::stream::try_unfold(state, move |mut t| {
            let (digest, paths, data) = (digest.clone(), paths.clone(), data.clone());
            async move {
                if t.pos == size {
                    return Ok(None);
                }
                loop {
                    if t.pos >= t.limit {
                        let (synced, data) = (paths.synced.clone(), data.clone());
                        let limit = t
                            .driver
                            .pool
                            .blocking(move || {
                                // Published: verified and synced whole.
                                if exists(&data)? {
                                    return Ok(size);
                                }
                                Ok(synced_offset(&synced).min(size))
                            })
                            .await
                            .map_err(io::Error::from)?;
                        t.limit = t.limit.max(limit);
                    }
                    let (f, pos) = (t.file.clone(), t.pos);
                    let want = (t.limit.saturating_sub(pos)).min(CHUNK) as usize;
                    let chunk = t
                        .driver
                        .pool
                        .blocking(move || {
                            let mut buf = vec![0u8; want];
                            if want == 0 {
                                return Ok(buf);
                            }
                            let n = f.read_at(&mut buf, pos)?;
                            buf.truncate(n);
                            Ok(buf)
                        })
                        .await
                        .map_err(io::Error::from)?;
                    if !chunk.is_empty() {
                        t.pos += chunk.len() as u64;
                        t.sha.update(&chunk);
                        t.last_progress = Instant::now();
                        if t.pos == size {
                            let got = Digest::from_sha256_output(&t.sha.clone().finalize());
                            if got != digest {
                                return Err(io::Error::other(format!(
                                    "upstream sent content with digest {got}, not {digest}"
                                )));
                            }
                        }
                        return Ok(Some((Bytes::from(chunk), t)));
                    }
                    if t.last_progress.elapsed() > stall {
                        let lock = paths.lock.clone();
                        let alive = t.driver.pool.blocking(move || fill_held(&lock)).await;
                        if !matches!(alive, Ok(true)) {
                            return Err(io::Error::other(
                                "the upstream fetch this download followed was interrupted; retry",
                            ));
                        }
                        t.last_progress = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Box::pin(stream)
    }

    /// Removes what fetches that died left behind (their holder gone, nothing written since
    /// `older_than`); returns how many fills that was. With `dry_run`, only counts them.
    pub async fn remove_abandoned_fills(
        &self,
        older_than: SystemTime,
        dry_run: bool,
    ) -> Result<usize> {
        let l = self.layout.clone();
        let dir = l.fills_dir();
        self.pool
            .blocking(move || {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(e.into()),
                };
                let mut stems = std::collections::BTreeSet::new();
                for entry in entries {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if let Some((stem, ext)) = name.split_once('.')
                        && ext != "lock"
                    {
                        stems.insert(stem.to_string());
                    }
                }
                let mut removed = 0;
                for stem in stems {
                    let files: Vec<PathBuf> = FILL_FILES
                        .iter()
                        .map(|ext| l.fill_file(&stem, ext))
                        .collect();
                    let newest = files
                        .iter()
                        .filter_map(|f| std::fs::metadata(f).ok()?.modified().ok())
                        .max();
                    if newest.is_none_or(|t| t >= older_than) {
                        continue;
                    }
                    // Held: the fetch is alive, only slow. (The lock file itself stays: removing
                    // it could let two fetchers lock two different files of one name.)
                    let Some(lock) = atomic::try_lock_file(&l.fill_file(&stem, "lock"))? else {
                        continue;
                    };
                    removed += 1;
                    if !dry_run {
                        for f in &files {
                            match std::fs::remove_file(f) {
                                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                                    return Err(e.into());
                                }
                                _ => {}
                            }
                        }
                    }
                    drop(lock);
                }
                Ok(removed)
            })
            .await
    }

    /// The time a stamp holds; `None` when it was never set.
    pub async fn stamp_time(&self, path: PathBuf) -> Result<Option<SystemTime>> {
        self.pool
            .blocking(move || match std::fs::metadata(&path) {
                Ok(m) => Ok(m.modified().ok()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            })
            .await
    }

    /// Sets a stamp to now. Not durable: stamps are hints that cost a little work when lost.
    pub async fn touch_stamp(&self, path: PathBuf) -> Result<()> {
        let l = self.layout.clone();
        self.pool
            .blocking(move || {
                if let Some(dir) = path.parent() {
                    atomic::make_dirs(&l, dir)?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                f.set_modified(SystemTime::now())?;
                Ok(())
            })
            .await
    }
}

/// Whether someone holds the fill lock at `lock` (a fetch is alive somewhere).
fn fill_held(lock: &std::path::Path) -> Result<bool> {
    let f = match File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    // Held when a shared lock cannot be had; any other failure counts as not held, as before.
    Ok(matches!(atomic::flock_nb(&f, libc::LOCK_SH), Ok(false)))
}

/// A fill on the filesystem: the partial file, written under the `flock` of its lock file.
pub struct FileFill {
    driver: Arc<FsDriver>,
    digest: Digest,
    paths: FillPaths,
    lock: Option<File>,
    file: Option<std::sync::Arc<File>>,
    sha: Sha256,
    written: u64,
    /// Bytes fsynced and announced in `.synced`.
    synced: u64,
    done: bool,
}

impl FileFill {
    /// Opens the partial file and announces the blob's size, when known.
    pub async fn begin(&mut self, size: Option<u64>) -> Result<()> {
        let p = self.paths.clone();
        let file = self
            .driver
            .pool
            .blocking(move || {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .read(true)
                    .open(&p.partial)?;
                // The size file is a plain write: a reader that sees it short parses nothing and
                // looks again.
                if let Some(size) = size {
                    std::fs::write(&p.size_tmp, size.to_string())?;
                    std::fs::rename(&p.size_tmp, &p.size)?;
                }
                Ok(f)
            })
            .await?;
        self.file = Some(std::sync::Arc::new(file));
        Ok(())
    }

    /// Appends the next bytes.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let Some(file) = self.file.clone() else {
            return Err(io::Error::other("fill written before it began").into());
        };
        self.sha.update(&chunk);
        let at = self.written;
        self.written += chunk.len() as u64;
        let sync_to = (self.written - self.synced >= SYNC_EVERY).then_some(self.written);
        let paths = self.paths.clone();
        self.driver
            .pool
            .blocking(move || {
                file.write_all_at(&chunk, at)?;
                if let Some(offset) = sync_to {
                    file.sync_data()?;
                    write_synced(&paths, offset)?;
                }
                Ok(())
            })
            .await?;
        if let Some(offset) = sync_to {
            self.synced = offset;
        }
        Ok(())
    }

    /// Verifies the digest, makes the blob durable under its name, and links it into `name`.
    pub async fn finish(mut self, name: &RepoName) -> Result<u64> {
        verify_fill(&self.sha, &self.digest)?;
        let Some(file) = self.file.clone() else {
            return Err(io::Error::other("fill finished before it began").into());
        };
        let l = self.driver.layout.clone();
        let (p, d, n) = (self.paths.clone(), self.digest.clone(), name.clone());
        let size = self.written;
        self.driver
            .pool
            .blocking(move || {
                file.sync_all()?;
                write_synced(&p, size)?;
                let dest = l.blob_data(&d);
                if !exists(&dest)?
                    && let Err(e) = atomic::publish(&l, &p.partial, &dest)
                    && !exists(&dest)?
                {
                    return Err(e.into());
                }
                let link = l.layer_link(&n, &d);
                if read_link(&link)?.as_ref() != Some(&d) {
                    atomic::write_atomic(&l, &link, link_content(&d).as_bytes())?;
                }
                let _ = std::fs::remove_file(&p.size);
                let _ = std::fs::remove_file(&p.partial);
                let _ = std::fs::remove_file(&p.synced);
                // Safe to remove while held: whoever locks this file (or a new one) from now on
                // finds the blob stored and fetches nothing.
                let _ = std::fs::remove_file(&p.lock);
                Ok(())
            })
            .await?;
        self.done = true;
        Ok(size)
    }
}

impl Drop for FileFill {
    fn drop(&mut self) {
        let lock = self.lock.take();
        if self.done {
            return;
        }
        // Clean up off the async threads: a hung mount must not stall one of them.
        let p = self.paths.clone();
        self.driver.pool.detached(move || {
            let _ = std::fs::remove_file(&p.size);
            let _ = std::fs::remove_file(&p.partial);
            let _ = std::fs::remove_file(&p.synced);
            drop(lock);
        });
    }
}
