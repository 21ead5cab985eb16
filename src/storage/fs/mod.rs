//! The filesystem storage driver: the registry operations of [`Storage`](super::Storage) on a
//! directory tree in Distribution's layout (see [`layout`](super::layout)), with the durability
//! rules of ARCHITECTURE.md (see [`atomic`]).
//!
//! Every file operation here runs through the [`Pool`] the facade lends this driver, which checks
//! the mount guard first: nothing reaches the disk past the guard. Small hot reads may be answered
//! from the kernel's caches on the async threads ([`cached`]), only where the pool allows it (a local
//! root without a mount guard).
//!
//! Blobs ([`blobs`]), manifests and tags ([`manifests`]), listings ([`repos`], with the cached
//! directory trees of [`catalog`] and [`listing`]), uploads ([`uploads`]), cache fills ([`fill`]),
//! what maintenance passes read and remove ([`lifecycle`]) and the nodes' heartbeats (`heartbeat`).

pub mod atomic;
mod blobs;
mod cached;
mod catalog;
mod fill;
mod heartbeat;
mod lifecycle;
mod listing;
mod manifests;
mod repos;
mod summary;
mod uploads;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use uuid::Uuid;

use super::layout::Layout;
use super::pool::Pool;
use super::{CachedManifest, Manifests, Result, StorageError};
use crate::registry::{Digest, Reference, RepoName};

pub use fill::FileFill;

/// The filesystem driver of one storage root. Shared (`Arc`) by the facade and the streams and
/// fills it hands out.
pub struct FsDriver {
    layout: Layout,
    /// The facade's bounded, guarded pool: the only way this driver touches the disk.
    pool: Arc<Pool>,
    /// Hash state of uploads in progress on this node, so a chunk does not rehash what came before.
    /// Authoritative state is on storage (the hashstates files); this is only a cache, bounded.
    cursors: Mutex<uploads::Cursors>,
    /// Tag lists, reused while their directories are unchanged.
    listings: Mutex<listing::Listings>,
    /// The catalog's cached directory tree; taken out while a walk uses it.
    catalog: Mutex<Option<catalog::Dir>>,
    /// Repositories' facts for the web UI, reused while their directories are unchanged.
    summaries: Mutex<summary::Summaries>,
    /// The `.meta` directory of the GlusterFS mount holding the root (`None`: not on GlusterFS),
    /// found by the first check that reached the storage: later checks read the client's brick
    /// connections there, and a root elsewhere costs nothing more.
    gluster_meta: OnceLock<Option<PathBuf>>,
    /// Whether the new-directory lock files exist (made by the first check, see `check`).
    dir_locks_made: AtomicBool,
}

impl FsDriver {
    pub fn new(root: &Path, pool: Arc<Pool>) -> FsDriver {
        FsDriver {
            layout: Layout::new(root),
            pool,
            cursors: Mutex::new(uploads::Cursors::default()),
            listings: Mutex::new(listing::Listings::default()),
            catalog: Mutex::new(None),
            summaries: Mutex::new(summary::Summaries::default()),
            gluster_meta: OnceLock::new(),
            dir_locks_made: AtomicBool::new(false),
        }
    }

