//! What the web UI shows of repositories without reading every manifest on every page: each
//! repository's tag count, last push and size; its tags with the digest each names and when each
//! last moved; its untagged manifests and what still points at them; the uploads in progress.
//!
//! Both drivers read the same facts (a repository links a blob when its `_layers` or
//! `_manifests/revisions` holds a link for it); each caches them as its storage allows. The
//! filesystem keeps a repository's facts while the directories they were read from keep their
//! stamps (as tag lists are kept, see `fs::listing`), so a page of 100 repositories costs three
//! `stat`s a row when nothing changed. A bucket has no stamps to read, so its facts are kept for
//! a short time instead ([`S3_FACTS_FOR`]). Blob sizes are immutable per digest and kept here for
//! both drivers, bounded.
//!
//! The part of a repository's size no other repository links needs every repository's links:
//! the census in [`census`](super::census) measures it in the background, on demand, and a
//! summary says how old its figure is.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use uuid::Uuid;

use super::{Driver, Result, Storage};
use crate::registry::manifest::{self, Kind};
use crate::registry::{Digest, Reference, RepoName};

/// How long a bucket's facts of a repository are reused: a listing in S3 carries no ETag or
/// modification time to validate a kept copy with, so a short age bounds how stale it can be.
pub const S3_FACTS_FOR: Duration = Duration::from_secs(15);

/// Blob sizes kept; past it the cache starts over (bounded memory, about 40 bytes an entry).
const MAX_BLOB_SIZES: usize = 1 << 19;

/// Manifests whose children and subject are kept; past it the cache starts over.
const MAX_MANIFEST_FACTS: usize = 50_000;

/// Manifests read at once to classify a repository's untagged ones.
const MANIFEST_READS_IN_FLIGHT: usize = 8;

/// A repository at a glance (the repositories page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSummary {
    pub tags: usize,
    /// The newest write of a tag's link or a manifest revision's link.
    pub last_push: Option<SystemTime>,
    /// Bytes of the blobs the repository links (layers, configs and its manifests).
    pub size: u64,
    /// The part of `size` no other repository links, as the last census measured it (`None`:
    /// not measured yet, or the repository is newer than the census).
    pub unique_size: Option<u64>,
    /// When the census that measured `unique_size` started.
    pub unique_as_of: Option<SystemTime>,
}

/// One tag and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub tag: String,
    /// `None`: the tag's link is missing or unreadable.
    pub digest: Option<Digest>,
    /// When the tag last moved (its link was written).
    pub pushed: Option<SystemTime>,
}

/// A manifest revision no tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntaggedManifest {
    pub digest: Digest,
    pub pushed: SystemTime,
    /// What still points at it, so a UI can say "part of index X" instead of inviting deletion.
    pub role: ManifestRole,
}

/// Why an untagged manifest may still be wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRole {
    /// Nothing in the repository points at it.
    Unreferenced,
    /// An index in the repository lists it (a platform of a multi-arch image); `tagged` when that
    /// index is tagged (a tagged one is named when there are several).
    Child { index: Digest, tagged: bool },
    /// It refers to `subject` (a signature, SBOM or attestation), of `artifact_type`.
    Referrer {
        subject: Digest,
        artifact_type: Option<String>,
    },
}

/// An upload session not finished yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub repository: RepoName,
    pub id: Uuid,
    /// When it last received data.
    pub last_write: SystemTime,
    /// Bytes received so far (`None`: its state is unreadable).
    pub bytes: Option<u64>,
    /// When it started (`None`: its start record is gone).
    pub started: Option<SystemTime>,
}

/// What a driver reads of one repository for its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFacts {
    pub tags: usize,
    pub last_push: Option<SystemTime>,
    pub size: u64,
}

/// A blob's digest in 16 bytes: the first half of its hash, which tells blobs apart as surely as
/// the whole (a collision needs 2^64 tries) at a fraction of a `Digest`'s memory.
pub type BlobKey = [u8; 16];

pub fn blob_key(d: &Digest) -> BlobKey {
    let mut key = [0u8; 16];
    // A parsed digest is 64 or 128 lowercase hex characters: both decode.
    let _ = d.hex().get(..32).map(|h| hex::decode_to_slice(h, &mut key));
    key
}

/// Facts of one repository as a driver measured them, with the blobs it links (each once, with
/// its size) when the census asked for them.
pub struct Measured {
    pub facts: RepoFacts,
    pub links: Option<Vec<(BlobKey, u64)>>,
}

/// Blob sizes by digest, shared by both drivers: a digest's size never changes. Bounded; a blob
/// not stored is not remembered (it may be pushed later).
#[derive(Default)]
pub struct BlobSizes {
    map: Mutex<HashMap<BlobKey, u64>>,
}

