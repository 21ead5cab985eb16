//! What a repository holds, read whole for maintenance passes (cache eviction, garbage collection,
//! fsck): its manifest revisions, layer links, tags and uploads; every blob in the store; the
//! removals such a pass makes and the cluster-wide locks that coordinate them; and the token key.
//! Reads skip entries another node removes meanwhile.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{Driver, Result, Storage};
use crate::registry::{Digest, RepoName, Tag};

pub use super::Held;

/// One repository's contents.
#[derive(Debug, Default)]
pub struct RepoInventory {
    /// Manifest revisions with the time their link was written.
    pub revisions: Vec<(Digest, SystemTime)>,
    /// Blobs linked as layers (`_layers`).
    pub layers: Vec<Digest>,
    /// The same, with the time each link was written.
    pub layer_links: Vec<(Digest, SystemTime)>,
    /// Tags and the digest each currently names (`None`: the link is missing or unreadable).
    pub tags: Vec<(Tag, Option<Digest>)>,
    /// Upload sessions and when each last received data.
    pub uploads: Vec<(Uuid, SystemTime)>,
}

/// One blob in the store.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

impl Storage {
    /// Every repository name (the whole catalog).
    pub async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let (page, more) = self.list_repositories(last.clone(), Some(10_000)).await?;
            last = page.last().cloned();
            out.extend(page.iter().filter_map(|n| n.parse().ok()));
            if !more || last.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every repository holding upload sessions, whether the catalog lists it or not (a first push
    /// to a new name that stopped before its first layer was linked leaves only `_uploads`).
    pub async fn upload_repositories(&self) -> Result<Vec<RepoName>> {
        match self.driver() {
            Driver::Fs(fs) => fs.upload_repositories().await,
            Driver::S3(s3) => s3.upload_repositories().await,
        }
    }

    /// The bytes of the key that signs Bearer tokens, shared by every node on this storage (made
    /// by the first node that needs it, from the `fresh` bytes its caller drew). The storage keeps
    /// the key as opaque bytes; one stored with another length than `fresh` is an error.
    pub async fn token_key(&self, fresh: &[u8]) -> Result<Vec<u8>> {
        match self.driver() {
            Driver::Fs(fs) => fs.token_key(fresh.to_vec()).await,
            Driver::S3(s3) => s3.token_key(fresh).await,
        }
    }

    /// What `name` holds.
    pub async fn inventory(&self, name: &RepoName) -> Result<RepoInventory> {
        match self.driver() {
            Driver::Fs(fs) => fs.inventory(name).await,
            Driver::S3(s3) => s3.inventory(name).await,
        }
    }

    /// Every blob in the store, with its size and modification time.
    pub async fn all_blobs(&self) -> Result<Vec<StoredBlob>> {
        match self.driver() {
            Driver::Fs(fs) => fs.all_blobs().await,
            Driver::S3(s3) => s3.all_blobs().await,
        }
    }

    /// Removes the layer link of `digest` in `name` if it was written before `before` (a link
    /// refreshed since belongs to a push in flight). Returns whether it removed it.
    pub async fn remove_layer_link_older_than(
        &self,
        name: &RepoName,
        digest: &Digest,
        before: SystemTime,
    ) -> Result<bool> {
        match self.driver() {
            Driver::Fs(fs) => fs.remove_layer_link_older_than(name, digest, before).await,
            Driver::S3(s3) => s3.remove_layer_link_older_than(name, digest, before).await,
        }
    }

    /// Moves a blob whose content does not match its name out of the store, to
    /// `registryd/quarantine/<hex>`, so it is no longer served but its bytes stay for inspection.
    /// Returns whether it moved it.
    pub async fn quarantine_blob(&self, digest: &Digest) -> Result<bool> {
        match self.driver() {
            Driver::Fs(fs) => fs.quarantine_blob(digest).await,
            Driver::S3(s3) => s3.quarantine_blob(digest).await,
        }
    }

    /// The sweep lock, shared, for a push about to check and link blobs (waits as long as any
    /// storage call may take).
    pub async fn push_guard(&self) -> Result<Option<Held>> {
        match self.driver() {
            Driver::Fs(fs) => Ok(Some(Held::File(fs.push_guard().await?))),
            // In a bucket the push checks for a running sweep where it writes its links.
            Driver::S3(_) => Ok(None),
        }
    }

    /// A cluster-wide lock shared by pushes and exclusive to the garbage collector's sweep: a push
    /// holds it shared while it checks that the blobs it references exist and links them, so a
    /// collector never removes a blob between that check and the link. Waits up to `wait`.
    pub async fn sweep_lock(&self, exclusive: bool, wait: Duration) -> Result<Held> {
        match self.driver() {
            Driver::Fs(fs) => Ok(Held::File(fs.sweep_lock(exclusive, wait).await?)),
            Driver::S3(s3) => Ok(Held::Lease(s3.sweep_lease(wait).await?)),
        }
    }

    /// Deletes a blob's data, if no repository links it as a layer or a revision (checked again
    /// here, right before the removal). Returns the bytes freed.
    pub async fn delete_blob_if_unlinked(
        &self,
        digest: &Digest,
        repos: Vec<RepoName>,
    ) -> Result<u64> {
        match self.driver() {
            Driver::Fs(fs) => fs.delete_blob_if_unlinked(digest, repos).await,
            Driver::S3(s3) => s3.delete_blob_if_unlinked(digest, &repos).await,
        }
    }

    /// An advisory lock named `name` on the shared storage, held until the returned value is
    /// dropped (or the holder dies); `None` when another process, on any node, holds it.
    pub async fn try_lock(&self, name: &str) -> Result<Option<Held>> {
        match self.driver() {
            Driver::Fs(fs) => Ok(fs.try_lock(name).await?.map(Held::File)),
            Driver::S3(s3) => Ok(s3.take_lease(name, Duration::ZERO).await?.map(Held::Lease)),
        }
    }

    /// As [`try_lock`](Self::try_lock), waiting up to `wait` while another process holds it;
    /// `None` when the wait ran out.
    pub async fn lock(&self, name: &str, wait: Duration) -> Result<Option<Held>> {
        match self.driver() {
            Driver::Fs(fs) => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if let Some(file) = fs.try_lock(name).await? {
                        return Ok(Some(Held::File(file)));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Driver::S3(s3) => Ok(s3.take_lease(name, wait).await?.map(Held::Lease)),
        }
    }

    /// Temp files a crash left behind, untouched for `older_than`, each with whether it was
    /// removed (only with `remove`). A bucket has none: its objects appear whole.
    pub async fn orphan_temp_files(
        &self,
        older_than: Duration,
        remove: bool,
    ) -> Result<Vec<(std::path::PathBuf, bool)>> {
        match self.driver() {
            Driver::Fs(fs) => fs.orphan_temp_files(older_than, remove).await,
            Driver::S3(_) => Ok(Vec::new()),
        }
    }

    /// The sha256 (hex) of a stored blob's bytes, read whole; `None` when it is gone. Not bounded
    /// by the storage timeout: hashing a large blob takes as long as it takes.
    pub async fn hash_blob(&self, digest: &Digest) -> Result<Option<String>> {
        match self.driver() {
            Driver::Fs(fs) => fs.hash_blob(digest).await,
            Driver::S3(s3) => s3.hash_blob(digest).await,
        }
    }
}
