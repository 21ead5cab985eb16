//! Registry storage: blobs, uploads, manifests, tags, repositories and referrers, on Distribution's
//! layout (see [`layout`]), in a filesystem or an S3 bucket.
//!
//! [`Storage`] is the facade callers use: they speak in registry terms (a repository, a digest, a
//! tag, an upload id) and never see a path or a key. Below it, two sibling drivers implement the same
//! operations: `fs` (a directory tree, with the durability rules of ARCHITECTURE.md) and [`s3`] (a
//! bucket). The facade holds what both share (the manifest cache, the set of blobs this node verified,
//! the one-writer locks of uploads, the timeout, and the bounded blocking pool with the mount guard
//! that the filesystem driver does all its I/O through: see [`pool`]) and dispatches each operation
//! once, in one `match` over [`Driver`] (see `driver` for why an enum). Storage knows nothing of
//! HTTP; request bodies arrive as streams of bytes.

pub mod blobs;
pub mod census;
mod driver;
pub mod fill;
mod fs;
mod heartbeat;
pub mod inventory;
pub mod layout;
pub mod manifests;
mod pool;
pub mod repos;
pub mod s3;
pub mod summary;
pub mod uploads;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::registry::{Digest, Reference, RepoName};
use driver::Driver;
use layout::Layout;
use pool::{Pool, bounded};

pub use blobs::{BlobStream, ReadSize};
pub use driver::{FillLease, Held};
pub use fs::free_bytes;
pub use uploads::{ChunkSpan, UploadStatus};

/// Why a storage operation failed; the HTTP edge turns each into one OCI error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob unknown to this repository")]
    BlobUnknown,
    #[error("upload unknown: it was completed, cancelled or never started")]
    UploadUnknown,
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("repository name not known to this registry")]
    NameUnknown,
    #[error("chunk does not start at the upload's current offset {0}")]
    RangeMismatch(u64),
    /// A chunk that did not hold the bytes its range declared; nothing of it was acknowledged.
    #[error("{detail}; nothing of it was stored, the upload stays at offset {offset}")]
    ChunkLength { detail: String, offset: u64 },
    #[error("content has digest {computed}, not the {expected} it was sent as")]
    DigestMismatch { expected: Digest, computed: Digest },
    #[error("request body ended early: {0}")]
    Body(io::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Unavailable(String),
}

impl StorageError {
    /// The OS error behind an I/O failure, to tell a full disk or a lost mount from other faults.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            StorageError::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// For byte streams, whose items are `io::Result`: an I/O failure stays itself, anything else
/// is carried as its message.
impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        match e {
            StorageError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Checks that the bytes a fill hashed are the blob it fetched (either driver's fill).
pub(crate) fn verify_fill(sha: &Sha256, expected: &Digest) -> Result<()> {
    let computed = Digest::from_sha256_output(&sha.clone().finalize());
    if &computed != expected {
        return Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            computed,
        });
    }
    Ok(())
}

struct Inner {
    /// The filesystem under a root, or a bucket: every operation goes to it, once.
    driver: Driver,
    /// Where everything either driver stores is named.
    layout: Layout,
    /// The bounded, guarded blocking pool (lent to the filesystem driver) and the timeout.
    pool: Arc<Pool>,
    /// One writer per upload on this node at a time; an entry lives only while a request holds
    /// or awaits it.
    upload_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    manifests: Arc<Manifests>,
    /// Blobs whose content this node has checked against their digest while serving them.
    verified: Mutex<HashSet<Digest>>,
    /// Blob sizes, manifest facts and the census the web UI's summaries share (see [`summary`]).
    summary: summary::SummaryState,
    /// The last census of the summaries' unique sizes (see [`census`]).
    census: census::CensusState,
}

/// Where the storage is, as the daemon hands it over (`storage.driver` and its keys, resolved).
#[derive(Debug, Clone)]
pub enum Location {
    /// The filesystem under this root.
    Filesystem(std::path::PathBuf),
    /// An S3 bucket, under a key prefix ("" for none).
    S3 {
        client: s3::S3Settings,
        prefix: String,
    },
}

/// What opening the storage needs: where it is, and the bound on each operation.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub location: Location,
    /// Bound on every storage call (`storage.operation_timeout_secs`).
    pub timeout: Duration,
}

