//! The S3 storage driver: the registry operations of [`Storage`](super::Storage) on an
//! S3-compatible bucket, in Distribution's S3 key layout (the `docker/registry/v2/...` tree under
//! an optional prefix), so a bucket Distribution wrote is served unchanged and the other way round.
//!
//! Durability and visibility come from the object store's own promises: a PUT, a copy and a
//! completed multipart upload each appear whole or not at all. A blob is written under its digest
//! only after the bytes were hashed and matched the digest the client named; a tag's link is the
//! last object a manifest push writes, as on the filesystem.
//!
//! Uploads live in the bucket, so an upload started on one node continues on another or after a
//! restart. Their data goes into an S3 multipart upload in parts of [`PART`] bytes; what is left
//! over after a request (less than a part) is kept as a small `tail` object, and a `state` object
//! records the acknowledged offset, the serialized sha256 state, the multipart upload and its
//! parts. A node buffers at most one part per upload in memory, never a whole blob.

pub mod client;
pub mod fill;
pub mod lifecycle;

use std::io;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};
use uuid::Uuid;

use super::layout::{Layout, link_content};
use super::manifests::ReferrerEntry;
use super::{BlobStream, CachedManifest, ManifestCache, Result, StorageError};
use crate::registry::{Algorithm, Digest, RepoName, Tag};
use client::S3Client;
pub use client::S3Settings;

/// Bytes per multipart part (S3's minimum for every part but the last): the most an upload keeps
/// in memory on a node.
pub const PART: usize = 5 * 1024 * 1024;

/// An upload's progress, kept in the bucket beside its data.
#[derive(Serialize, Deserialize, Default, Clone)]
struct UploadState {
    /// Bytes acknowledged: the parts plus the tail.
    offset: u64,
    /// sha256 state over those bytes (base64 of the serialized hasher); empty at offset 0.
    sha256: String,
    /// The S3 multipart upload holding the parts, once the first part was sent.
    multipart: Option<String>,
    /// ETags of the parts, in order; each holds exactly [`PART`] bytes.
    parts: Vec<String>,
    /// Key of the object holding the bytes after the parts, if any.
    tail: Option<String>,
}

impl UploadState {
    fn hasher(&self) -> Result<Sha256> {
        if self.offset == 0 {
            return Ok(Sha256::new());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.sha256)
            .map_err(|e| corrupt(format!("upload state: {e}")))?;
        SerializedState::<Sha256>::try_from(raw.as_slice())
            .ok()
            .and_then(|s| Sha256::deserialize(&s).ok())
            .ok_or_else(|| corrupt("upload state: unreadable hash state".into()))
    }

    fn set_hasher(&mut self, sha: &Sha256) {
        self.sha256 = base64::engine::general_purpose::STANDARD.encode(sha.serialize().as_slice());
    }

    fn part_bytes(&self) -> u64 {
        (self.parts.len() * PART) as u64
    }
}

