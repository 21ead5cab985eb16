//! Blobs of cached repositories: a stored blob is linked into the cached repository (once the
//! upstream confirms the repository has it), a missing one is fetched once per digest across the
//! cluster and streamed to every client that asks for it meanwhile.

use std::sync::{Arc, Weak};

use http::Method;
use tokio::sync::watch;

use super::fill::{FillJob, FillWatch, Watched, failed_since, failure, fill, too_big};
use super::{Proxy, ProxyError, Target, upstream};
use crate::registry::{Algorithm, Digest, RepoName};
use crate::storage::{BlobStream, Storage, StorageError};
use upstream::UpstreamError;

impl Proxy {
    /// The size of a blob of the target, linking it into the cached repository when it is stored
    /// but not yet linked there (a layer shared with another image). `None`: not stored; the
    /// caller fetches it.
    pub async fn stored_blob(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
    ) -> Result<Option<(RepoName, u64)>, ProxyError> {
        for name in t.literal.iter().chain(std::iter::once(&t.cached)) {
            if let Some(size) = storage.blob_size(name, digest).await? {
                return Ok(Some((name.clone(), size)));
            }
        }
        let Some(size) = storage.blob_size_global(digest).await? else {
            return Ok(None);
        };
        // Stored for another repository: serve it here only if the upstream has it here, so no
        // digest reaches through this repository to a layer it does not hold.
        head_blob(t, digest).await?;
        storage.link_blob(&t.cached, digest).await?;
        Ok(Some((t.cached.clone(), size)))
    }

    /// The size of a blob the upstream has (HEAD), without fetching it.
    pub async fn upstream_blob_size(&self, t: &Target, digest: &Digest) -> Result<u64, ProxyError> {
        let resp = head_blob(t, digest).await?;
        // The header, not `content_length()`: that is the body's size, 0 for a HEAD.
        upstream::declared_length(resp.headers()).ok_or_else(|| {
            UpstreamError::Failed(
                t.upstream.name.clone(),
                format!("HEAD of {digest} carried no size"),
            )
            .into()
        })
    }

    /// Streams a blob that is not stored: starts the one upstream fetch for it (unless one is
    /// running here or on another node) and follows it. A fetch that fails on this node fails
    /// every client following it at once, with its reason (a digest mismatch names both digests).
    pub async fn fetch_blob(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
    ) -> Result<(u64, BlobStream), ProxyError> {
        if digest.algorithm() != Algorithm::Sha256 {
            return Err(StorageError::BlobUnknown.into());
        }
        // Held until the client is done: while anyone holds it, the fetch goes on.
        let watch = self.fill_watch(digest);
        let mut outcome = watch.outcome.subscribe();
        outcome.borrow_and_update();
        // A fetch that ends without the blob (it failed, or its node died) lets the next one try.
        for _ in 0..3 {
            self.lead_fetch(storage, t, digest, &watch).await?;
            // A fetch without a size is followed once it is stored: wait as long as it may take.
            let followed = tokio::select! {
                r = storage.follow_fill(digest, self.fetch_deadline + self.timeout, self.timeout * 3) => r?,
                msg = failure(&mut outcome) => return Err(UpstreamError::Failed(t.upstream.name.clone(), msg).into()),
            };
            if let Some((size, stream)) = followed {
                return Ok((
                    size,
                    Box::pin(Watched {
                        inner: stream,
                        outcome,
                        _interest: watch,
                        failed: false,
                    }),
                ));
            }
            if let Some(msg) = failed_since(&mut outcome) {
                return Err(UpstreamError::Failed(t.upstream.name.clone(), msg).into());
            }
        }
        Err(UpstreamError::Failed(
            t.upstream.name.clone(),
            format!("fetching {digest} failed three times"),
        )
        .into())
    }

    /// The watch of the fetch of `digest` on this node, shared by everyone following it.
    fn fill_watch(&self, digest: &Digest) -> Arc<FillWatch> {
        let mut map = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(digest).and_then(Weak::upgrade) {
            return w;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(FillWatch {
            outcome: watch::Sender::new(None),
        });
        map.insert(digest.clone(), Arc::downgrade(&w));
        w
    }

    /// Starts the upstream fetch of a blob unless one is running (here or on another node).
    async fn lead_fetch(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
        watch: &Arc<FillWatch>,
    ) -> Result<(), ProxyError> {
        let Some(mut lease) = storage.try_lead_fill(digest).await? else {
            // Another fetch is filling it, perhaps for another repository: follow it only if the
            // upstream has the blob in this one (as `stored_blob` asks), so no digest reaches
            // through a repository the client may pull to bytes it does not hold.
            head_blob(t, digest).await?;
            return Ok(());
        };
        {
            // Ask first, so a missing blob or a refusal reaches this client as what it is. The
            // answer's head must come within the upstream timeout: the body has its own deadline
            // and rate, and a head dripped slowly would hold the fill lock outside both.
            let resp = tokio::time::timeout(
                self.timeout,
                t.upstream.send(
                    Method::GET,
                    &t.remote,
                    &format!("blobs/{digest}"),
                    None,
                    false,
                ),
            )
            .await
            .map_err(|_| {
                let e = UpstreamError::Unreachable(
                    t.upstream.name.clone(),
                    format!("no answer to GET of {digest} within {:?}", self.timeout),
                );
                t.upstream.report(Some(&e));
                e
            })??;
            let size = upstream::declared_length(resp.headers());
            if let Some(size) = size
                && self.max_blob_bytes > 0
                && size > self.max_blob_bytes
            {
                return Err(too_big(&t.upstream.name, digest, self.max_blob_bytes).into());
            }
            lease.begin(size).await?;
            watch.outcome.send_replace(None);
            let job = FillJob {
                upstream: t.upstream.name.clone(),
                digest: digest.clone(),
                name: t.cached.clone(),
                size,
                deadline: self.fetch_deadline,
                window: self.timeout,
                min_rate: self.min_rate,
                max_bytes: self.max_blob_bytes,
                watch: watch.clone(),
            };
            tokio::spawn(async move {
                let result = fill(lease, resp, &job).await;
                match &result {
                    Ok(n) => tracing::info!(
                        repository = %job.name, digest = %job.digest, bytes = n,
                        upstream = %job.upstream, "blob cached from upstream"
                    ),
                    Err(e) => tracing::warn!(
                        repository = %job.name, digest = %job.digest, upstream = %job.upstream,
                        error = %e, "fetching a blob from upstream failed"
                    ),
                }
                // What followers are told: the upstream's part as it is; a fault of this node's
                // storage only as such (its detail is in the log line above, not for clients,
                // and not the upstream's doing).
                let outcome = result.map(|_| ()).map_err(|e| match e {
                    ProxyError::Storage(_) => {
                        "storing it on this registry failed (the registry's log has the details)"
                            .to_string()
                    }
                    e => e.to_string(),
                });
                job.watch.outcome.send_replace(Some(outcome));
            });
        }
        Ok(())
    }
}

/// HEAD of `digest` in `t`'s upstream repository: an error unless the upstream holds the blob
/// there; the answer's headers carry its size.
async fn head_blob(t: &Target, digest: &Digest) -> Result<reqwest::Response, UpstreamError> {
    t.upstream
        .send(
            Method::HEAD,
            &t.remote,
            &format!("blobs/{digest}"),
            None,
            true,
        )
        .await
}
