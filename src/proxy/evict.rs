//! Cache size limit: when the blobs of cached repositories exceed `proxy.max_cache_bytes`, the
//! least recently pulled cached images go first, until the cache fits.
//!
//! Never removed: anything in a repository outside the upstreams' namespaces (pushes), a blob that
//! any stored manifest still references (local or cached), a blob linked by a local repository, and
//! a manifest that a stored index lists (the index goes first). One pass at a time across the
//! cluster (a lock on the shared storage); a pass that finds the lock held skips its turn.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use super::Repositories;
use super::totals::{CacheTotals, Tally};
use crate::registry::{Digest, Reference, RepoName, manifest};
use crate::storage::{Storage, StorageError};

/// What one pass did.
#[derive(Debug, Default, PartialEq)]
pub struct EvictReport {
    pub cache_bytes_before: u64,
    pub cache_bytes_after: u64,
    pub manifests_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// What the cache holds per upstream after the pass (also posted on the board).
    pub totals: Vec<CacheTotals>,
}

struct Revision {
    repo: RepoName,
    digest: Digest,
    pulled: SystemTime,
    /// What it references: config, layers, child manifests.
    refs: Vec<Digest>,
    /// Its subject, whose referrers list names it.
    subject: Option<Digest>,
    gone: bool,
}

/// Runs one eviction pass against `limit` bytes; `None` when another node's pass holds the lock.
/// `proxy` (the facade the handlers read through) says which repositories are the cache's. What
/// the cache holds afterwards is counted from the same walk and posted on the board.
pub async fn evict(
    proxy: &Repositories,
    storage: &Storage,
    limit: u64,
) -> Result<Option<EvictReport>, StorageError> {
    let Some(lock) = storage.try_lock("proxy-evict").await? else {
        return Ok(None);
    };
    let repos = storage.all_repositories().await?;
    // Reference counts over every stored manifest, local and cached.
    let mut refcount: HashMap<Digest, usize> = HashMap::new();
    // Blobs a local repository links: never removed.
    let mut pinned: HashSet<Digest> = HashSet::new();
    // Cached repositories that link each blob (as a layer or a revision).
    let mut linked_in: HashMap<Digest, Vec<RepoName>> = HashMap::new();
    let mut revisions = Vec::new();
    for repo in &repos {
        let inv = storage.inventory(repo).await?;
        let cached = proxy.is_cached_repo(repo);
        for (d, linked_at) in &inv.revisions {
            let (refs, subject) = match storage
                .resolve_manifest(repo, &Reference::Digest(d.clone()))
                .await
            {
                Ok((_, m)) => references(&m.bytes),
                // Removed meanwhile (another node), or its bytes are missing: it references nothing.
                Err(StorageError::ManifestUnknown) => (Vec::new(), None),
                Err(e) => return Err(e),
            };
            for r in &refs {
                *refcount.entry(r.clone()).or_default() += 1;
            }
            if cached {
                linked_in.entry(d.clone()).or_default().push(repo.clone());
                let pulled = storage.pulled_at(repo, d).await?.unwrap_or(*linked_at);
                revisions.push(Revision {
                    repo: repo.clone(),
                    digest: d.clone(),
                    pulled,
                    refs,
                    subject,
                    gone: false,
                });
            } else {
                pinned.insert(d.clone());
            }
        }
        for d in &inv.layers {
            if cached {
                linked_in.entry(d.clone()).or_default().push(repo.clone());
            } else {
                pinned.insert(d.clone());
            }
        }
    }
    let mut size_of: HashMap<Digest, u64> = HashMap::new();
    for d in linked_in.keys() {
        if !pinned.contains(d) {
            let size = storage.blob_size_global(d).await?.unwrap_or(0);
            size_of.insert(d.clone(), size);
        }
    }
    let mut report = EvictReport {
        cache_bytes_before: size_of.values().sum(),
        ..Default::default()
    };
    let mut cache_bytes = report.cache_bytes_before;
    revisions.sort_by_key(|r| r.pulled);
    // An index's children become removable once the index is gone: go round until nothing moves.
    let mut progress = true;
    while cache_bytes > limit && progress {
        progress = false;
        for rev in revisions.iter_mut() {
            if cache_bytes <= limit {
                break;
            }
            if rev.gone || refcount.get(&rev.digest).copied().unwrap_or(0) > 0 {
                continue; // removed already, or a stored index lists it
            }
            // The same removal as a DELETE by digest: the tags that name it now, its referrer
            // entry, then the revision.
            match storage
                .delete_manifest(&rev.repo, &rev.digest, rev.subject.clone())
                .await
            {
                Ok(()) | Err(StorageError::ManifestUnknown) => {}
                Err(e) => return Err(e),
            }
            rev.gone = true;
            report.manifests_removed += 1;
            progress = true;
            tracing::info!(
                repository = %rev.repo, digest = %rev.digest,
                "cache over its limit: removed the least recently pulled image"
            );
            drop_link(&mut linked_in, &rev.digest, &rev.repo);
            for r in &rev.refs {
                if let Some(c) = refcount.get_mut(r) {
                    *c = c.saturating_sub(1);
                }
            }
            let mut candidates = rev.refs.clone();
            candidates.push(rev.digest.clone());
            for d in candidates {
                if refcount.get(&d).copied().unwrap_or(0) > 0 || pinned.contains(&d) {
                    continue;
                }
                if d != rev.digest {
                    match storage.unlink_blob(&rev.repo, &d).await {
                        Ok(()) | Err(StorageError::BlobUnknown) => {}
                        Err(e) => return Err(e),
                    }
                    drop_link(&mut linked_in, &d, &rev.repo);
                }
                if linked_in.get(&d).is_some_and(|l| !l.is_empty()) {
                    continue; // another cached repository still holds it
                }
                let freed = storage.delete_blob_if_unlinked(&d, repos.clone()).await?;
                if freed > 0 {
                    report.blobs_removed += 1;
                    report.bytes_freed += freed;
                    let counted = size_of.remove(&d).unwrap_or(freed);
                    cache_bytes = cache_bytes.saturating_sub(counted);
                }
            }
        }
    }
    report.cache_bytes_after = cache_bytes;
    report.totals = totals(proxy, storage, &revisions, &linked_in, &size_of).await?;
    proxy.post_totals(&report.totals);
    // Released before returning, not in the background as a drop would (a bucket's lease): the
    // next pass, on any node, finds it free.
    lock.release().await;
    Ok(Some(report))
}

