//! What maintenance passes (cache eviction, garbage collection, fsck) read and remove on the
//! filesystem: a repository's contents, every blob, the removals such a pass makes, and the `flock`
//! locks that coordinate them across nodes. Reads skip entries another node removes meanwhile.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::blobs::data_size;
use super::manifests::list_tag_names;
use super::uploads::hash_prefix;
use super::{FsDriver, atomic, read_link};
use crate::registry::{Digest, RepoName};
use crate::storage::inventory::{RepoInventory, StoredBlob};
use crate::storage::{Result, StorageError};

/// The digests under a `<dir>/sha256/<hex>/link` tree whose link names them.
fn linked_digests(dir: &Path) -> Result<Vec<(Digest, SystemTime)>> {
    let mut out = Vec::new();
    for (d, link) in super::sha256_link_entries(dir)? {
        let at = match std::fs::metadata(&link) {
            Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if read_link(&link)?.as_ref() == Some(&d) {
            out.push((d, at));
        }
    }
    Ok(out)
}

impl FsDriver {
    /// Every repository holding upload sessions, whether the catalog lists it or not (a first push
    /// to a new name that stopped before its first layer was linked leaves only `_uploads`).
    pub async fn upload_repositories(&self) -> Result<Vec<RepoName>> {
        let top = self.layout.repositories();
        self.pool
            .blocking(move || {
                let mut out = Vec::new();
                let mut pending = vec![top.clone()];
                while let Some(dir) = pending.pop() {
                    let Some(entries) = super::read_dir_if_exists(&dir)? else {
                        continue;
                    };
                    for e in entries {
                        let e = e?;
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        if name == "_uploads" {
                            let repo = dir.strip_prefix(&top).ok().and_then(|p| p.to_str());
                            if let Some(r) = repo.and_then(|r| r.parse().ok()) {
                                out.push(r);
                            }
                        } else if !name.starts_with('_') && e.file_type()?.is_dir() {
                            pending.push(e.path());
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// What `name` holds.
    pub async fn inventory(&self, name: &RepoName) -> Result<RepoInventory> {
        let l = self.layout.clone();
        let name = name.clone();
        self.pool
            .blocking(move || {
                let revisions = linked_digests(&l.revisions_dir(&name))?;
                let layer_links = linked_digests(&l.layers_dir(&name))?;
                let layers = layer_links.iter().map(|(d, _)| d.clone()).collect();
                let mut tags = Vec::new();
                for t in list_tag_names(&l.tags_dir(&name))? {
                    let target = read_link(&l.tag_current_link(&name, &t)).ok().flatten();
                    tags.push((t, target));
                }
                let mut uploads = Vec::new();
                if let Some(entries) = super::read_dir_if_exists(&l.uploads_dir(&name))? {
                    for e in entries {
                        let e = e?;
                        let Some(id) = e.file_name().to_str().and_then(|s| Uuid::try_parse(s).ok())
                        else {
                            continue;
                        };
                        // The last append, else the session's start (its directory).
                        let at = std::fs::metadata(l.upload_data(&name, &id))
                            .or_else(|_| e.metadata())
                            .and_then(|m| m.modified());
                        match at {
                            Ok(at) => uploads.push((id, at)),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok(RepoInventory {
                    revisions,
                    layers,
                    layer_links,
                    tags,
                    uploads,
                })
            })
            .await
    }

    /// Every blob in the store, with its size and modification time.
    pub async fn all_blobs(&self) -> Result<Vec<StoredBlob>> {
        let l = self.layout.clone();
        self.pool
            .blocking(move || {
                let mut out = Vec::new();
                let root = l.blobs_root();
                let Some(prefixes) = super::read_dir_if_exists(&root)? else {
                    return Ok(out);
                };
                for p in prefixes {
                    let p = p?;
                    let Some(blobs) = super::read_dir_if_exists(&p.path())? else {
                        continue;
                    };
                    for b in blobs {
                        let b = b?;
                        let Some(digest) = b
                            .file_name()
                            .to_str()
                            .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
                        else {
                            continue;
                        };
                        match std::fs::metadata(l.blob_data(&digest)) {
                            Ok(m) => out.push(StoredBlob {
                                digest,
                                size: m.len(),
                                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            }),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Removes the layer link of `digest` in `name` if it was written before `before` (a link
    /// refreshed since belongs to a push in flight). Returns whether it removed it.
    pub async fn remove_layer_link_older_than(
        &self,
        name: &RepoName,
        digest: &Digest,
        before: SystemTime,
    ) -> Result<bool> {
        let (dir, link) = (
            self.layout.layer_dir(name, digest),
            self.layout.layer_link(name, digest),
        );
        self.pool
            .blocking(move || {
                let at = match std::fs::metadata(&link) {
                    Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                if at >= before {
                    return Ok(false);
                }
                Ok(atomic::remove_durable(&dir)?)
            })
            .await
    }

    /// Moves a blob whose content does not match its name out of the store, to
    /// `registryd/quarantine/<hex>`, so it is no longer served but its bytes stay for inspection.
    /// Returns whether it moved it.
    pub async fn quarantine_blob(&self, digest: &Digest) -> Result<bool> {
        let (from, to) = (
            self.layout.blob_dir(digest),
            self.layout.quarantine_dir(digest),
        );
        self.pool
            .blocking(move || {
                if !from.exists() {
                    return Ok(false);
                }
                if to.exists() {
                    // Quarantined before (and stored again since): keep the first copy.
                    atomic::remove_durable(&from)?;
                    return Ok(true);
                }
                atomic::publish(&from, &to)?;
                if let Some(parent) = from.parent() {
                    atomic::fsync_dir(parent)?;
                }
                Ok(true)
            })
            .await
    }

    /// An advisory lock named `name` on the shared storage, held until the returned file is
    /// dropped (or the holder dies); `None` when another process, on any node, holds it.
    pub async fn try_lock(&self, name: &str) -> Result<Option<File>> {
        let path = self.layout.lock_file(name);
        self.pool
            .blocking(move || Ok(atomic::try_lock_file(&path)?))
            .await
    }

    /// The sweep lock, shared, for a push about to check and link blobs (waits as long as any
    /// storage call may take).
    pub async fn push_guard(&self) -> Result<File> {
        // A sweep holds the lock for as long as it rescans and removes, which on a large shared
        // volume can outlast the operation timeout; clients wait minutes for a PUT's answer, so
        // waiting a minute beats a 503 they would not retry.
        self.sweep_lock(false, self.pool.timeout().max(Duration::from_secs(60)))
            .await
    }

    /// A cluster-wide lock shared by pushes and exclusive to the garbage collector's sweep: a push
    /// holds it shared while it checks that the blobs it references exist and links them, so a
    /// collector never removes a blob between that check and the link. Waits up to `wait`.
    pub async fn sweep_lock(&self, exclusive: bool, wait: Duration) -> Result<File> {
        let path = self.layout.lock_file("gc-sweep");
        self.pool
            .blocking(move || {
                let deadline = std::time::Instant::now() + wait;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = atomic::retry_stale(|| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                })?;
                let op = if exclusive {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                loop {
                    if atomic::flock_nb(&f, op)? {
                        return Ok(f);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(StorageError::Unavailable(
                            "a garbage collection sweep holds the storage lock; retry".into(),
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
            .await
    }

    /// Deletes a blob's data, if no repository links it as a layer or a revision (checked again
    /// here, right before the removal). Returns the bytes freed.
    pub async fn delete_blob_if_unlinked(
        &self,
        digest: &Digest,
        repos: Vec<RepoName>,
    ) -> Result<u64> {
        let l = self.layout.clone();
        let digest = digest.clone();
        self.pool
            .blocking(move || {
                for r in &repos {
                    if read_link(&l.layer_link(r, &digest))?.is_some()
                        || read_link(&l.revision_link(r, &digest))?.is_some()
                    {
                        return Ok(0);
                    }
                }
                let size = data_size(&l.blob_data(&digest))?.unwrap_or(0);
                atomic::remove_durable(&l.blob_dir(&digest))?;
                Ok(size)
            })
            .await
    }

    /// The sha256 (hex) of a stored blob's bytes, read whole; `None` when it is gone. Not bounded
    /// by the storage timeout: hashing a large blob takes as long as it takes.
    pub async fn hash_blob(&self, digest: &Digest) -> Result<Option<String>> {
        let path = self.layout.blob_data(digest);
        self.pool
            .unbounded(move || {
                use sha2::Digest as _;
                match hash_prefix::<sha2::Sha256>(&path, u64::MAX) {
                    Ok(h) => Ok(Some(hex::encode(h.finalize()))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Temp files a crash left in Distribution's tree (atomic writes name them
    /// `.<name>.tmp-<uuid>`), untouched for `older_than`; with `remove`, removed. Each comes with
    /// whether it was removed. Not bounded by the storage timeout: a walk of the whole tree takes
    /// as long as it takes.
    pub async fn orphan_temp_files(
        &self,
        older_than: Duration,
        remove: bool,
    ) -> Result<Vec<(PathBuf, bool)>> {
        let root = self.layout.distribution_root();
        self.pool
            .unbounded(move || {
                let temps = old_temp_files(&root, older_than)?;
                Ok(temps
                    .into_iter()
                    .map(|t| {
                        let removed = remove && std::fs::remove_file(&t).is_ok();
                        (t, removed)
                    })
                    .collect())
            })
            .await
    }
}

/// The temp files under `root` not modified for `older_than`.
fn old_temp_files(root: &Path, older_than: Duration) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let cutoff = SystemTime::now() - older_than;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if atomic::is_temp(&e.file_name().to_string_lossy()) {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m < cutoff);
                if old {
                    out.push(e.path());
                }
            }
        }
    }
    Ok(out)
}
