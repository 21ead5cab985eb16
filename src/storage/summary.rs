//! What the web UI shows of a repository without reading every manifest: its tags with the
//! digest each names and when it was pushed, its untagged manifests, its size, and the uploads in
//! progress across the registry.
//!
//! First version: each answer is read through [`Storage::inventory`] on every call, correct on
//! both drivers but a walk of the repository per call. Sizes and counts are to be cached the way
//! tag lists are (validated by directory stamps), and the part of a repository's size no other
//! repository shares computed by a background pass.

use std::collections::HashSet;
use std::time::SystemTime;

use uuid::Uuid;

use super::{Result, Storage};
use crate::registry::{Digest, RepoName};

/// A repository at a glance (the repositories page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSummary {
    pub tags: usize,
    /// The newest manifest revision's link time.
    pub last_push: Option<SystemTime>,
    /// Bytes of the blobs the repository links (layers, configs and its manifests).
    pub size: u64,
    /// The part of `size` no other repository links (`None`: not computed yet).
    pub unique_size: Option<u64>,
}

/// One tag and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub tag: String,
    /// `None`: the tag's link is missing or unreadable.
    pub digest: Option<Digest>,
    /// When the tag was last pushed (moved to its digest).
    pub pushed: Option<SystemTime>,
}

/// A manifest revision no tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntaggedManifest {
    pub digest: Digest,
    pub pushed: SystemTime,
}

/// An upload session not finished yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub repository: RepoName,
    pub id: Uuid,
    /// When it last received data.
    pub last_write: SystemTime,
    /// Bytes received so far (`None`: not known on this driver).
    pub bytes: Option<u64>,
}

impl Storage {
    /// `name` at a glance.
    pub async fn repository_summary(&self, name: &RepoName) -> Result<RepoSummary> {
        let inv = self.inventory(name).await?;
        let mut size = 0;
        let mut seen = HashSet::new();
        let linked = inv
            .layers
            .iter()
            .chain(inv.revisions.iter().map(|(d, _)| d));
        for d in linked {
            if seen.insert(d.clone()) {
                size += self.blob_size_global(d).await?.unwrap_or(0);
            }
        }
        Ok(RepoSummary {
            tags: inv.tags.len(),
            last_push: inv.revisions.iter().map(|(_, t)| *t).max(),
            size,
            unique_size: None,
        })
    }

    /// The tags of `name`, sorted by name, each with its digest and push time.
    pub async fn tag_details(&self, name: &RepoName) -> Result<Vec<TagInfo>> {
        let inv = self.inventory(name).await?;
        let mut out: Vec<TagInfo> = inv
            .tags
            .into_iter()
            .map(|(tag, digest)| {
                let pushed = digest
                    .as_ref()
                    .and_then(|d| inv.revisions.iter().find(|(r, _)| r == d).map(|(_, t)| *t));
                TagInfo {
                    tag: tag.to_string(),
                    digest,
                    pushed,
                }
            })
            .collect();
        out.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(out)
    }

    /// The manifest revisions of `name` that no tag names (children of an index and referrers
    /// among them), newest first.
    pub async fn untagged_manifests(&self, name: &RepoName) -> Result<Vec<UntaggedManifest>> {
        let inv = self.inventory(name).await?;
        let tagged: HashSet<&Digest> = inv.tags.iter().filter_map(|(_, d)| d.as_ref()).collect();
        let mut out: Vec<UntaggedManifest> = inv
            .revisions
            .iter()
            .filter(|(d, _)| !tagged.contains(d))
            .map(|(d, t)| UntaggedManifest {
                digest: d.clone(),
                pushed: *t,
            })
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.pushed));
        Ok(out)
    }

    /// Every upload session in the registry, oldest activity first.
    pub async fn uploads_in_progress(&self) -> Result<Vec<UploadInfo>> {
        let mut out = Vec::new();
        for repository in self.upload_repositories().await? {
            let inv = self.inventory(&repository).await?;
            out.extend(inv.uploads.into_iter().map(|(id, last_write)| UploadInfo {
                repository: repository.clone(),
                id,
                last_write,
                bytes: None,
            }));
        }
        out.sort_by_key(|u| u.last_write);
        Ok(out)
    }
}
