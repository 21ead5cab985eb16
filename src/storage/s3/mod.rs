//! The S3 storage driver: the registry operations of [`Storage`](super::Storage) on an
//! S3-compatible bucket, in Distribution's S3 key layout (the `docker/registry/v2/...` tree under
//! an optional prefix), so a bucket Distribution wrote is served unchanged and the other way round.
//!
//! Durability and visibility come from the object store's own promises: a PUT, a copy and a
//! completed multipart upload each appear whole or not at all. A blob is written under its digest
//! only after the bytes were hashed and matched the digest the client named; a tag's link is the
//! last object a manifest push writes, as on the filesystem.
//!
//! Uploads live in the bucket ([`uploads`]), cache fills too ([`fill`]); the leases that stand in
//! for `flock` and what maintenance passes read are in [`lifecycle`], the nodes' heartbeats in
//! `heartbeat`.

pub mod client;
pub mod fill;
mod heartbeat;
pub mod lifecycle;
mod summary;
mod uploads;

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use uuid::Uuid;

use super::layout::{Layout, link_content};
use super::manifests::ReferrerEntry;
use super::{BlobStream, CachedManifest, Manifests, Result, StorageError};
use crate::registry::{Digest, RepoName, Tag};
use client::S3Client;
pub use client::S3Settings;
pub use uploads::PART;

