//! What maintenance passes (garbage collection, fsck) read and remove in a bucket, and the leases
//! that stand in for the filesystem's `flock` locks.
//!
//! A bucket has no locks, so a lease is a small object (`registryd/locks/<name>.lock`) naming its
//! holder and an expiry; the holder renews it while it works and deletes it when done, and a
//! holder that dies stops renewing, so its lease lapses within [`LEASE`]. Two nodes that write a
//! lease at the same moment both read it back after a pause and only the one whose record stayed
//! keeps it.
//!
//! How a push never loses a blob to a sweep on S3: the sweep takes the `gc-sweep` lease, then waits
//! out a settle period (as long as a push waits for the filesystem's sweep lock) before it rescans
//! links, so every link a push wrote before it could see the lease is found by the rescan. A push
//! checks for the lease right before it writes links; if a sweep is running it waits until the
//! sweep ends and then checks that what it links still exists (a sweep may have removed an old
//! unreferenced blob meanwhile: the client is told the blob is unknown and uploads it again).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::S3Driver;
use crate::registry::{Digest, RepoName};
use crate::storage::inventory::{RepoInventory, StoredBlob};
use crate::storage::layout::Layout;
use crate::storage::{Result, StorageError};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(120);
/// How often a holder renews its lease.
const RENEW: Duration = Duration::from_secs(30);
/// How long a push waits for a running sweep before giving up with a 503.
const SWEEP_WAIT: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Seconds since the epoch, by the holder's clock.
    expires: u64,
}

/// A lease held; dropping it stops the renewals and deletes the lease object in the background
/// ([`Lease::release`] does it at once).
pub struct Lease {
    driver: Arc<S3Driver>,
    name: String,
    holder: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Lease {
    /// Stops the renewals and deletes the lease object (if it is still this holder's).
    pub async fn release(self) {
        let (driver, name, holder) = (self.driver.clone(), self.name.clone(), self.holder.clone());
        drop(self);
        driver.drop_lease(&name, &holder).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl S3Driver {
    fn lease_key(&self, name: &str) -> String {
        Self::key(&self.layout.lock_file(name))
    }

    /// The holder of a lease that has not lapsed.
    async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let Some(bytes) = self.client.get(&self.lease_key(name)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<LeaseRecord>(&bytes)
            .ok()
            .filter(|r| r.expires > unix_now())
            .map(|r| r.holder))
    }

    /// Whether someone holds the lease `name` (and it has not lapsed).
    pub(super) async fn lease_held(&self, name: &str) -> Result<bool> {
        Ok(self.lease_holder(name).await?.is_some())
    }

    async fn write_lease(&self, name: &str, holder: &str, lasts: Duration) -> Result<()> {
        let record = LeaseRecord {
            holder: holder.to_string(),
            expires: unix_now() + lasts.as_secs(),
        };
        let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.client
            .put(&self.lease_key(name), Bytes::from(body))
            .await
    }

    /// Takes the lease `name`, waiting up to `wait` for another holder's to end or lapse; `None`
    /// when it stayed taken.
    pub async fn take_lease(self: &Arc<Self>, name: &str, wait: Duration) -> Result<Option<Lease>> {
        self.take_lease_for(name, wait, LEASE, RENEW).await
    }

    /// [`Self::take_lease`] for a lease that lapses `lasts` after its holder's last renewal
    /// (every `renew`).
    pub(super) async fn take_lease_for(
        self: &Arc<Self>,
        name: &str,
        wait: Duration,
        lasts: Duration,
        renew: Duration,
    ) -> Result<Option<Lease>> {
        let me = Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.lease_holder(name).await?.is_none() {
                self.write_lease(name, &me, lasts).await?;
                // Someone writing at the same moment: the record that stayed wins.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if self.lease_holder(name).await?.as_deref() == Some(me.as_str()) {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let holder_copy = me.clone();
        let lease_name = name.to_string();
        let (driver, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(renew) => {
                        if let Err(e) = driver.write_lease(&name, &me, lasts).await {
                            tracing::warn!(lease = %name, error = %e, "cannot renew the storage lease");
                        }
                    }
                }
            }
            driver.drop_lease(&name, &me).await;
        });
        Ok(Some(Lease {
            driver: self.clone(),
            name: lease_name,
            holder: holder_copy,
            _stop: stop,
        }))
    }

