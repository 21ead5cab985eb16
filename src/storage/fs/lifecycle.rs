//! What maintenance passes (cache eviction, garbage collection, fsck) read and remove on the
//! filesystem: a repository's contents, every blob, the removals such a pass makes, and the `flock`
//! locks that coordinate them across nodes. Reads skip entries another node removes meanwhile.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use uuid::Uuid;

use super::blobs::data_size;
use super::manifests::list_tag_names;
use super::uploads::hash_prefix;
use super::{FsDriver, atomic, read_link};
use crate::registry::{Digest, RepoName, Tag};
use crate::storage::inventory::{RepoInventory, StoredBlob};
use crate::storage::layout::Layout;
use crate::storage::{Result, StorageError};

/// `d` with its link's time, if the link at `link` (under a `<dir>/sha256/<hex>/link` tree)
/// names it; `None` when it is gone or names another digest.
fn linked_digest((d, link): (Digest, PathBuf)) -> Result<Option<(Digest, SystemTime)>> {
    let at = match std::fs::metadata(&link) {
        Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok((read_link(&link)?.as_ref() == Some(&d)).then_some((d, at)))
}

/// Entries an inventory reads (a stat and a read each) per storage call. On a loaded GlusterFS
/// mount each takes tens of milliseconds: a repository's hundreds of links read in one call
/// outlasted the operation timeout (bench/soak.sh found it), so they go in batches.
const ENTRIES_PER_CALL: usize = 64;

/// Batches of one inventory read at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Prefix directories of the blob store walked at once by [`FsDriver::all_blobs`].
const BLOB_WALKS_IN_FLIGHT: usize = 4;

/// The blobs under one prefix directory of the blob store (`blobs/sha256/<2 hex>`).
fn blobs_under(l: &Layout, dir: &Path) -> Result<Vec<StoredBlob>> {
    let mut out = Vec::new();
    let Some(blobs) = super::read_dir_if_exists(dir)? else {
        return Ok(out);
    };
    for b in blobs {
        let b = b?;
        let Some(digest) = b.file_name().to_str().and_then(Digest::sha256_hex) else {
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

    /// What `name` holds: its directories listed in one storage call, then their entries read in
    /// batches ([`ENTRIES_PER_CALL`]).
    pub async fn inventory(&self, name: &RepoName) -> Result<RepoInventory> {
        let (l, n) = (self.layout.clone(), name.clone());
        let (revisions, layer_links, tags, uploads) = self
            .pool
            .blocking(move || {
                let revisions = super::sha256_link_entries(&l.revisions_dir(&n))?;
                let layer_links = super::sha256_link_entries(&l.layers_dir(&n))?;
                let tags = list_tag_names(&l.tags_dir(&n))?;
                let mut uploads = Vec::new();
                if let Some(entries) = super::read_dir_if_exists(&l.uploads_dir(&n))? {
                    for e in entries {
                        let e = e?;
                        if let Some(id) =
                            e.file_name().to_str().and_then(|s| Uuid::try_parse(s).ok())
                        {
                            uploads.push((id, e.path()));
                        }
                    }
                }
                Ok((revisions, layer_links, tags, uploads))
            })
            .await?;
        let revisions = self.in_batches(revisions, linked_digest).await?;
        let layer_links = self.in_batches(layer_links, linked_digest).await?;
        let tag_links: Vec<(Tag, PathBuf)> = tags
            .into_iter()
            .map(|t| {
                let link = self.layout.tag_current_link(name, &t);
                (t, link)
            })
            .collect();
        let tags = self
            .in_batches(tag_links, |(t, link)| {
                Ok(Some((t, read_link(&link).ok().flatten())))
            })
            .await?;
        let (l, n) = (self.layout.clone(), name.clone());
        let uploads = self
            .in_batches(uploads, move |(id, dir)| {
                // The last append, else the session's start (its directory).
                let at = std::fs::metadata(l.upload_data(&n, &id))
                    .or_else(|_| std::fs::metadata(&dir))
                    .and_then(|m| m.modified());
                match at {
                    Ok(at) => Ok(Some((id, at))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        Ok(RepoInventory {
            layers: layer_links.iter().map(|(d, _)| d.clone()).collect(),
            revisions,
            layer_links,
            tags,
            uploads,
        })
    }

    /// `read` applied to each of `items`, [`ENTRIES_PER_CALL`] per storage call and
    /// [`BATCHES_IN_FLIGHT`] calls at once, in order; what it answers `None` for is left out.
    async fn in_batches<I, O, F>(&self, mut items: Vec<I>, read: F) -> Result<Vec<O>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(I) -> Result<Option<O>> + Clone + Send + 'static,
    {
        let mut batches = Vec::new();
        while items.len() > ENTRIES_PER_CALL {
            let rest = items.split_off(ENTRIES_PER_CALL);
            batches.push(std::mem::replace(&mut items, rest));
        }
        if !items.is_empty() {
            batches.push(items);
        }
        let done = futures::stream::iter(batches)
            .map(|batch| {
                let read = read.clone();
                self.pool.blocking(move || {
                    let mut out = Vec::with_capacity(batch.len());
                    for item in batch {
                        out.extend(read(item)?);
                    }
                    Ok(out)
                })
            })
            .buffered(BATCHES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for batch in done {
            out.extend(batch?);
        }
        Ok(out)
    }

    /// Every blob in the store, with its size and modification time.
    pub async fn all_blobs(&self) -> Result<Vec<StoredBlob>> {
        // One pool call per two-hex prefix directory, a few at once: the pool bounds each call
        // by the operation timeout, and on a loaded GlusterFS mount one stat takes tens of
        // milliseconds, so one call walking a few thousand blobs outlasted it and every GC pass
        // failed as if the mount hung (bench/soak.sh found it).
        let l = self.layout.clone();
        let prefixes = self
            .pool
            .blocking(move || {
                let Some(entries) = super::read_dir_if_exists(&l.blobs_root())? else {
                    return Ok(Vec::new());
                };
                entries
                    .map(|e| Ok(e?.path()))
                    .collect::<Result<Vec<PathBuf>>>()
            })
            .await?;
        let per_prefix = futures::stream::iter(prefixes)
            .map(|dir| {
                let l = self.layout.clone();
                self.pool.blocking(move || blobs_under(&l, &dir))
            })
            .buffer_unordered(BLOB_WALKS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for blobs in per_prefix {
            out.extend(blobs?);
        }
        Ok(out)
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
        let (l, from, to) = (
            self.layout.clone(),
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
                atomic::publish(&l, &from, &to)?;
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
        let deadline = tokio::time::Instant::now() + wait;
        let mut file = self
            .pool
            .blocking(move || Ok(atomic::open_lock_file(&path)?))
            .await?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // Each try is a storage call of its own and the waiting between them is not: the wait
        // may outlast the operation timeout, which bounds one call (a sweep on a large shared
        // volume holds the lock longer than that, and pushes wait for it).
        loop {
            let (back, held) = self
                .pool
                .blocking(move || {
                    let held = atomic::flock_nb(&file, op)?;
                    Ok((file, held))
                })
                .await?;
            if held {
                return Ok(back);
            }
            file = back;
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Unavailable(
                    "a garbage collection sweep holds the storage lock; retry".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::pool::Pool;

    #[tokio::test]
    async fn an_inventory_reads_every_entry_past_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::new(Duration::from_secs(30), 4, false));
        let fs = FsDriver::new(dir.path(), pool);
        let l = fs.layout.clone();
        let repo: RepoName = "team/app".parse().unwrap();
        let digest = |i: usize| Digest::sha256_hex(&format!("{i:064x}")).unwrap();
        let write = |p: PathBuf, d: &Digest| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, d.to_string()).unwrap();
        };
        let n = ENTRIES_PER_CALL * BATCHES_IN_FLIGHT + 3;
        for i in 0..n {
            write(l.layer_link(&repo, &digest(i)), &digest(i));
        }
        for i in 0..ENTRIES_PER_CALL + 1 {
            write(
                l.revision_link(&repo, &digest(10_000 + i)),
                &digest(10_000 + i),
            );
            let tag: Tag = format!("v{i}").parse().unwrap();
            write(l.tag_current_link(&repo, &tag), &digest(10_000 + i));
        }
        // A link that names another digest than its directory is not counted.
        write(l.revision_link(&repo, &digest(99_999)), &digest(1));
        let inv = fs.inventory(&repo).await.unwrap();
        let mut layers: Vec<String> = inv.layer_links.iter().map(|(d, _)| d.to_string()).collect();
        layers.sort();
        let mut want: Vec<String> = (0..n).map(|i| digest(i).to_string()).collect();
        want.sort();
        assert_eq!(layers, want);
        assert_eq!(inv.layers.len(), n);
        assert_eq!(inv.revisions.len(), ENTRIES_PER_CALL + 1);
        assert!(inv.revisions.iter().all(|(d, _)| *d != digest(99_999)));
        assert_eq!(inv.tags.len(), ENTRIES_PER_CALL + 1);
        for (t, target) in &inv.tags {
            let i: usize = t.as_str()[1..].parse().unwrap();
            assert_eq!(target.as_ref(), Some(&digest(10_000 + i)), "tag {t}");
        }
        assert!(inv.uploads.is_empty());
    }
}