impl BlobSizes {
    pub fn get(&self, key: &BlobKey) -> Option<u64> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    pub fn insert(&self, key: BlobKey, size: u64) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_BLOB_SIZES {
            m.clear();
        }
        m.insert(key, size);
    }
}

/// What a manifest points at, read once per digest (content-addressed, so never stale).
#[derive(Debug, Default)]
struct ManifestFacts {
    index: bool,
    children: Vec<Digest>,
    subject: Option<Digest>,
    artifact_type: Option<String>,
}

/// What the summaries keep for the whole storage, whatever the driver.
#[derive(Default)]
pub struct SummaryState {
    pub(super) blob_sizes: Arc<BlobSizes>,
    manifest_facts: Mutex<HashMap<BlobKey, Arc<ManifestFacts>>>,
}

impl Storage {
    fn summary_state(&self) -> &SummaryState {
        &self.inner.summary
    }

    /// `name` at a glance.
    pub async fn repository_summary(&self, name: &RepoName) -> Result<RepoSummary> {
        let mut all = self
            .repository_summaries(std::slice::from_ref(name))
            .await?;
        all.pop().unwrap_or_else(|| Ok(RepoSummary::default()))
    }

    /// Each of `names` at a glance, in order (a page of the repositories list in one call: the
    /// filesystem checks them all in one blocking call, a bucket lists them concurrently). The
    /// outer error is the storage failing; an inner one is that repository's own.
    pub async fn repository_summaries(
        &self,
        names: &[RepoName],
    ) -> Result<Vec<Result<RepoSummary>>> {
        let sizes = self.summary_state().blob_sizes.clone();
        let measured = match self.driver() {
            Driver::Fs(fs) => fs.repo_facts(names.to_vec(), sizes, false).await?,
            Driver::S3(s3) => s3.repo_facts(names, &sizes, false).await,
        };
        let out = names
            .iter()
            .zip(measured)
            .map(|(name, m)| Ok(self.with_unique_size(name, m?.facts)))
            .collect();
        self.census_if_due();
        Ok(out)
    }

    /// The tags of `name`, sorted by name, each with its digest and when it last moved.
    pub async fn tag_details(&self, name: &RepoName) -> Result<Vec<TagInfo>> {
        let mut tags = match self.driver() {
            Driver::Fs(fs) => fs.tag_details(name).await?,
            Driver::S3(s3) => s3.tag_details(name).await?,
        };
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(tags)
    }

