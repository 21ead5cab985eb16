//! Manifests of cached repositories: served from storage while their tag is known current (checked
//! with the upstream every `proxy.tag_ttl_secs`), fetched, verified and stored otherwise, and served
//! stale when the upstream cannot confirm a stored copy. One fetch per repository and reference on
//! a node at a time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;

use super::{Freshness, Proxy, ProxyError, Target, upstream};
use crate::registry::{Algorithm, Digest, Reference, RepoName, Tag, manifest};
use crate::storage::manifests::ReferrerEntry;
use crate::storage::{CachedManifest, Storage, StorageError};
use upstream::UpstreamError;

/// A pull is recorded on storage at most this often per manifest and node.
const PULL_MARK_EVERY: Duration = Duration::from_secs(60);

impl Proxy {
    fn fetch_lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .manifest_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Drop entries nobody waits on, so the map stays as small as the fetches in flight.
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(key).or_default().clone()
    }

    /// The manifest `reference` of the target: from storage while current, else from upstream.
    /// Records the pull (for eviction: least recently pulled goes first).
    pub async fn manifest(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        let found = self.resolve(storage, t, reference).await?;
        self.note_pull(storage, &t.cached, &found.0, PULL_MARK_EVERY);
        Ok(found)
    }

    /// Records, off the request path, that `name@digest` was pulled: at most once per `every` per
    /// manifest on this node (a stamp any node may touch; its time is the latest pull anywhere).
    pub(crate) fn note_pull(
        &self,
        storage: &Storage,
        name: &RepoName,
        digest: &Digest,
        every: Duration,
    ) {
        let key = format!("{name}@{digest}");
        let due = {
            let mut marks = self.pulled.lock().unwrap_or_else(|p| p.into_inner());
            if marks.len() > 100_000 {
                marks.clear();
            }
            let now = std::time::Instant::now();
            match marks.get(&key) {
                Some(at) if now.duration_since(*at) < every => false,
                _ => {
                    marks.insert(key, now);
                    true
                }
            }
        };
        if due {
            let (storage, name, digest) = (storage.clone(), name.clone(), digest.clone());
            tokio::spawn(async move {
                if let Err(e) = storage.mark_pulled(&name, &digest).await {
                    tracing::debug!(error = %e, "cannot record a pull");
                }
            });
        }
    }

    async fn resolve(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        if let Some(literal) = &t.literal {
            match storage.resolve_manifest(literal, reference).await {
                Ok((d, m)) => return Ok((d, m, Freshness::Hit)),
                Err(StorageError::ManifestUnknown) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let local = match storage.resolve_manifest(&t.cached, reference).await {
            Ok(found) => Some(found),
            Err(StorageError::ManifestUnknown) => None,
            Err(e) => return Err(e.into()),
        };
        let tag = match reference {
            // Content-addressed: a stored copy is current forever.
            Reference::Digest(_) => {
                if let Some((d, m)) = local {
                    return Ok((d, m, Freshness::Hit));
                }
                None
            }
            Reference::Tag(tag) => {
                if local.is_some() && self.fresh(storage, &t.cached, tag).await? {
                    let (d, m) = local.ok_or(StorageError::ManifestUnknown)?;
                    return Ok((d, m, Freshness::Hit));
                }
                Some(tag)
            }
        };
        let _one_fetch = self
            .fetch_lock(format!("{}:{reference}", t.cached))
            .lock_owned()
            .await;
        // Whoever held the lock before may have fetched it.
        if let Some(tag) = tag
            && self.fresh(storage, &t.cached, tag).await?
            && let Ok((d, m)) = storage.resolve_manifest(&t.cached, reference).await
        {
            return Ok((d, m, Freshness::Hit));
        }
        let revalidated = match (tag, &local) {
            (Some(tag), Some((have, _))) => self.revalidate(storage, t, tag, have).await,
            _ => Ok(false),
        };
        match revalidated {
            Ok(true) => {
                let (d, m) = local.ok_or(StorageError::ManifestUnknown)?;
                return Ok((d, m, Freshness::Hit));
            }
            Ok(false) => {}
            Err(e) => return self.stale_or(local, t, reference, e),
        }
        match self.fetch_manifest(storage, t, reference).await {
            Ok(found) => Ok((found.0, found.1, Freshness::Fetched)),
            Err(ProxyError::Upstream(e)) => self.stale_or(local, t, reference, e),
            Err(e) => Err(e),
        }
    }

    /// Serves the stored copy when the upstream could not answer; the error when there is none.
    fn stale_or(
        &self,
        local: Option<(Digest, Arc<CachedManifest>)>,
        t: &Target,
        reference: &Reference,
        e: UpstreamError,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        match local {
            Some((d, m)) => {
                tracing::warn!(
                    repository = %t.cached, reference = %reference, error = %e,
                    "serving the cached manifest: the upstream could not confirm it"
                );
                Ok((d, m, Freshness::Stale))
            }
            None => Err(e.into()),
        }
    }

    async fn fresh(
        &self,
        storage: &Storage,
        name: &RepoName,
        tag: &Tag,
    ) -> Result<bool, ProxyError> {
        let at = storage.tag_validated_at(name, tag).await?;
        Ok(at.is_some_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age < self.tag_ttl)
        }))
    }

    /// Asks the upstream (HEAD) whether `tag` still names `have`; records the check when it does.
    async fn revalidate(
        &self,
        storage: &Storage,
        t: &Target,
        tag: &Tag,
        have: &Digest,
    ) -> Result<bool, UpstreamError> {
        let resp = t
            .upstream
            .manifest(Method::HEAD, &t.remote, &Reference::Tag(tag.clone()))
            .await?;
        let theirs = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if theirs.as_ref() != Some(have) {
            return Ok(false);
        }
        if let Err(e) = storage.mark_tag_validated(&t.cached, tag).await {
            tracing::warn!(error = %e, "cannot record a tag check");
        }
        Ok(true)
    }

    /// GETs a manifest from the upstream, verifies it, and stores it (with its tag).
    async fn fetch_manifest(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>), ProxyError> {
        let resp = t
            .upstream
            .manifest(Method::GET, &t.remote, reference)
            .await?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bad = |reason: String| ProxyError::BadManifest {
            upstream: t.upstream.name.clone(),
            reason,
        };
        // Refused on its declared length, or as soon as more arrives than a manifest may have.
        let bytes = upstream::read_capped(resp, self.max_manifest_bytes)
            .await
            .map_err(|e| match e {
                upstream::Capped::Read(e) => {
                    let e = UpstreamError::Unreachable(
                        t.upstream.name.clone(),
                        format!("reading a manifest: {e}"),
                    );
                    t.upstream.report(Some(&e));
                    e.into()
                }
                upstream::Capped::TooBig(n) => {
                    bad(format!("more than {n} bytes (limits.max_manifest_bytes)"))
                }
            })?;
        let digest = match reference {
            Reference::Digest(d) if d.algorithm() == Algorithm::Sha512 => {
                Digest::compute(Algorithm::Sha512, &bytes)
            }
            _ => Digest::sha256_of(&bytes),
        };
        if let Reference::Digest(want) = reference
            && *want != digest
        {
            return Err(bad(format!(
                "its digest is {digest}, not the {want} asked for"
            )));
        }
        let parsed =
            manifest::parse(content_type.as_deref(), &bytes).map_err(|e| bad(e.to_string()))?;
        let referrer = ReferrerEntry::of(&parsed, &digest, bytes.len());
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        storage
            .put_manifest(&t.cached, &digest, bytes.to_vec(), tag, referrer)
            .await?;
        if let Some(tag) = tag
            && let Err(e) = storage.mark_tag_validated(&t.cached, tag).await
        {
            tracing::warn!(error = %e, "cannot record a tag check");
        }
        tracing::info!(
            repository = %t.cached, reference = %reference, digest = %digest,
            upstream = %t.upstream.name, "manifest cached from upstream"
        );
        let (d, m) = storage
            .resolve_manifest(&t.cached, &Reference::Digest(digest))
            .await?;
        Ok((d, m))
    }
}
