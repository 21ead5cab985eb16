//! Manifests and tags. A manifest is a blob (stored byte-exact) plus a revision link in its
//! repository; a tag is a `current/link` naming a revision, with an index of every revision the tag
//! has named. Publication order (durability rule 3), in either driver: blob data, revision link,
//! referrer entry, tag index, tag current link. A crash between any two leaves the old state or the
//! new one.

use super::{Driver, Result, Storage};
use crate::registry::manifest::Manifest;
use crate::registry::{Digest, RepoName, Tag};

/// A referrer entry to publish with a manifest that has a `subject`.
pub struct ReferrerEntry {
    pub subject: Digest,
    /// The descriptor JSON the referrers API lists for this manifest.
    pub descriptor: Vec<u8>,
}

impl ReferrerEntry {
    /// The entry for manifest `m` (`digest`, `size` bytes), if it has a subject: the descriptor
    /// carries its media type, digest, size, artifact type and annotations.
    pub fn of(m: &Manifest, digest: &Digest, size: usize) -> Option<ReferrerEntry> {
        let subject = m.subject.as_ref()?.digest.clone();
        let mut d = serde_json::json!({
            "mediaType": m.media_type,
            "digest": digest.to_string(),
            "size": size,
        });
        if let Some(fields) = d.as_object_mut() {
            if let Some(a) = &m.artifact_type {
                fields.insert("artifactType".to_string(), serde_json::json!(a));
            }
            if let Some(a) = &m.annotations {
                fields.insert("annotations".to_string(), serde_json::json!(a));
            }
        }
        Some(ReferrerEntry {
            subject,
            descriptor: d.to_string().into_bytes(),
        })
    }
}

impl Storage {
    /// Stores a manifest whose digest (`digest`, of `bytes`) the caller computed and validated, and
    /// points `tag` at it. Durable when this returns.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes: Vec<u8>,
        tag: Option<&Tag>,
        referrer: Option<ReferrerEntry>,
    ) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.put_manifest(name, digest, bytes, tag, referrer).await,
            Driver::S3(s3) => s3.put_manifest(name, digest, bytes, tag, referrer).await,
        }
    }

    /// Whether `name` holds the manifest `digest` (its revision link).
    pub async fn manifest_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        match self.driver() {
            Driver::Fs(fs) => fs.manifest_linked(name, digest).await,
            Driver::S3(s3) => s3.manifest_linked(name, digest).await,
        }
    }

    /// Deletes manifest `digest` from `name`, every tag currently pointing at it, and its referrer
    /// entry (`subject` is the manifest's subject, if it had one).
    pub async fn delete_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        subject: Option<Digest>,
    ) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.delete_manifest(name, digest, subject).await,
            Driver::S3(s3) => s3.delete_manifest(name, digest, subject).await,
        }
    }

    /// Deletes a tag (the manifest it named stays, addressable by digest).
    pub async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.delete_tag(name, tag).await,
            Driver::S3(s3) => s3.delete_tag(name, tag).await,
        }
    }
}