fn corrupt(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

pub struct S3Driver {
    client: S3Client,
    redirect_blobs: bool,
    layout: Layout,
    manifests: Mutex<ManifestCache>,
}

/// An upload being appended to: its state, its hasher, and the bytes not yet sent as a part.
struct Appending {
    state: UploadState,
    sha: Sha256,
    buf: BytesMut,
}

impl S3Driver {
    pub fn new(settings: &S3Settings, prefix: &str) -> std::result::Result<S3Driver, String> {
        Ok(S3Driver {
            client: S3Client::new(settings)?,
            redirect_blobs: settings.redirect_blobs,
            layout: Layout::new(prefix.trim_matches('/')),
            manifests: Mutex::new(ManifestCache::default()),
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
        let key = Self::key(&self.layout.root().join(format!(".registryd-probe-{token}")));
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
        let to = Self::key(&self.layout.quarantine_dir(digest).join("data"));
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
        let cached = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest);
        if let Some(m) = cached {
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
        self.manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), m.clone());
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
        while let Some(dir) = pending.pop() {
            let listing = self.client.list(&dir, true).await?;
            let mut is_repo = false;
            for p in listing.prefixes {
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
        found.retain(|n| n.parse::<RepoName>().is_ok());
        found.sort();
        Ok(found)
    }

    pub async fn list_repositories(
        &self,
        last: Option<String>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        let all = self.repositories().await?;
        let after: Vec<String> = match &last {
            Some(l) => all.into_iter().filter(|r| r > l).collect(),
            None => all,
        };
        Ok(match n {
            Some(n) if after.len() > n => (after[..n].to_vec(), true),
            _ => (after, false),
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

    // --- uploads

    fn state_key(&self, name: &RepoName, id: &Uuid) -> String {
        Self::key(&self.layout.upload_dir(name, id).join("s3state"))
    }

    fn data_key(&self, name: &RepoName, id: &Uuid) -> String {
        Self::key(&self.layout.upload_data(name, id))
    }

    pub async fn start_upload(&self, name: &RepoName) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        self.client
            .put(
                &Self::key(&self.layout.upload_started_at(name, &id)),
                Bytes::from(now),
            )
            .await?;
        let state = serde_json::to_vec(&UploadState::default()).map_err(io::Error::other)?;
        self.client
            .put(&self.state_key(name, &id), Bytes::from(state))
            .await?;
        Ok(id)
    }

    async fn state(&self, name: &RepoName, id: &Uuid) -> Result<UploadState> {
        let bytes = self
            .client
            .get(&self.state_key(name, id))
            .await?
            .ok_or(StorageError::UploadUnknown)?;
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("upload state: {e}")))
    }

    pub async fn upload_offset(&self, name: &RepoName, id: &Uuid) -> Result<u64> {
        Ok(self.state(name, id).await?.offset)
    }

    /// Loads the upload's state and its tail, ready to take more bytes at `start`.
    async fn resume(&self, name: &RepoName, id: &Uuid, start: Option<u64>) -> Result<Appending> {
        let state = self.state(name, id).await?;
        if let Some(s) = start
            && s != state.offset
        {
            return Err(StorageError::RangeMismatch(state.offset));
        }
        let sha = state.hasher()?;
        let mut buf = BytesMut::new();
        if let Some(tail) = &state.tail {
            let bytes = self
                .client
                .get(tail)
                .await?
                .ok_or_else(|| corrupt(format!("upload tail {tail} is missing")))?;
            if bytes.len() as u64 != state.offset - state.part_bytes() {
                return Err(corrupt(format!("upload tail {tail} has the wrong size")));
            }
            buf.extend_from_slice(&bytes);
        }
        Ok(Appending { state, sha, buf })
    }

    /// Sends one full part from the front of the buffer.
    async fn send_part(&self, name: &RepoName, id: &Uuid, a: &mut Appending) -> Result<()> {
        let key = self.data_key(name, id);
        let upload_id = match &a.state.multipart {
            Some(u) => u.clone(),
            None => {
                let u = self.client.create_multipart(&key).await?;
                a.state.multipart = Some(u.clone());
                // Recorded at once, so a crash before the next checkpoint cannot leave a multipart
                // upload nobody knows to abort (the recorded offset and parts stay as they were).
                let mut recorded = self.state(name, id).await?;
                recorded.multipart = Some(u.clone());
                let body = serde_json::to_vec(&recorded).map_err(io::Error::other)?;
                self.client
                    .put(&self.state_key(name, id), Bytes::from(body))
                    .await?;
                u
            }
        };
        let part = a.buf.split_to(PART).freeze();
        let number = u16::try_from(a.state.parts.len() + 1).map_err(|_| {
            StorageError::Io(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob too large for one multipart upload (65,535 parts)",
            ))
        })?;
        let etag = self
            .client
            .upload_part(&key, &upload_id, number, part)
            .await?;
        a.state.parts.push(etag);
        Ok(())
    }

    /// Reads `body` into the upload, sending each full part as it fills.
    async fn take_body<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        a: &mut Appending,
        mut body: S,
    ) -> Result<Option<io::Error>>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Some(e)),
            };
            a.sha.update(&chunk);
            a.state.offset += chunk.len() as u64;
            a.buf.extend_from_slice(&chunk);
            while a.buf.len() >= PART {
                self.send_part(name, id, a).await?;
            }
        }
        Ok(None)
    }

    /// Records what arrived: the rest of the buffer as the new tail, then the state (the
    /// acknowledgement), then the old tail goes.
    async fn checkpoint(&self, name: &RepoName, id: &Uuid, mut a: Appending) -> Result<u64> {
        let old_tail = a.state.tail.take();
        if !a.buf.is_empty() {
            let key = Self::key(
                &self
                    .layout
                    .upload_dir(name, id)
                    .join(format!("tail-{}", a.state.offset)),
            );
            self.client.put(&key, a.buf.split().freeze()).await?;
            a.state.tail = Some(key);
        }
        a.state.set_hasher(&a.sha);
        let state = serde_json::to_vec(&a.state).map_err(io::Error::other)?;
        self.client
            .put(&self.state_key(name, id), Bytes::from(state))
            .await?;
        if let Some(old) = old_tail
            && Some(&old) != a.state.tail.as_ref()
        {
            self.client.delete(&old).await?;
        }
        Ok(a.state.offset)
    }

    pub async fn append_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        start: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut a = self.resume(name, id, start).await?;
        let before = a.state.offset;
        let body_error = self.take_body(name, id, &mut a, body).await?;
        match body_error {
            None => self.checkpoint(name, id, a).await,
            Some(e) => {
                // What arrived before the client stopped stays acknowledged, so it can resume.
                if e.kind() != io::ErrorKind::FileTooLarge && a.state.offset > before {
                    self.checkpoint(name, id, a).await?;
                }
                Err(StorageError::Body(e))
            }
        }
    }

    pub async fn complete_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        expected: &Digest,
        start: Option<u64>,
        last: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut a = self.resume(name, id, start).await?;
        if let Some(body) = last
            && let Some(e) = self.take_body(name, id, &mut a, body).await?
        {
            if e.kind() != io::ErrorKind::FileTooLarge {
                self.checkpoint(name, id, a).await?;
            }
            return Err(StorageError::Body(e));
        }
        let size = a.state.offset;
        let dest = Self::key(&self.layout.blob_data(expected));
        match a.state.multipart.clone() {
            None => {
                // The whole blob is in memory (less than one part): check it, then store it.
                let bytes = a.buf.split().freeze();
                let computed = match expected.algorithm() {
                    Algorithm::Sha256 => Digest::from_sha256_output(&a.sha.clone().finalize()),
                    Algorithm::Sha512 => Digest::from_sha512_output(&Sha512::digest(&bytes)),
                };
                if &computed != expected {
                    return self.reject(name, id, None, expected, computed).await;
                }
                if self.client.head(&dest).await? != Some(size) {
                    self.client.put(&dest, bytes).await?;
                }
            }
            Some(upload_id) => {
                let data = self.data_key(name, id);
                if expected.algorithm() == Algorithm::Sha256 {
                    let computed = Digest::from_sha256_output(&a.sha.clone().finalize());
                    if &computed != expected {
                        return self
                            .reject(name, id, Some(&upload_id), expected, computed)
                            .await;
                    }
                }
                if !a.buf.is_empty() {
                    // The last part may be shorter than PART.
                    let number = u16::try_from(a.state.parts.len() + 1).unwrap_or(u16::MAX);
                    let rest = a.buf.split().freeze();
                    let etag = self
                        .client
                        .upload_part(&data, &upload_id, number, rest)
                        .await?;
                    a.state.parts.push(etag);
                }
                // The assembled data sits under the upload, invisible to readers, until the
                // digest is known to match; then it is copied under the digest.
                if let Err(e) = self
                    .client
                    .complete_multipart(&data, &upload_id, &a.state.parts)
                    .await
                {
                    // A completion whose answer was lost is done all the same (a retry of it
                    // then finds no such upload): the assembled object tells.
                    if self.client.head(&data).await? != Some(size) {
                        return Err(e);
                    }
                }
                if expected.algorithm() == Algorithm::Sha512 {
                    let computed = self.hash_object_sha512(&data, size).await?;
                    if &computed != expected {
                        return self.reject(name, id, None, expected, computed).await;
                    }
                }
                if self.client.head(&dest).await? != Some(size) {
                    self.client.copy_sized(&data, &dest, size).await?;
                }
            }
        }
        self.link_blob(name, expected).await?;
        self.remove_upload(name, id, None).await?;
        Ok(size)
    }

    /// Drops an upload whose bytes did not hash to `expected` (aborting its multipart upload, if
    /// it is still open) and says so.
    async fn reject(
        &self,
        name: &RepoName,
        id: &Uuid,
        multipart: Option<&str>,
        expected: &Digest,
        computed: Digest,
    ) -> Result<u64> {
        self.remove_upload(name, id, multipart).await?;
        Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            computed,
        })
    }

    async fn hash_object_sha512(&self, key: &str, size: u64) -> Result<Digest> {
        let mut stream = self
            .client
            .get_range(key, 0, size)
            .await?
            .ok_or_else(|| corrupt(format!("assembled upload {key} is missing")))?;
        let mut sha = Sha512::new();
        while let Some(chunk) = stream.next().await {
            sha.update(&chunk?);
        }
        Ok(Digest::from_sha512_output(&sha.finalize()))
    }

    /// Deletes the upload's objects (and aborts its multipart upload, if one is named).
    async fn remove_upload(
        &self,
        name: &RepoName,
        id: &Uuid,
        multipart: Option<&str>,
    ) -> Result<()> {
        if let Some(u) = multipart {
            self.client
                .abort_multipart(&self.data_key(name, id), u)
                .await?;
        }
        // The state goes last: until then the upload is still known and can be cancelled again.
        let state = self.state_key(name, id);
        let listing = self
            .client
            .list(&Self::dir_key(&self.layout.upload_dir(name, id)), false)
            .await?;
        for o in listing.objects.iter().filter(|o| o.key != state) {
            self.client.delete(&o.key).await?;
        }
        self.client.delete(&state).await
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> Result<()> {
        let state = self.state(name, id).await?;
        self.remove_upload(name, id, state.multipart.as_deref())
            .await
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

    #[test]
    fn upload_state_round_trips_its_hasher() {
        let mut s = UploadState {
            offset: 3,
            ..Default::default()
        };
        let mut sha = Sha256::new();
        sha.update(b"abc");
        s.set_hasher(&sha);
        let json = serde_json::to_vec(&s).expect("serializes");
        let back: UploadState = serde_json::from_slice(&json).expect("parses");
        let mut h = back.hasher().expect("hasher");
        h.update(b"def");
        assert_eq!(h.finalize(), Sha256::digest(b"abcdef"));
    }
}