    /// The manifest revisions of `name` that no tag names, newest first, each with what still
    /// points at it: an index listing it, or the manifest it refers to.
    pub async fn untagged_manifests(&self, name: &RepoName) -> Result<Vec<UntaggedManifest>> {
        let (tags, revisions) = match self.driver() {
            Driver::Fs(fs) => fs.manifest_links(name).await?,
            Driver::S3(s3) => s3.manifest_links(name).await?,
        };
        let tagged: HashSet<Digest> = tags.into_iter().filter_map(|t| t.digest).collect();
        // Owned digests, collected first: a stream over closures on borrowed ones is `Send` only
        // for one lifetime, and the server needs this future `Send` for all.
        let digests: Vec<Digest> = revisions.iter().map(|(d, _)| d.clone()).collect();
        let facts: HashMap<Digest, Arc<ManifestFacts>> = futures_util::stream::iter(digests)
            .map(|d| async move {
                let facts = self.manifest_facts(name, &d).await;
                (d, facts)
            })
            .buffer_unordered(MANIFEST_READS_IN_FLIGHT)
            .filter_map(|(d, f)| async move { f.map(|f| (d, f)) })
            .collect()
            .await;
        let mut out: Vec<UntaggedManifest> = revisions
            .iter()
            .filter(|(d, _)| !tagged.contains(d))
            .map(|(d, at)| UntaggedManifest {
                digest: d.clone(),
                pushed: *at,
                role: role_of(d, &facts, &tagged),
            })
            .collect();
        out.sort_by(|a, b| {
            b.pushed
                .cmp(&a.pushed)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        Ok(out)
    }

    /// Every upload session in the registry, oldest activity first.
    pub async fn uploads_in_progress(&self) -> Result<Vec<UploadInfo>> {
        let mut out = match self.driver() {
            Driver::Fs(fs) => fs.uploads_in_progress().await?,
            Driver::S3(s3) => s3.uploads_in_progress().await?,
        };
        out.sort_by_key(|u| u.last_write);
        Ok(out)
    }

    /// What manifest `d` of `name` points at, from this node's cache or read once; `None` when
    /// it cannot be read (removed meanwhile) or is no manifest this registry parses.
    async fn manifest_facts(&self, name: &RepoName, d: &Digest) -> Option<Arc<ManifestFacts>> {
        let key = blob_key(d);
        let cache = &self.summary_state().manifest_facts;
        if let Some(f) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Some(f.clone());
        }
        let (_, m) = self
            .resolve_manifest(name, &Reference::Digest(d.clone()))
            .await
            .ok()?;
        let facts = Arc::new(match manifest::parse(None, &m.bytes) {
            Ok(p) => ManifestFacts {
                index: p.kind == Kind::Index,
                children: p.manifests.into_iter().map(|c| c.digest).collect(),
                subject: p.subject.map(|s| s.digest),
                artifact_type: p.artifact_type,
            },
            Err(_) => ManifestFacts::default(),
        });
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_MANIFEST_FACTS {
            c.clear();
        }
        c.insert(key, facts.clone());
        Some(facts)
    }
}

/// Why an untagged manifest `d` may still be wanted, from the facts of the repository's manifests.
fn role_of(
    d: &Digest,
    facts: &HashMap<Digest, Arc<ManifestFacts>>,
    tagged: &HashSet<Digest>,
) -> ManifestRole {
    let mut indexes: Vec<&Digest> = facts
        .iter()
        .filter(|(_, f)| f.index && f.children.contains(d))
        .map(|(i, _)| i)
        .collect();
    // A tagged index first, then by digest: the same answer on every call.
    indexes.sort_by_key(|i| (!tagged.contains(*i), *i));
    if let Some(index) = indexes.first() {
        return ManifestRole::Child {
            index: (*index).clone(),
            tagged: tagged.contains(*index),
        };
    }
    match facts.get(d) {
        Some(f) => match &f.subject {
            Some(subject) => ManifestRole::Referrer {
                subject: subject.clone(),
                artifact_type: f.artifact_type.clone(),
            },
            None => ManifestRole::Unreferenced,
        },
        None => ManifestRole::Unreferenced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn blob_keys_tell_digests_apart() {
        let (a, b) = (digest(1), digest(2));
        assert_ne!(blob_key(&a), blob_key(&b));
        assert_eq!(blob_key(&a), blob_key(&a.clone()));
        assert_ne!(blob_key(&a), [0; 16], "the key is the digest's own bytes");
    }

    #[test]
    fn blob_sizes_are_bounded() {
        let s = BlobSizes::default();
        for i in 0..(MAX_BLOB_SIZES as u64 + 10) {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.to_le_bytes());
            s.insert(k, i);
        }
        let held = s.map.lock().unwrap().len();
        assert!(held <= MAX_BLOB_SIZES, "{held}");
        let mut last = [0u8; 16];
        last[..8].copy_from_slice(&(MAX_BLOB_SIZES as u64 + 9).to_le_bytes());
        assert_eq!(s.get(&last), Some(MAX_BLOB_SIZES as u64 + 9));
    }

    #[test]
    fn untagged_manifests_are_classified() {
        let (index, child, orphan_index, orphan_child, sig, subject, lone) = (
            digest(1),
            digest(2),
            digest(3),
            digest(4),
            digest(5),
            digest(6),
            digest(7),
        );
        let mut facts = HashMap::new();
        let idx = |children: Vec<Digest>| {
            Arc::new(ManifestFacts {
                index: true,
                children,
                ..Default::default()
            })
        };
        facts.insert(index.clone(), idx(vec![child.clone()]));
        facts.insert(
            orphan_index.clone(),
            idx(vec![orphan_child.clone(), child.clone()]),
        );
        facts.insert(
            sig.clone(),
            Arc::new(ManifestFacts {
                subject: Some(subject.clone()),
                artifact_type: Some("application/vnd.dev.cosign".into()),
                ..Default::default()
            }),
        );
        facts.insert(lone.clone(), Arc::new(ManifestFacts::default()));
        let tagged = HashSet::from([index.clone(), subject.clone()]);
        assert_eq!(
            role_of(&child, &facts, &tagged),
            ManifestRole::Child {
                index: index.clone(),
                tagged: true
            },
            "the tagged index is named before an untagged one"
        );
        assert_eq!(
            role_of(&orphan_child, &facts, &tagged),
            ManifestRole::Child {
                index: orphan_index,
                tagged: false
            }
        );
        assert_eq!(
            role_of(&sig, &facts, &tagged),
            ManifestRole::Referrer {
                subject,
                artifact_type: Some("application/vnd.dev.cosign".into())
            }
        );
        assert_eq!(role_of(&lone, &facts, &tagged), ManifestRole::Unreferenced);
        assert_eq!(
            role_of(&digest(9), &facts, &tagged),
            ManifestRole::Unreferenced,
            "a manifest that could not be read points nowhere"
        );
    }
}