    /// Whether `root` is on a local filesystem, where cached reads on the async threads are safe.
    pub fn is_local(root: &Path) -> bool {
        cached::is_local(root)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn catalog_tree(&self) -> std::sync::MutexGuard<'_, Option<catalog::Dir>> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, listing::Listings> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// "Now" by this node's clock: the one that stamps what it writes here.
    pub fn clock(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }

    /// A cheap end-to-end probe that the storage root is usable: on GlusterFS, that this node's
    /// client reaches a quorum of the bricks (a node cut off from most of them may still write, to
    /// copies the volume will not keep); then a durable write and a read back.
    pub async fn check(self: &Arc<Self>) -> Result<()> {
        let me = self.clone();
        self.pool
            .blocking(move || {
                let layout = me.layout();
                if !me.pool.is_guarded() {
                    me.pool.set_cached_reads(cached::is_local(layout.root()));
                }
                let meta = me
                    .gluster_meta
                    .get_or_init(|| crate::node::gluster::meta_dir(layout.root()));
                if let Some(meta) = meta {
                    crate::node::gluster::quorum(meta).map_err(StorageError::Unavailable)?;
                }
                // A probe of this check's own: nodes sharing the storage check at the same moments.
                // It lives in the root itself: nodes that start together and each create a shared
                // subdirectory at the same instant can leave GlusterFS with a GFID mismatch on it
                // (EIO on that directory for good), which took a whole node out at start.
                let token = Uuid::new_v4().simple().to_string();
                let probe = layout.probe(&token);
                atomic::write_atomic(layout, &probe, token.as_bytes())?;
                let back = std::fs::read(&probe);
                let _ = std::fs::remove_file(&probe);
                if back? != token.as_bytes() {
                    return Err(
                        io::Error::other("storage read back different bytes than written").into(),
                    );
                }
                remove_stale_probes(layout);
                // Made while every node sees the same bricks (a node's first check, at its start),
                // not by the first push that needs one: a lock file two partitioned nodes both
                // created would be in split-brain itself.
                if !me.dir_locks_made.load(Ordering::Relaxed) {
                    for lock in layout.dir_locks() {
                        atomic::open_lock_file(&lock)?;
                    }
                    me.dir_locks_made.store(true, Ordering::Relaxed);
                }
                Ok(())
            })
            .await
    }

    /// Bytes available to unprivileged writers on the filesystem holding the root, through the
    /// guard like every call (with the mount gone, the disk under the mount point is not ours).
    /// Not queued behind the pool's slots: a busy registry is when the disk fills fastest, and
    /// this check must still answer then. Bounded by the storage timeout.
    pub async fn free_space(&self) -> Result<u64> {
        let root = self.layout.root().to_path_buf();
        let limit = self.pool.timeout();
        super::pool::bounded(limit, self.pool.unbounded(move || Ok(free_bytes(&root)?))).await
    }

    /// The token key's bytes, shared by every node on this storage: read, or made from `fresh`
    /// when no node has yet. Creation publishes with `link`, which fails when the file exists, so
    /// two nodes starting at once agree on one key. Through the guard, as every storage call: with
    /// the shared mount missing, a key made here would land on the local disk under the mount
    /// point and sign for this node alone.
    pub async fn token_key(&self, fresh: Vec<u8>) -> Result<Vec<u8>> {
        let l = self.layout.clone();
        let temp = self.layout.token_key_temp(&Uuid::new_v4());
        self.pool
            .blocking(move || Ok(load_or_create(&l, &temp, &fresh)?))
            .await
    }

    /// Resolves a tag or digest in `name` and returns the manifest, in one storage round trip: the
    /// tag's link and the revision link are read from storage (they change, possibly on another
    /// node); the bytes come from `cache` when this node has seen them.
    pub async fn resolve_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        cache: &Arc<Manifests>,
    ) -> Result<(Digest, Arc<CachedManifest>)> {
        let (l, cache) = (self.layout.clone(), cache.clone());
        let (name, reference) = (name.clone(), reference.clone());
        self.pool
            .cached_or_blocking(move |from_cache| {
                let digest = match &reference {
                    Reference::Digest(d) => d.clone(),
                    Reference::Tag(t) => read_link_as(&l.tag_current_link(&name, t), from_cache)?
                        .ok_or(StorageError::ManifestUnknown)?,
                };
                if read_link_as(&l.revision_link(&name, &digest), from_cache)?.as_ref()
                    != Some(&digest)
                {
                    return Err(StorageError::ManifestUnknown);
                }
                if let Some(m) = cache.get(&digest) {
                    return Ok((digest, m));
                }
                if from_cache {
                    // Reading a manifest's bytes is left to a blocking thread; they are cached after.
                    return Err(cached::would_block().into());
                }
                let bytes = match atomic::read_retrying(&l.blob_data(&digest)) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(StorageError::ManifestUnknown);
                    }
                    Err(e) => return Err(e.into()),
                };
                let m = Arc::new(CachedManifest {
                    media_type: crate::registry::manifest::detect_media_type(&bytes),
                    bytes: bytes::Bytes::from(bytes),
                });
                cache.insert(digest.clone(), m.clone());
                Ok((digest, m))
            })
            .await
    }
}

