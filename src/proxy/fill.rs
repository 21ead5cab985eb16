//! One blob fetch from an upstream into storage: the watch its followers on this node share, the
//! stream each follower reads, and the copy itself within its deadline, rate and size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::ProxyError;
use super::upstream::UpstreamError;
use crate::registry::{Digest, RepoName};
use crate::storage::{BlobStream, StorageError};

/// How the fetch of one blob on this node ended: `None` while it runs (or before one started).
pub(super) type Outcome = Option<Result<(), String>>;

/// What the clients following one blob's fetch on this node share. Each holds it, and so does the
/// fetch (so a client arriving while it runs joins the same one); the fetch sees how many others
/// do, and tells them how it ended.
pub struct FillWatch {
    pub(super) outcome: watch::Sender<Outcome>,
}

/// A fetch's failure, once it happens after the receiver last looked; never, otherwise.
pub(super) async fn failure(rx: &mut watch::Receiver<Outcome>) -> String {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(Err(msg)) = &*rx.borrow_and_update() {
            return msg.clone();
        }
    }
}

/// A fetch's failure since the receiver last looked, without waiting.
pub(super) fn failed_since(rx: &mut watch::Receiver<Outcome>) -> Option<String> {
    if !rx.has_changed().unwrap_or(false) {
        return None;
    }
    match &*rx.borrow_and_update() {
        Some(Err(msg)) => Some(msg.clone()),
        _ => None,
    }
}

/// A follower's stream of a fill: ends with the fetch's own error as soon as the fetch fails
/// (the storage stream alone would wait for bytes that never come), and keeps the fetch wanted
/// while the client reads.
pub(super) struct Watched {
    pub(super) inner: BlobStream,
    pub(super) outcome: watch::Receiver<Outcome>,
    pub(super) _interest: Arc<FillWatch>,
    pub(super) failed: bool,
}

impl Stream for Watched {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // Looked at on every poll: a follower waiting for bytes is polled every few tens of
        // milliseconds by its storage stream.
        if let Some(msg) = failed_since(&mut this.outcome) {
            this.failed = true;
            return Poll::Ready(Some(Err(std::io::Error::other(msg))));
        }
        this.inner.as_mut().poll_next(cx)
    }
}

/// What one blob fetch must respect.
pub(super) struct FillJob {
    pub(super) upstream: String,
    pub(super) digest: Digest,
    pub(super) name: RepoName,
    /// As the upstream declared it.
    pub(super) size: Option<u64>,
    pub(super) deadline: Duration,
    /// The span over which the rate is judged.
    pub(super) window: Duration,
    pub(super) min_rate: u64,
    pub(super) max_bytes: u64,
    pub(super) watch: Arc<FillWatch>,
}

impl FillJob {
    fn failed(&self, why: String) -> ProxyError {
        UpstreamError::Failed(self.upstream.clone(), why).into()
    }

    /// Whether the fetch goes on: while a client on this node follows it, and with none, when
    /// more than half of a blob of known size has arrived, so finishing costs less than what was fetched, and the next pull finds
    /// it stored. An endless or unsized body is never worth it.
    fn worth_finishing(&self, written: u64) -> bool {
        // Followers, besides this fetch's own hold.
        if Arc::strong_count(&self.watch) > 1 {
            return true;
        }
        self.size.is_some_and(|s| written.saturating_mul(2) > s)
    }
}

pub(super) fn too_big(upstream: &str, digest: &Digest, max: u64) -> UpstreamError {
    UpstreamError::Failed(
        upstream.to_string(),
        format!("blob {digest} is larger than {max} bytes (limits.max_blob_bytes); not fetched"),
    )
}

/// Copies the upstream's body into the fill as it arrives and publishes it, within the job's
/// deadline, rate and size, while someone follows it or it is worth finishing.
pub(super) async fn fill(
    mut lease: crate::storage::fill::FillLease,
    resp: reqwest::Response,
    job: &FillJob,
) -> Result<u64, ProxyError> {
    let mut body = resp.bytes_stream();
    let started = Instant::now();
    let deadline = started + job.deadline;
    let (mut window_start, mut window_bytes, mut written) = (started, 0u64, 0u64);
    loop {
        let check_at = (window_start + job.window).min(deadline);
        match tokio::time::timeout_at(check_at.into(), body.next()).await {
            Ok(Some(chunk)) => {
                let chunk = chunk.map_err(|e| {
                    UpstreamError::Unreachable(
                        job.upstream.clone(),
                        format!("reading blob {}: {e}", job.digest),
                    )
                })?;
                written += chunk.len() as u64;
                window_bytes += chunk.len() as u64;
                if job.max_bytes > 0 && written > job.max_bytes {
                    return Err(too_big(&job.upstream, &job.digest, job.max_bytes).into());
                }
                lease.write(chunk).await?;
            }
            Ok(None) => break,
            // Nothing arrived by the next check: judge the rate and the deadline below.
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(job.failed(format!(
                "blob {} took longer than {} s (proxy.fetch_deadline_secs); cut after {written} bytes",
                job.digest,
                job.deadline.as_secs()
            )));
        }
        let span = now.duration_since(window_start);
        if span >= job.window {
            let rate = window_bytes as f64 / span.as_secs_f64();
            if job.min_rate > 0 && rate < job.min_rate as f64 {
                return Err(job.failed(format!(
                    "blob {} arrived at {rate:.0} bytes/s, less than proxy.fetch_min_bytes_per_sec \
                     ({}); cut after {written} bytes",
                    job.digest, job.min_rate
                )));
            }
            (window_start, window_bytes) = (now, 0);
        }
        if !job.worth_finishing(written) {
            return Err(job.failed(format!(
                "blob {}: no client waits for it any more; stopped after {written} bytes",
                job.digest
            )));
        }
    }
    lease.finish(&job.name).await.map_err(|e| match e {
        StorageError::DigestMismatch { expected, computed } => job.failed(format!(
            "it sent blob {expected} with content whose digest is {computed}; not stored"
        )),
        e => e.into(),
    })
}