    /// Deletes the lease object if `holder` still holds it.
    async fn drop_lease(&self, name: &str, holder: &str) {
        if self.lease_holder(name).await.ok().flatten().as_deref() == Some(holder)
            && let Err(e) = self.client.delete(&self.lease_key(name)).await
        {
            tracing::warn!(lease = %name, error = %e, "cannot release the storage lease (it lapses by itself)");
        }
    }

    /// The sweep's lease, taken when no other sweep runs, held through a settle period so that
    /// every link written by a push that could not yet see the lease is there to be rescanned.
    pub async fn sweep_lease(self: &Arc<Self>, wait: Duration) -> Result<Lease> {
        let lease = self.take_lease("gc-sweep", wait).await?.ok_or_else(|| {
            StorageError::Unavailable("another node's garbage collection sweep is running".into())
        })?;
        tokio::time::sleep(wait).await;
        Ok(lease)
    }

    /// Waits until no sweep runs; `true` when one was running (the caller then checks that what
    /// it is about to link still exists).
    pub(super) async fn wait_out_sweep(&self) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + SWEEP_WAIT;
        let mut waited = false;
        while self.lease_holder("gc-sweep").await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Unavailable(
                    "a garbage collection sweep is running; retry".into(),
                ));
            }
            waited = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(waited)
    }

    /// Before a push links `digests`: waits out a running sweep, then makes sure they still exist.
    pub(super) async fn before_linking(&self, digests: &[Digest]) -> Result<()> {
        if self.wait_out_sweep().await? {
            for d in digests {
                if self.blob_size_global(d).await?.is_none() {
                    return Err(StorageError::BlobUnknown);
                }
            }
        }
        Ok(())
    }

    /// The store's time for an object written now (a probe, removed again).
    pub async fn clock(&self) -> Result<SystemTime> {
        let token = Uuid::new_v4().simple().to_string();
        let key = Self::key(&self.layout.clock_probe(&token));
        self.client.put(&key, Bytes::new()).await?;
        let stamped = self.client.stat(&key).await;
        let _ = self.client.delete(&key).await;
        stamped?
            .map(|o| o.modified)
            .filter(|t| *t > UNIX_EPOCH)
            .ok_or_else(|| {
                StorageError::Unavailable("the object store did not date a probe object".into())
            })
    }

    /// The shared token signing key's bytes: read, or made by this node from `fresh` when none
    /// exists yet. Two nodes making it at once both read back after a pause and keep the one that
    /// stayed.
    pub async fn token_key(&self, fresh: &[u8]) -> Result<Vec<u8>> {
        let key = Self::key(&self.layout.token_key());
        let read = |bytes: Bytes| {
            if bytes.len() == fresh.len() {
                return Ok(bytes.to_vec());
            }
            Err(StorageError::Io(std::io::Error::other(format!(
                "{key} holds {} bytes, not a {}-byte key; delete it and restart",
                bytes.len(),
                fresh.len()
            ))))
        };
        if let Some(bytes) = self.client.get(&key).await? {
            return read(bytes);
        }
        self.client.put(&key, Bytes::copy_from_slice(fresh)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stayed = self.client.get(&key).await?.ok_or_else(|| {
            StorageError::Unavailable(format!("{key} vanished after it was written"))
        })?;
        read(stayed)
    }

    // --- What maintenance passes read.

    /// `<dir>/sha256/<hex>/link` objects under `dir`: the digests they are named for, and when
    /// each was written.
    async fn linked_digests(&self, dir: &std::path::Path) -> Result<Vec<(Digest, SystemTime)>> {
        let prefix = Self::dir_key(&Layout::sha256_links(dir));
        let listing = self.client.list(&prefix, false).await?;
        Ok(listing
            .objects
            .iter()
            .filter_map(|o| {
                let hex = o.key.strip_prefix(&prefix)?.strip_suffix("/link")?;
                let d = Digest::sha256_hex(hex)?;
                Some((d, o.modified))
            })
            .collect())
    }

    pub async fn inventory(&self, name: &RepoName) -> Result<RepoInventory> {
        let l = &self.layout;
        let revisions = self.linked_digests(&l.revisions_dir(name)).await?;
        let layer_links = self.linked_digests(&l.layers_dir(name)).await?;
        let layers = layer_links.iter().map(|(d, _)| d.clone()).collect();
        let mut tags = Vec::new();
        for t in self.tag_names(name).await? {
            let target = self
                .read_link(&l.tag_current_link(name, &t))
                .await
                .ok()
                .flatten();
            tags.push((t, target));
        }
        // An upload was last active when its newest object was written.
        let prefix = Self::dir_key(&l.uploads_dir(name));
        let mut uploads: Vec<(Uuid, SystemTime)> = Vec::new();
        for o in self.client.list(&prefix, false).await?.objects {
            let Some(id) = o
                .key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('/').next())
                .and_then(|id| Uuid::try_parse(id).ok())
            else {
                continue;
            };
            match uploads.iter_mut().find(|(u, _)| *u == id) {
                Some((_, at)) => *at = (*at).max(o.modified),
                None => uploads.push((id, o.modified)),
            }
        }
        Ok(RepoInventory {
            revisions,
            layers,
            layer_links,
            tags,
            uploads,
        })
    }

    pub async fn all_blobs(&self) -> Result<Vec<StoredBlob>> {
        let prefix = Self::dir_key(&self.layout.blobs_root());
        let listing = self.client.list(&prefix, false).await?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| {
                // <2 hex>/<hex>/data
                let rest = o.key.strip_prefix(&prefix)?.strip_suffix("/data")?;
                let hex = rest.rsplit('/').next()?;
                let digest = Digest::sha256_hex(hex)?;
                Some(StoredBlob {
                    digest,
                    size: o.size,
                    modified: o.modified,
                })
            })
            .collect())
    }

    pub async fn remove_layer_link_older_than(
        &self,
        name: &RepoName,
        digest: &Digest,
        before: SystemTime,
    ) -> Result<bool> {
        let key = Self::key(&self.layout.layer_link(name, digest));
        match self.client.stat(&key).await? {
            Some(o) if o.modified < before => {
                self.client.delete(&key).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub async fn delete_blob_if_unlinked(
        &self,
        digest: &Digest,
        repos: &[RepoName],
    ) -> Result<u64> {
        for r in repos {
            if self.blob_linked(r, digest).await? || self.manifest_linked(r, digest).await? {
                return Ok(0);
            }
        }
        let key = Self::key(&self.layout.blob_data(digest));
        let size = self.client.head(&key).await?.unwrap_or(0);
        self.client.delete(&key).await?;
        Ok(size)
    }

    /// The sha256 of a stored blob's bytes, streamed from the store; `None` when it is gone.
    pub async fn hash_blob(&self, digest: &Digest) -> Result<Option<String>> {
        use futures_util::StreamExt;
        use sha2::Digest as _;
        let key = Self::key(&self.layout.blob_data(digest));
        let Some(size) = self.client.head(&key).await? else {
            return Ok(None);
        };
        let Some(mut stream) = self.client.get_range(&key, 0, size).await? else {
            return Ok(None);
        };
        let mut sha = sha2::Sha256::new();
        while let Some(chunk) = stream.next().await {
            sha.update(&chunk?);
        }
        Ok(Some(hex::encode(sha.finalize())))
    }
}