/// Reads the key of `layout`, or creates it from `fresh` (through `temp`, a file beside it).
fn load_or_create(layout: &Layout, temp: &Path, fresh: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = &layout.token_key();
    if let Some(k) = read_key(path, fresh.len())? {
        return Ok(k);
    }
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("token key path has no parent"))?;
    atomic::make_dirs(layout, dir)?;
    let made = (|| {
        // The key signs every login: readable by the daemon's user only, whatever the umask.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(temp)?;
        f.write_all(fresh)?;
        f.sync_all()?;
        match std::fs::hard_link(temp, path) {
            Ok(()) => atomic::fsync_dir(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(temp);
    made?;
    read_key(path, fresh.len())?
        .ok_or_else(|| io::Error::other("token key vanished after creation"))
}

/// The key at `path`, which must be `len` bytes long; `None` when there is none yet.
fn read_key(path: &Path, len: usize) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) if b.len() == len => Ok(Some(b)),
        Ok(b) => Err(io::Error::other(format!(
            "{} holds {} bytes, not a {len}-byte key; remove it and restart registryd on every node",
            path.display(),
            b.len()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes probes left by a check that never finished (a crash between write and remove).
fn remove_stale_probes(layout: &Layout) {
    let dir = layout.probe_dir();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if stale && Layout::is_probe(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reads a link file and parses the digest it holds; `None` when the link does not exist.
fn read_link(path: &Path) -> Result<Option<Digest>> {
    parse_link(path, atomic::read_retrying(path))
}

/// [`read_link`] from the kernel's caches alone (see [`cached`]); `WouldBlock` otherwise.
fn read_link_cached(path: &Path) -> Result<Option<Digest>> {
    parse_link(path, cached::read_small(path, 4096))
}

/// `read_link` or `read_link_cached`, as a [`Pool::cached_or_blocking`] call asks.
fn read_link_as(path: &Path, from_cache: bool) -> Result<Option<Digest>> {
    if from_cache {
        read_link_cached(path)
    } else {
        read_link(path)
    }
}

fn parse_link(path: &Path, read: io::Result<Vec<u8>>) -> Result<Option<Digest>> {
    match read {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let d = text.trim().parse::<Digest>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt link {}: {e}", path.display()),
                )
            })?;
            Ok(Some(d))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The entries of `dir`; `None` when it does not exist (a directory nothing was written to yet, or
/// one another node just removed).
fn read_dir_if_exists(dir: &Path) -> io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The entries of a `<dir>/sha256/<hex>/link` tree: each digest whose name parses, with the path
/// of its link (which may be gone by the time it is read: another node can remove it).
fn sha256_link_entries(dir: &Path) -> Result<Vec<(Digest, std::path::PathBuf)>> {
    let Some(entries) = read_dir_if_exists(&Layout::sha256_links(dir))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let Some(d) = e.file_name().to_str().and_then(Digest::sha256_hex) else {
            continue;
        };
        out.push((d, Layout::link_in(&e.path())));
    }
    Ok(out)
}

fn exists(path: &Path) -> Result<bool> {
    match atomic::retry_stale(|| std::fs::symlink_metadata(path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let p = l.token_key();
        let a = load_or_create(&l, &l.token_key_temp(&Uuid::new_v4()), &[1; 32]).unwrap();
        let b = load_or_create(&l, &l.token_key_temp(&Uuid::new_v4()), &[2; 32]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, [1; 32]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the key is private to the daemon's user"
        );
        std::fs::write(&p, b"short").unwrap();
        assert!(load_or_create(&l, &l.token_key_temp(&Uuid::new_v4()), &[3; 32]).is_err());
    }
}