/// Registry storage over one driver. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl Storage {
    /// A storage root. Nothing is written until a request (or `check`) needs it, so a root on a
    /// missing mount stays untouched while the mount guard says no.
    pub fn open(root: impl AsRef<Path>) -> Result<Storage> {
        Storage::open_with(root, Duration::from_secs(30), 256)
    }

    /// Like `open`, with the per-call timeout and the bound on concurrent blocking calls.
    pub fn open_with(
        root: impl AsRef<Path>,
        timeout: Duration,
        max_blocking: usize,
    ) -> Result<Storage> {
        let root = root.as_ref();
        let pool = Arc::new(Pool::new(
            timeout,
            max_blocking,
            fs::FsDriver::is_local(root),
        ));
        let driver = Arc::new(fs::FsDriver::new(root, pool.clone()));
        Ok(Storage::with_driver(
            driver.layout().clone(),
            pool,
            Driver::Fs(driver),
        ))
    }

    fn with_driver(layout: Layout, pool: Arc<Pool>, driver: Driver) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                driver,
                layout,
                pool,
                upload_locks: Mutex::new(HashMap::new()),
                manifests: Arc::new(Manifests::default()),
                verified: Mutex::new(HashSet::new()),
                summary: summary::SummaryState::default(),
                census: census::CensusState::default(),
            }),
        }
    }

    /// Storage in an S3 bucket (`prefix` is the key prefix, "" for none), with the per-call bound.
    pub fn open_s3(settings: &s3::S3Settings, prefix: &str, timeout: Duration) -> Result<Storage> {
        let driver = s3::S3Driver::new(settings, prefix).map_err(StorageError::Unavailable)?;
        // Nothing runs on the blocking pool or reads the filesystem's caches for a bucket.
        let pool = Arc::new(Pool::new(timeout, 1, false));
        Ok(Storage::with_driver(
            driver.layout().clone(),
            pool,
            Driver::S3(Arc::new(driver)),
        ))
    }

    /// The storage `settings` name: a filesystem root, or an S3 bucket. `max_blocking` bounds the
    /// blocking calls of a filesystem at once.
    pub fn from_settings(
        settings: &StorageSettings,
        max_blocking: usize,
    ) -> std::result::Result<Storage, String> {
        let timeout = settings.timeout;
        match &settings.location {
            Location::S3 { client, prefix } => {
                Storage::open_s3(client, prefix, timeout).map_err(|e| e.to_string())
            }
            Location::Filesystem(root) => Storage::open_with(root, timeout, max_blocking)
                .map_err(|e| format!("storage root {}: {e}", root.display())),
        }
    }

    /// The driver every operation is sent to (see [`Driver`]).
    fn driver(&self) -> &Driver {
        &self.inner.driver
    }

    /// "Now" by the clock that stamps what the storage holds: this node's for a filesystem it
    /// writes; for a bucket, the time the store gives an object written now (its clock may differ
    /// from the node's, and it is the one the times of links and blobs come from).
    pub async fn clock(&self) -> Result<std::time::SystemTime> {
        match self.driver() {
            Driver::Fs(fs) => Ok(fs.clock()),
            Driver::S3(s3) => bounded(self.timeout(), s3.clock()).await,
        }
    }

    /// Bytes free for new data, for the `storage.min_free_bytes` floor; `None` for a bucket,
    /// which has no such floor to watch.
    pub async fn free_space(&self) -> Result<Option<u64>> {
        match self.driver() {
            Driver::Fs(fs) => fs.free_space().await.map(Some),
            Driver::S3(_) => Ok(None),
        }
    }

    /// Checks `guard` before every storage call, on the thread that makes it, so nothing is read
    /// or written under a mount point whose volume is gone. Call before cloning the storage.
    pub fn with_guard(mut self, guard: crate::node::mount::MountGuard) -> Storage {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.pool.set_guard(guard),
            None => tracing::error!("storage guard set after the storage was shared; not applied"),
        }
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// How long one storage call may take (`storage.operation_timeout_secs`).
    pub fn timeout(&self) -> Duration {
        self.inner.pool.timeout()
    }

    /// A cheap end-to-end probe that the storage root is usable: a durable write and a read back.
    pub async fn check(&self) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.check().await,
            Driver::S3(s3) => bounded(self.timeout(), s3.check()).await,
        }
    }

    /// Resolves a tag or digest in `name` and returns the manifest, in one storage round trip: the
    /// tag's link and the revision link are read from storage (they change, possibly on another
    /// node); the bytes come from the cache when this node has seen them.
    pub async fn resolve_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>)> {
        let cache = &self.inner.manifests;
        match self.driver() {
            Driver::Fs(fs) => fs.resolve_manifest(name, reference, cache).await,
            Driver::S3(s3) => s3.resolve_manifest(name, reference, cache).await,
        }
    }
}

/// A manifest's bytes and the media type it is served with. Content-addressed, so a cached copy is
/// never stale; whether the repository still holds it is checked on storage every time.
pub struct CachedManifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
}

/// Manifest bytes by digest, bounded in total size (cleared when full: simple and bounded). Shared
/// by both drivers' `resolve_manifest`: content-addressed, so where the bytes came from is moot.
#[derive(Default)]
pub struct Manifests {
    cache: Mutex<ManifestCache>,
}

#[derive(Default)]
struct ManifestCache {
    entries: HashMap<Digest, Arc<CachedManifest>>,
    bytes: usize,
}

const MANIFEST_CACHE_BYTES: usize = 32 << 20;

impl Manifests {
    fn get(&self, digest: &Digest) -> Option<Arc<CachedManifest>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(digest)
            .cloned()
    }

    /// Keeps `m` under `digest`, emptying the cache first when it would outgrow its bound.
    fn insert(&self, digest: Digest, m: Arc<CachedManifest>) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.bytes + m.bytes.len() > MANIFEST_CACHE_BYTES {
            c.entries.clear();
            c.bytes = 0;
        }
        c.bytes += m.bytes.len();
        c.entries.insert(digest, m);
    }
}
