//! Repository facts in a bucket, for the web UI: the same facts as the filesystem's (a repository
//! links a blob when its `_layers` or `_manifests/revisions` holds a link object for it), read
//! with two listings a repository (`_layers/` and `_manifests/`, which also carry each link's
//! time written) and a HEAD for each blob size not known yet.
//!
//! A listing carries no ETag or modification time of its own to validate a kept copy against, so
//! a repository's facts are kept for [`S3_FACTS_FOR`] and then read again: a push through another
//! node shows within that time. Link objects are taken at their names, not read: a GET for each
//! would cost a round trip per blob.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;
use uuid::Uuid;

use super::S3Driver;
use super::client::Object;
use crate::registry::{Digest, RepoName, Tag};
use crate::storage::Result;
use crate::storage::summary::{
    BlobSizes, Measured, RepoFacts, S3_FACTS_FOR, TagInfo, UploadInfo, blob_key,
};

/// Repositories whose facts are kept; past it the cache starts over (bounded memory: about 150
/// bytes an entry).
const MAX_KEPT: usize = 100_000;
/// Repositories (or blob HEADs, or tag links) read at once.
const IN_FLIGHT: usize = 16;

/// Repositories' facts as last listed, and when.
#[derive(Default)]
pub(super) struct Summaries {
    repos: HashMap<RepoName, (Instant, RepoFacts)>,
}

/// What a listing of a repository's `_manifests/` holds.
#[derive(Default)]
struct ManifestKeys {
    /// Revisions and when each link was written.
    revisions: Vec<(Digest, SystemTime)>,
    /// Every tag, with the key and time of its current link if it has one.
    tags: BTreeMap<String, Option<(String, SystemTime)>>,
}

/// The digest a `sha256/<hex>/link` key (relative to a links directory) is the link of.
fn linked_digest(rel: &str) -> Option<Digest> {
    let hex = rel.strip_prefix("sha256/")?.strip_suffix("/link")?;
    Digest::sha256_hex(hex)
}

/// Sorts the objects of a `_manifests/` listing (keys under `prefix`) into revisions and tags.
fn manifest_keys(prefix: &str, objects: &[Object]) -> ManifestKeys {
    let mut out = ManifestKeys::default();
    for o in objects {
        let Some(rel) = o.key.strip_prefix(prefix) else {
            continue;
        };
        if let Some(d) = rel.strip_prefix("revisions/").and_then(linked_digest) {
            out.revisions.push((d, o.modified));
        } else if let Some((tag, rest)) = rel.strip_prefix("tags/").and_then(|r| r.split_once('/'))
            && tag.parse::<Tag>().is_ok()
        {
            let current = out.tags.entry(tag.to_string()).or_default();
            if rest == "current/link" {
                *current = Some((o.key.clone(), o.modified));
            }
        }
    }
    out
}

impl S3Driver {
    fn kept(&self) -> std::sync::MutexGuard<'_, Summaries> {
        self.summaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The facts of each of `names`, in order, read concurrently; facts listed less than
    /// [`S3_FACTS_FOR`] ago are reused. `with_links` (the census) lists every repository afresh
    /// and returns the blobs each links.
    pub async fn repo_facts(
        &self,
        names: &[RepoName],
        sizes: &Arc<BlobSizes>,
        with_links: bool,
    ) -> Vec<Result<Measured>> {
        // Owned items: a stream of borrowed ones is not `Send` for every lifetime a spawned
        // census would need.
        futures_util::stream::iter(names.iter().cloned())
            .map(|n| async move { self.facts_of(&n, sizes, with_links).await })
            .buffered(IN_FLIGHT)
            .collect()
            .await
    }

