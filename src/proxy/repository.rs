//! The repository facade the handlers read through, as Distribution's proxy blob store and proxy
//! manifest store wrap the local ones: a handler names a repository (with containerd's `ns`, if
//! any) and asks it once for a manifest, a blob, its tags or its referrers. Whether the answer comes
//! from the local store or through an upstream is decided here, and only here; so are the cache's
//! hit/miss metrics, counted in one place for manifests and blobs alike.
//!
//! Writes (pushes, deletes, uploads) always land on the name in the path, so they go to
//! [`Storage`] directly; the facade is the read side.

use std::sync::Arc;

use super::{Freshness, Proxy, ProxyError, Target};
use crate::registry::{Digest, Reference, RepoName};
use crate::storage::{BlobStream, CachedManifest, Storage, StorageError};

/// A pull of a pushed manifest is recorded on storage at most this often per manifest and node:
/// retention counts pulls in days, so an hour is plenty and keeps the writes few.
const LOCAL_PULL_MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every repository, local or cached: the local store and the upstreams that fill it.
pub struct Repositories {
    storage: Storage,
    proxy: Proxy,
}

impl Repositories {
    /// The facade over `storage`, with `proxy`'s upstreams ([`Proxy::none`]: every name is local).
    pub fn new(storage: Storage, proxy: Proxy) -> Repositories {
        Repositories { storage, proxy }
    }

    /// The upstreams behind the facade.
    pub(super) fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Whether no upstream is configured (every name is local).
    pub fn is_empty(&self) -> bool {
        self.proxy.is_empty()
    }

    /// Where `name` (with containerd's `ns` query, if any) leads; `None` when it is local only.
    /// The access rules judge the cached name too, before anything is read.
    pub fn target(&self, name: &RepoName, ns: Option<&str>) -> Option<Target> {
        self.proxy.target(name, ns)
    }

    /// Whether `name` is a repository of the cache (under an upstream's prefix).
    pub fn is_cached_repo(&self, name: &RepoName) -> bool {
        self.proxy.is_cached_repo(name)
    }

    /// The upstream whose namespace `name` is in, when pushes there are refused.
    pub fn refuses_push(&self, name: &RepoName) -> Option<String> {
        self.proxy.refuses_push(name)
    }

    /// Records a pull (a `GET`: a `HEAD` only asks whether it is there) of the pushed manifest
    /// `name@digest`, for retention's `keep_pulled_within_days`: coarse, and off the request's
    /// path.
    pub fn pulled(&self, name: &RepoName, digest: &Digest) {
        self.proxy
            .note_pull(&self.storage, name, digest, LOCAL_PULL_MARK_EVERY);
    }

    /// The repository a read of `name` (with containerd's `ns` query, if any) reaches.
    pub fn repository<'a>(&'a self, name: &'a RepoName, ns: Option<&str>) -> Repository<'a> {
        Repository {
            repos: self,
            name,
            target: self.proxy.target(name, ns),
        }
    }
}

/// One repository as a read sees it: local, or cached from an upstream (a bare name's own local
/// repository first).
pub struct Repository<'a> {
    repos: &'a Repositories,
    name: &'a RepoName,
    /// `None`: local only.
    target: Option<Target>,
}

/// Where a blob's bytes come from.
pub enum Blob<'a> {
    /// Stored and linked in the repository, of this size: served from storage (ranges and
    /// redirects included).
    Stored(u64),
    /// Not stored: the repository's upstream may have it.
    Upstream(UpstreamBlob<'a>),
}

/// A blob of a cached repository that is not stored yet.
pub struct UpstreamBlob<'a> {
    repos: &'a Repositories,
    target: Target,
    digest: &'a Digest,
}

impl<'a> Repository<'a> {
    /// The manifest `reference`, with how the cache served it (`None`: a local repository's).
    /// A cached one is served from storage while current, else fetched from the upstream.
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>, Option<Freshness>), ProxyError> {
        let storage = &self.repos.storage;
        let Some(t) = &self.target else {
            let (d, m) = storage.resolve_manifest(self.name, reference).await?;
            return Ok((d, m, None));
        };
        let (d, m, f) = self.repos.proxy.manifest(storage, t, reference).await?;
        let result = match f {
            Freshness::Hit => "hit",
            Freshness::Fetched => "miss",
            Freshness::Stale => "stale",
        };
        count(t, "manifest", result);
        Ok((d, m, Some(f)))
    }

    /// The blob `digest`: its size when stored (a cached repository links a blob stored for
    /// another one once its upstream confirms it has it), else the upstream's.
    pub async fn blob(&self, digest: &'a Digest) -> Result<Blob<'a>, ProxyError> {
        let storage = &self.repos.storage;
        let Some(t) = &self.target else {
            let size = storage
                .blob_size(self.name, digest)
                .await?
                .ok_or(StorageError::BlobUnknown)?;
            return Ok(Blob::Stored(size));
        };
        match self.repos.proxy.stored_blob(storage, t, digest).await? {
            Some((_, size)) => {
                count(t, "blob", "hit");
                Ok(Blob::Stored(size))
            }
            None => {
                count(t, "blob", "miss");
                Ok(Blob::Upstream(UpstreamBlob {
                    repos: self.repos,
                    target: t.clone(),
                    digest,
                }))
            }
        }
    }

    /// The repository's tags. A cached repository lists the tags pulled through this registry
    /// (the upstream's full list is the upstream's business); a bare name's own repository comes
    /// first.
    pub async fn tags(&self) -> Result<Arc<[String]>, ProxyError> {
        let storage = &self.repos.storage;
        let Some(t) = &self.target else {
            return Ok(storage.list_tags(self.name).await?);
        };
        let mut found = Err(StorageError::NameUnknown);
        for n in t.literal.iter().chain(std::iter::once(&t.cached)) {
            found = storage.list_tags(n).await;
            if found.is_ok() {
                break;
            }
        }
        Ok(found?)
    }

    /// The descriptors of the manifests whose subject is `digest` (of the cached repository, for
    /// a name that leads to one).
    pub async fn referrers(&self, digest: &Digest) -> Result<Vec<serde_json::Value>, ProxyError> {
        let stored_as = self.target.as_ref().map_or(self.name, |t| &t.cached);
        Ok(self.repos.storage.list_referrers(stored_as, digest).await?)
    }
}

impl UpstreamBlob<'_> {
    /// Its size as the upstream declares it (HEAD), without fetching it.
    pub async fn size(&self) -> Result<u64, ProxyError> {
        self.repos
            .proxy
            .upstream_blob_size(&self.target, self.digest)
            .await
    }

    /// Starts the one upstream fetch of it (unless one is running here or on another node) and
    /// streams it as it is stored, with its size.
    pub async fn fetch(&self) -> Result<(u64, BlobStream), ProxyError> {
        self.repos
            .proxy
            .fetch_blob(&self.repos.storage, &self.target, self.digest)
            .await
    }
}

/// Counts one answer of the pull-through cache: the one place manifests and blobs alike are
/// counted (`result`: hit, miss or stale), for the metrics and the status board.
fn count(t: &Target, kind: &'static str, result: &'static str) {
    let u = &t.upstream;
    crate::metrics::get().cache(&u.name, kind, result);
    u.board.update_upstream(&u.name, |r| match result {
        "hit" => r.hits += 1,
        "miss" => r.misses += 1,
        // Only a tag can be stale: a digest's stored copy is current forever.
        _ => r.stale_served += 1,
    });
}