fn corrupt(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

pub struct S3Driver {
    client: S3Client,
    redirect_blobs: bool,
    layout: Layout,
    /// The last catalog walk and when it was taken, for the pages after a first one.
    catalog_snapshot: Mutex<Option<(std::time::Instant, Arc<[String]>)>>,
    /// Repositories' facts for the web UI, reused for a short time.
    summaries: Mutex<summary::Summaries>,
}

/// Directory listings a catalog walk keeps in flight.
const CATALOG_LISTS_IN_FLIGHT: usize = 16;
/// How long the pages after a catalog's first page read that page's walk.
const CATALOG_SNAPSHOT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl S3Driver {
    pub fn new(settings: &S3Settings, prefix: &str) -> std::result::Result<S3Driver, String> {
        Ok(S3Driver {
            client: S3Client::new(settings)?,
            redirect_blobs: settings.redirect_blobs,
            layout: Layout::new(prefix.trim_matches('/')),
            catalog_snapshot: Mutex::new(None),
            summaries: Mutex::new(summary::Summaries::default()),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn key(p: &std::path::Path) -> String {
        p.to_string_lossy().trim_start_matches('/').to_string()
    }

    fn dir_key(p: &std::path::Path) -> String {
        format!("{}/", Self::key(p))
    }

    async fn read_link(&self, p: &std::path::Path) -> Result<Option<Digest>> {
        let key = Self::key(p);
        match self.client.get(&key).await? {
            None => Ok(None),
            Some(b) => String::from_utf8_lossy(&b)
                .trim()
                .parse::<Digest>()
                .map(Some)
                .map_err(|e| corrupt(format!("corrupt link {key}: {e}"))),
        }
    }

    async fn write_link(&self, p: &std::path::Path, d: &Digest) -> Result<()> {
        self.client
            .put(&Self::key(p), Bytes::from(link_content(d)))
            .await
    }

    /// Deletes every object under the directory `p`.
    async fn delete_dir(&self, p: &std::path::Path) -> Result<()> {
        let listing = self.client.list(&Self::dir_key(p), false).await?;
        for o in listing.objects {
            self.client.delete(&o.key).await?;
        }
        Ok(())
    }

    /// A durable write and a read back, as the filesystem check does.
    pub async fn check(&self) -> Result<()> {
        let token = Uuid::new_v4().simple().to_string();
        let key = Self::key(&self.layout.probe(&token));
        self.client.put(&key, Bytes::from(token.clone())).await?;
        let back = self.client.get(&key).await;
        let _ = self.client.delete(&key).await;
        if back?.as_deref() != Some(token.as_bytes()) {
            return Err(StorageError::Unavailable(
                "object storage read back different bytes than written".into(),
            ));
        }
        Ok(())
    }

    // --- blobs

    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let l = &self.layout;
        let linked = self.read_link(&l.layer_link(name, digest)).await?.as_ref() == Some(digest)
            || self
                .read_link(&l.revision_link(name, digest))
                .await?
                .as_ref()
                == Some(digest);
        if !linked {
            return Ok(None);
        }
        self.blob_size_global(digest).await
    }

    pub async fn blob_size_global(&self, digest: &Digest) -> Result<Option<u64>> {
        self.client
            .head(&Self::key(&self.layout.blob_data(digest)))
            .await
    }

    pub async fn open_blob(&self, digest: &Digest, start: u64, len: u64) -> Result<BlobStream> {
        self.client
            .get_range(&Self::key(&self.layout.blob_data(digest)), start, len)
            .await?
            .ok_or(StorageError::BlobUnknown)
    }

    /// Where to send a client for the blob's bytes, when blob GETs are redirected to the store.
    pub fn blob_redirect(&self, digest: &Digest) -> Option<String> {
        self.redirect_blobs.then(|| {
            self.client.presigned_get(
                &Self::key(&self.layout.blob_data(digest)),
                std::time::Duration::from_secs(20 * 60),
            )
        })
    }

    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.before_linking(std::slice::from_ref(digest)).await?;
        self.write_link(&self.layout.layer_link(name, digest), digest)
            .await
    }

    pub async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .read_link(&self.layout.layer_link(name, digest))
            .await?
            .as_ref()
            == Some(digest))
    }

    pub async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let link = self.layout.layer_link(name, digest);
        if self.read_link(&link).await?.is_none() {
            return Err(StorageError::BlobUnknown);
        }
        self.client.delete(&Self::key(&link)).await
    }

    /// Moves a corrupt blob aside (copy, then delete), as the filesystem's quarantine does.
    pub async fn quarantine_blob(&self, digest: &Digest) -> Result<bool> {
        let from = Self::key(&self.layout.blob_data(digest));
        let Some(size) = self.client.head(&from).await? else {
            return Ok(false);
        };
        let to = Self::key(&self.layout.quarantine_data(digest));
        if self.client.head(&to).await?.is_none() {
            self.client.copy_sized(&from, &to, size).await?;
        }
        self.client.delete(&from).await?;
        Ok(true)
    }

    // --- manifests

    pub async fn resolve_manifest(
        &self,
        name: &RepoName,
        reference: &crate::registry::Reference,
        cache: &Manifests,
    ) -> Result<(Digest, Arc<CachedManifest>)> {
        use crate::registry::Reference;
        let l = &self.layout;
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self
                .read_link(&l.tag_current_link(name, t))
                .await?
                .ok_or(StorageError::ManifestUnknown)?,
        };
        if self
            .read_link(&l.revision_link(name, &digest))
            .await?
            .as_ref()
            != Some(&digest)
        {
            return Err(StorageError::ManifestUnknown);
        }
        if let Some(m) = cache.get(&digest) {
            return Ok((digest, m));
        }
        let bytes = self
            .client
            .get(&Self::key(&l.blob_data(&digest)))
            .await?
            .ok_or(StorageError::ManifestUnknown)?;
        let m = Arc::new(CachedManifest {
            media_type: crate::registry::manifest::detect_media_type(&bytes),
            bytes,
        });
        cache.insert(digest.clone(), m.clone());
        Ok((digest, m))
    }

    pub async fn put_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes: Vec<u8>,
        tag: Option<&Tag>,
        referrer: Option<ReferrerEntry>,
    ) -> Result<()> {
        let l = &self.layout;
        let (mut refs, _) = crate::registry::manifest::references(&bytes).unwrap_or_default();
        refs.retain(|d| d != digest);
        self.before_linking(&refs).await?;
        let data = Self::key(&l.blob_data(digest));
        if self.client.head(&data).await? != Some(bytes.len() as u64) {
            self.client.put(&data, Bytes::from(bytes)).await?;
        }
        // Publication order as on the filesystem: revision link, referrer entry, tag index,
        // then the tag's current link.
        self.write_link(&l.revision_link(name, digest), digest)
            .await?;
        if let Some(r) = referrer {
            self.client
                .put(
                    &Self::key(&l.referrer_entry(name, &r.subject, digest)),
                    Bytes::from(r.descriptor),
                )
                .await?;
        }
        if let Some(t) = tag {
            self.write_link(&l.tag_index_link(name, t, digest), digest)
                .await?;
            self.write_link(&l.tag_current_link(name, t), digest)
                .await?;
        }
        Ok(())
    }

    pub async fn manifest_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .read_link(&self.layout.revision_link(name, digest))
            .await?
            .as_ref()
            == Some(digest))
    }

    pub async fn delete_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        subject: Option<Digest>,
    ) -> Result<()> {
        let l = &self.layout;
        if !self.manifest_linked(name, digest).await? {
            return Err(StorageError::ManifestUnknown);
        }
        // Tags first: a tag must never name a revision that is gone.
        for tag in self.tag_names(name).await? {
            if self
                .read_link(&l.tag_current_link(name, &tag))
                .await?
                .as_ref()
                == Some(digest)
            {
                self.delete_dir(&l.tag_dir(name, &tag)).await?;
            }
        }
        if let Some(s) = subject {
            self.client
                .delete(&Self::key(&l.referrer_entry(name, &s, digest)))
                .await?;
        }
        self.delete_dir(&l.revision_dir(name, digest)).await
    }

    pub async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<()> {
        let l = &self.layout;
        if self
            .read_link(&l.tag_current_link(name, tag))
            .await?
            .is_none()
        {
            return Err(StorageError::ManifestUnknown);
        }
        self.delete_dir(&l.tag_dir(name, tag)).await
    }

    // --- listings

    async fn tag_names(&self, name: &RepoName) -> Result<Vec<Tag>> {
        let listing = self
            .client
            .list(&Self::dir_key(&self.layout.tags_dir(name)), true)
            .await?;
        Ok(listing
            .prefixes
            .iter()
            .filter_map(|p| last_component(p).parse::<Tag>().ok())
            .collect())
    }

    pub async fn list_tags(&self, name: &RepoName) -> Result<Arc<[String]>> {
        let mut tags: Vec<String> = self
            .tag_names(name)
            .await?
            .into_iter()
            .map(|t| t.as_str().to_string())
            .collect();
        if tags.is_empty() {
            let repo = self
                .client
                .list(&Self::dir_key(&self.layout.repo_dir(name)), true)
                .await?;
            let known = repo
                .prefixes
                .iter()
                .any(|p| matches!(last_component(p), "_manifests" | "_layers"));
            if !known {
                return Err(StorageError::NameUnknown);
            }
        }
        tags.sort();
        Ok(tags.into())
    }

    /// Every repository name, sorted: a repository is a key prefix holding `_manifests` or
    /// `_layers`, as Distribution's catalog walk decides.
    async fn repositories(&self) -> Result<Vec<String>> {
        self.walk_repositories(&["_manifests", "_layers"]).await
    }

    /// Every repository holding upload sessions (`_uploads`), listed in the catalog or not.
    pub async fn upload_repositories(&self) -> Result<Vec<RepoName>> {
        Ok(self
            .walk_repositories(&["_uploads"])
            .await?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// The names of the key prefixes under `repositories/` that hold one of `markers`.
    async fn walk_repositories(&self, markers: &[&str]) -> Result<Vec<String>> {
        let top = Self::dir_key(&self.layout.repositories());
        let mut found = Vec::new();
        let mut pending = vec![top.clone()];
        // One level of the tree at a time, its directories listed concurrently: the walk costs
        // the tree's depth in round trips, not its number of directories.
        while !pending.is_empty() {
            let level = std::mem::take(&mut pending);
            let mut listings =
                futures_util::stream::iter(level.into_iter().map(|dir| async move {
                    let listing = self.client.list(&dir, true).await;
                    (dir, listing)
                }))
                .buffer_unordered(CATALOG_LISTS_IN_FLIGHT);
            while let Some((dir, listing)) = listings.next().await {
                let mut is_repo = false;
                for p in listing?.prefixes {
                    let last = last_component(&p);
                    if last.starts_with('_') {
                        is_repo |= markers.contains(&last);
                    } else {
                        pending.push(p);
                    }
                }
                if is_repo && let Some(name) = dir.strip_prefix(&top) {
                    found.push(name.trim_end_matches('/').to_string());
                }
            }
        }
        found.retain(|n| n.parse::<RepoName>().is_ok());
        found.sort();
        Ok(found)
    }

    pub async fn list_repositories(
        &self,
        last: Option<String>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        // A first page walks the bucket afresh, so it shows what any node pushed before it; the
        // pages after it (`last` set) read the walk of a recent first page, so paging through a
        // large catalog is one walk, not one per page.
        let snapshot = match &last {
            Some(_) => self.catalog_snapshot.lock().ok().and_then(|s| {
                s.as_ref()
                    .filter(|(at, _)| at.elapsed() < CATALOG_SNAPSHOT_FOR)
                    .map(|(_, names)| names.clone())
            }),
            None => None,
        };
        let all = match snapshot {
            Some(names) => names,
            None => {
                let names: Arc<[String]> = self.repositories().await?.into();
                if let Ok(mut s) = self.catalog_snapshot.lock() {
                    *s = Some((std::time::Instant::now(), names.clone()));
                }
                names
            }
        };
        let start = match &last {
            Some(l) => all.partition_point(|r| r <= l),
            None => 0,
        };
        let after = all.get(start..).unwrap_or_default();
        Ok(match n.and_then(|n| after.split_at_checked(n)) {
            Some((page, rest)) if !rest.is_empty() => (page.to_vec(), true),
            _ => (after.to_vec(), false),
        })
    }

    pub async fn list_referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>> {
        let l = &self.layout;
        let listing = self
            .client
            .list(&Self::dir_key(&l.referrers_dir(name, subject)), true)
            .await?;
        let mut out = Vec::new();
        for o in listing.objects {
            let Some(stem) = last_component(&o.key).strip_suffix(".json") else {
                continue;
            };
            let Ok(digest) = stem.replacen('-', ":", 1).parse::<Digest>() else {
                continue;
            };
            if !self.manifest_linked(name, &digest).await? {
                continue;
            }
            if let Some(bytes) = self.client.get(&o.key).await?
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                out.push((digest, v));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }
}

/// The last component of a key or prefix (`a/b/c/` → `c`).
fn last_component(key: &str) -> &str {
    key.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_components() {
        assert_eq!(last_component("a/b/_manifests/"), "_manifests");
        assert_eq!(last_component("a/b/c"), "c");
        assert_eq!(last_component("top"), "top");
    }
}