/// The cache's totals after a pass, from what it walked: the revisions still there and the links
/// still held, with the sizes it already read.
async fn totals(
    proxy: &Repositories,
    storage: &Storage,
    revisions: &[Revision],
    linked_in: &HashMap<Digest, Vec<RepoName>>,
    size_of: &HashMap<Digest, u64>,
) -> Result<Vec<CacheTotals>, StorageError> {
    let mut manifests: BTreeMap<&RepoName, Vec<(&Digest, &[Digest])>> = BTreeMap::new();
    for r in revisions.iter().filter(|r| !r.gone) {
        manifests
            .entry(&r.repo)
            .or_default()
            .push((&r.digest, r.refs.as_slice()));
    }
    let mut linked: BTreeMap<&RepoName, Vec<&Digest>> = BTreeMap::new();
    for (d, repos) in linked_in {
        for repo in repos {
            linked.entry(repo).or_default().push(d);
        }
    }
    let mut tally = Tally::default();
    for (repo, blobs) in &linked {
        if let Some(upstream) = proxy.cache_owner(repo) {
            let listed = manifests.get(repo).map(Vec::as_slice).unwrap_or_default();
            tally.repository(&upstream, listed, blobs.iter().copied());
        }
    }
    tally.finish(proxy, storage, size_of).await
}

fn drop_link(linked_in: &mut HashMap<Digest, Vec<RepoName>>, d: &Digest, repo: &RepoName) {
    if let Some(list) = linked_in.get_mut(d) {
        list.retain(|r| r != repo);
    }
}

/// The blobs and child manifests a manifest references, and its subject (nothing for what does
/// not parse).
fn references(bytes: &[u8]) -> (Vec<Digest>, Option<Digest>) {
    manifest::references(bytes).unwrap_or_default()
}