    async fn facts_of(
        &self,
        name: &RepoName,
        sizes: &BlobSizes,
        with_links: bool,
    ) -> Result<Measured> {
        if !with_links
            && let Some((at, facts)) = self.kept().repos.get(name)
            && at.elapsed() < S3_FACTS_FOR
        {
            return Ok(Measured {
                facts: facts.clone(),
                links: None,
            });
        }
        let listed_at = Instant::now();
        let l = &self.layout;
        let (layers_dir, manifests_dir) = (
            Self::dir_key(&l.layers_dir(name)),
            Self::dir_key(&l.manifests_dir(name)),
        );
        let (layers, manifests) = tokio::join!(
            self.client.list(&layers_dir, false),
            self.client.list(&manifests_dir, false)
        );
        let (layers, manifests) = (layers?, manifests?);
        let keys = manifest_keys(&manifests_dir, &manifests.objects);
        let last_push = keys
            .revisions
            .iter()
            .map(|(_, at)| *at)
            .chain(keys.tags.values().flatten().map(|(_, at)| *at))
            .max();
        let mut seen = HashSet::new();
        let linked: Vec<Digest> = layers
            .objects
            .iter()
            .filter_map(|o| o.key.strip_prefix(&layers_dir).and_then(linked_digest))
            .chain(keys.revisions.iter().map(|(d, _)| d.clone()))
            .filter(|d| seen.insert(blob_key(d)))
            .collect();
        let measured: Vec<Result<Option<u64>>> = futures_util::stream::iter(linked.iter().cloned())
            .map(|d| async move {
                let key = blob_key(&d);
                if let Some(n) = sizes.get(&key) {
                    return Ok(Some(n));
                }
                let n = self.blob_size_global(&d).await?;
                if let Some(n) = n {
                    sizes.insert(key, n);
                }
                Ok(n)
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let mut size = 0u64;
        let mut links = Vec::new();
        for (d, n) in linked.iter().zip(measured) {
            // Linked but not stored (removed behind registryd's back): nothing to count.
            let Some(n) = n? else { continue };
            size = size.saturating_add(n);
            if with_links {
                links.push((blob_key(d), n));
            }
        }
        let facts = RepoFacts {
            tags: keys.tags.len(),
            last_push,
            size,
        };
        let mut kept = self.kept();
        // The census refreshes what pages keep, without filling the cache with every repository.
        if !with_links || kept.repos.contains_key(name) {
            if kept.repos.len() >= MAX_KEPT && !kept.repos.contains_key(name) {
                kept.repos.clear();
            }
            kept.repos.insert(name.clone(), (listed_at, facts.clone()));
        }
        drop(kept);
        Ok(Measured {
            facts,
            links: with_links.then_some(links),
        })
    }

    /// The tags of `name`, each with its digest (its link read) and when its link was written.
    pub async fn tag_details(&self, name: &RepoName) -> Result<Vec<TagInfo>> {
        Ok(self.manifest_listing(name, false).await?.0)
    }

    /// The tags of `name` (as [`tag_details`](Self::tag_details)) and its manifest revisions with
    /// when each was linked.
    pub async fn manifest_links(
        &self,
        name: &RepoName,
    ) -> Result<(Vec<TagInfo>, Vec<(Digest, SystemTime)>)> {
        self.manifest_listing(name, true).await
    }

    /// One listing of `_manifests/` (or of `_manifests/tags/` alone, without `revisions`), then
    /// the tags' links read concurrently.
    async fn manifest_listing(
        &self,
        name: &RepoName,
        revisions: bool,
    ) -> Result<(Vec<TagInfo>, Vec<(Digest, SystemTime)>)> {
        let l = &self.layout;
        let prefix = Self::dir_key(&l.manifests_dir(name));
        let listed = if revisions {
            self.client.list(&prefix, false).await?
        } else {
            self.client
                .list(&Self::dir_key(&l.tags_dir(name)), false)
                .await?
        };
        let keys = manifest_keys(&prefix, &listed.objects);
        let tags: Vec<Result<TagInfo>> = futures_util::stream::iter(keys.tags)
            .map(|(tag, current)| async move {
                let (digest, pushed) = match current {
                    Some((key, at)) => (self.read_link_key(&key).await?, Some(at)),
                    None => (None, None),
                };
                Ok(TagInfo {
                    tag,
                    digest,
                    pushed,
                })
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        Ok((tags.into_iter().collect::<Result<_>>()?, keys.revisions))
    }

    /// The digest a link object names; `None` when it is gone or does not hold a digest.
    async fn read_link_key(&self, key: &str) -> Result<Option<Digest>> {
        Ok(self
            .client
            .get(key)
            .await?
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok()))
    }

    /// Every upload session in the bucket: its repository, bytes acknowledged so far (from its
    /// state object), start (its `startedat` object's time) and last write (its newest object).
    pub async fn uploads_in_progress(&self) -> Result<Vec<UploadInfo>> {
        let repos = self.upload_repositories().await?;
        let per_repo: Vec<Result<Vec<UploadInfo>>> = futures_util::stream::iter(repos)
            .map(|r| async move { self.uploads_of(&r).await })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in per_repo {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn uploads_of(&self, repo: &RepoName) -> Result<Vec<UploadInfo>> {
        let l = &self.layout;
        let prefix = Self::dir_key(&l.uploads_dir(repo));
        let listed = self.client.list(&prefix, false).await?;
        // Per upload: its objects' newest time, its start, whether it has a state object.
        let mut sessions: BTreeMap<Uuid, (SystemTime, Option<SystemTime>)> = BTreeMap::new();
        for o in &listed.objects {
            let Some((id, rest)) = o.key.strip_prefix(&prefix).and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let Ok(id) = Uuid::try_parse(id) else {
                continue;
            };
            let s = sessions.entry(id).or_insert((o.modified, None));
            s.0 = s.0.max(o.modified);
            if rest == "startedat" {
                s.1 = Some(o.modified);
            }
        }
        let infos: Vec<UploadInfo> = futures_util::stream::iter(sessions)
            .map(|(id, (last_write, started))| async move {
                UploadInfo {
                    repository: repo.clone(),
                    id,
                    last_write,
                    bytes: self.upload_bytes(repo, &id).await,
                    started,
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        Ok(infos)
    }

    /// The bytes an upload acknowledged, from its state object (`offset`); `None` when the state
    /// is missing or unreadable.
    async fn upload_bytes(&self, repo: &RepoName, id: &Uuid) -> Option<u64> {
        let key = Self::key(&self.layout.upload_s3_state(repo, id));
        let bytes = self.client.get(&key).await.ok()??;
        let state: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        state.get("offset")?.as_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, secs: u64) -> Object {
        Object {
            key: key.to_string(),
            size: 71,
            modified: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_manifests_listing_is_sorted_into_revisions_and_tags() {
        let d = Digest::sha256_of(b"m");
        let hex = d.hex();
        let p = "p/docker/registry/v2/repositories/a/_manifests/";
        let objects = [
            obj(&format!("{p}revisions/sha256/{hex}/link"), 10),
            obj(&format!("{p}revisions/sha256/nothex/link"), 11),
            obj(&format!("{p}tags/v1/current/link"), 20),
            obj(&format!("{p}tags/v1/index/sha256/{hex}/link"), 5),
            obj(&format!("{p}tags/old/index/sha256/{hex}/link"), 6),
            obj(&format!("{p}tags/-bad/current/link"), 7),
        ];
        let k = manifest_keys(p, &objects);
        assert_eq!(k.revisions, [(d, objects[0].modified)]);
        assert_eq!(k.tags.len(), 2, "{:?}", k.tags.keys());
        assert_eq!(
            k.tags["v1"],
            Some((objects[2].key.clone(), objects[2].modified))
        );
        assert_eq!(k.tags["old"], None, "a tag without a current link");
    }
}
