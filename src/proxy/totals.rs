//! What the cache holds, per upstream: its images and the bytes of the blobs they link, posted on
//! the status board for the web UI's upstreams page. Counted by the eviction pass from what it
//! walked anyway (see `evict`), or, on a node that runs none (no `proxy.max_cache_bytes`, or
//! another node held the pass's lock), by [`count`], a walk of the cached repositories alone.
//!
//! An image is a manifest no other manifest of its repository lists: an index counts once, its
//! per-platform children do not; a signature or SBOM attached to an image counts (it is its own
//! artifact). Bytes are of every blob the upstream's repositories link (layers, configs and the
//! manifests themselves), each counted once per upstream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use super::Repositories;
use crate::registry::{Digest, Reference, RepoName, manifest};
use crate::storage::{Storage, StorageError};

/// One upstream's share of the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheTotals {
    pub upstream: String,
    pub images: u64,
    pub bytes: u64,
}

/// Totals being gathered, repository by repository.
#[derive(Default)]
pub(super) struct Tally {
    /// Per upstream: images, and every blob linked (counted once).
    per: BTreeMap<String, (u64, HashSet<Digest>)>,
}

impl Tally {
    /// Counts one cached repository of `upstream`: its manifests, each with what it references,
    /// and the blobs it links besides them (its layers).
    pub(super) fn repository<'a>(
        &mut self,
        upstream: &str,
        manifests: &[(&'a Digest, &'a [Digest])],
        layers: impl IntoIterator<Item = &'a Digest>,
    ) {
        let listed: HashSet<&Digest> = manifests.iter().flat_map(|(_, r)| r.iter()).collect();
        let entry = self.per.entry(upstream.to_string()).or_default();
        entry.0 += manifests
            .iter()
            .filter(|(d, _)| !listed.contains(d))
            .count() as u64;
        entry.1.extend(manifests.iter().map(|(d, _)| (*d).clone()));
        entry.1.extend(layers.into_iter().cloned());
    }

    /// The totals of every upstream of `repos` (those with nothing cached at zero), with the
    /// blobs' sizes from `known` or else from the storage (a blob gone meanwhile counts nothing).
    pub(super) async fn finish(
        mut self,
        repos: &Repositories,
        storage: &Storage,
        known: &HashMap<Digest, u64>,
    ) -> Result<Vec<CacheTotals>, StorageError> {
        let mut out = Vec::new();
        for upstream in repos.upstream_names() {
            let (images, blobs) = self.per.remove(&upstream).unwrap_or_default();
            let mut bytes = 0;
            for d in &blobs {
                bytes += match known.get(d) {
                    Some(size) => *size,
                    None => storage.blob_size_global(d).await?.unwrap_or(0),
                };
            }
            out.push(CacheTotals {
                upstream,
                images,
                bytes,
            });
        }
        Ok(out)
    }
}

/// Counts what the cache holds per upstream, walking the cached repositories (every manifest is
/// read, to tell an index's children from images), and posts it on the board.
pub async fn count(
    repos: &Repositories,
    storage: &Storage,
) -> Result<Vec<CacheTotals>, StorageError> {
    let mut tally = Tally::default();
    for name in storage.all_repositories().await? {
        let Some(upstream) = repos.cache_owner(&name) else {
            continue;
        };
        let inv = storage.inventory(&name).await?;
        let mut manifests = Vec::new();
        for (d, _) in &inv.revisions {
            manifests.push((d, children(storage, &name, d).await?));
        }
        let listed: Vec<(&Digest, &[Digest])> =
            manifests.iter().map(|(d, r)| (*d, r.as_slice())).collect();
        tally.repository(&upstream, &listed, &inv.layers);
    }
    let totals = tally.finish(repos, storage, &HashMap::new()).await?;
    repos.post_totals(&totals);
    Ok(totals)
}

/// What the manifest `d` of `name` references (nothing when it is gone meanwhile, or does not
/// parse: it then lists no image).
async fn children(
    storage: &Storage,
    name: &RepoName,
    d: &Digest,
) -> Result<Vec<Digest>, StorageError> {
    match storage
        .resolve_manifest(name, &Reference::Digest(d.clone()))
        .await
    {
        Ok((_, m)) => Ok(manifest::references(&m.bytes)
            .map(|(refs, _)| refs)
            .unwrap_or_default()),
        Err(StorageError::ManifestUnknown) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl Repositories {
    /// The upstream whose cache `name` is in, by name.
    pub fn cache_owner(&self, name: &RepoName) -> Option<String> {
        self.proxy().cache_owner(name).map(|u| u.name.clone())
    }

    /// Every configured upstream's name.
    pub fn upstream_names(&self) -> Vec<String> {
        self.proxy().upstream_names()
    }

    /// Posts what a pass counted on the board, dated now.
    pub(super) fn post_totals(&self, totals: &[CacheTotals]) {
        let now = SystemTime::now();
        let board = self.proxy().board();
        for t in totals {
            board.update_upstream(&t.upstream, |u| {
                u.cached_images = t.images;
                u.cached_bytes = t.bytes;
                u.totals_at = Some(now);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn an_index_counts_once_and_every_blob_once_per_upstream() {
        let (index, amd, arm, cfg, layer, sig) = (d(1), d(2), d(3), d(4), d(5), d(6));
        let index_refs = [amd.clone(), arm.clone()];
        let image_refs = [cfg.clone(), layer.clone()];
        let mut t = Tally::default();
        t.repository(
            "docker.io",
            &[
                (&index, &index_refs[..]),
                (&amd, &image_refs[..]),
                (&arm, &image_refs[..]),
                (&sig, &[][..]),
            ],
            [&cfg, &layer],
        );
        // Another repository of the same upstream sharing the layer.
        t.repository("docker.io", &[(&amd, &image_refs[..])], [&cfg, &layer]);
        let (images, blobs) = &t.per["docker.io"];
        // The index and the signature; then the second repository's lone image.
        assert_eq!(*images, 3);
        assert_eq!(blobs.len(), 6);
    }
}
