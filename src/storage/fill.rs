//! Cache fills: a blob fetched from an upstream registry is written once, by one node, while any
//! number of clients on any node read it as it arrives. How each driver does it: the filesystem's
//! `flock`ed partial file (`fs::fill`), the bucket's leased chunk objects (`s3::fill`).
//!
//! Also the per-entry stamps of the pull-through cache: when a tag was last confirmed upstream,
//! when a manifest was last pulled (one small object per entry, never a shared file rewritten by
//! several nodes; see `layout::Layout::stamp`).

use std::time::{Duration, SystemTime};

use super::{BlobStream, Driver, Result, Storage};
use crate::registry::{Digest, RepoName, Tag};

pub use super::FillLease;

impl Storage {
    /// Takes the fetch of `digest` if no one (on any node) holds it. `None`: another fetch is
    /// running, or the blob is already stored.
    pub async fn try_lead_fill(&self, digest: &Digest) -> Result<Option<FillLease>> {
        match self.driver() {
            Driver::Fs(fs) => Ok(fs.try_lead_fill(digest).await?.map(FillLease::File)),
            Driver::S3(s3) => Ok(s3.try_lead_fill(digest).await?.map(FillLease::S3)),
        }
    }

    /// Streams `digest` as it is being fetched (by this node or another), or from storage once it
    /// is stored. Waits up to `start_wait` for the fetch to announce the size; a stream fails when
    /// the fetcher stops making progress for `stall` and no longer holds the fill. `None`: no
    /// fetch is running (it ended without storing the blob); the caller may start one.
    pub async fn follow_fill(
        &self,
        digest: &Digest,
        start_wait: Duration,
        stall: Duration,
    ) -> Result<Option<(u64, BlobStream)>> {
        match self.driver() {
            Driver::Fs(fs) => fs.follow_fill(digest, start_wait, stall).await,
            Driver::S3(s3) => s3.follow_fill(digest, start_wait, stall).await,
        }
    }

    /// Removes what fetches that died left behind (their holder gone, nothing written since
    /// `older_than`); returns how many fills that was. With `dry_run`, only counts them.
    pub async fn remove_abandoned_fills(
        &self,
        older_than: SystemTime,
        dry_run: bool,
    ) -> Result<usize> {
        match self.driver() {
            Driver::Fs(fs) => fs.remove_abandoned_fills(older_than, dry_run).await,
            Driver::S3(s3) => s3.remove_abandoned_fills(older_than, dry_run).await,
        }
    }

    /// When the upstream last confirmed (or set) `tag` of the cached repository `name`.
    pub async fn tag_validated_at(&self, name: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        self.stamp_time("validated", &format!("{name}:{tag}")).await
    }

    /// Records that the upstream confirmed `tag` of `name` now. Not made durable: losing it in a
    /// crash only costs one more check with the upstream.
    pub async fn mark_tag_validated(&self, name: &RepoName, tag: &Tag) -> Result<()> {
        self.touch_stamp("validated", &format!("{name}:{tag}"))
            .await
    }

    /// When `name@digest` was last pulled, by any node (recorded at most once a minute per node
    /// for the cache's eviction, once an hour for pushed repositories' retention).
    pub async fn pulled_at(&self, name: &RepoName, digest: &Digest) -> Result<Option<SystemTime>> {
        self.stamp_time("pulled", &format!("{name}@{digest}")).await
    }

    /// Records a pull of `name@digest` now (not durable: losing it only makes eviction and
    /// retention see the pull before it, at most an hour older).
    pub async fn mark_pulled(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.touch_stamp("pulled", &format!("{name}@{digest}"))
            .await
    }

    /// The time a stamp holds; `None` when it was never set.
    async fn stamp_time(&self, kind: &str, key: &str) -> Result<Option<SystemTime>> {
        let path = self.layout().stamp(kind, key);
        match self.driver() {
            Driver::Fs(fs) => fs.stamp_time(path).await,
            Driver::S3(s3) => s3.stamp_time(&path).await,
        }
    }

    /// Sets a stamp to now. Not durable: stamps are hints that cost a little work when lost.
    async fn touch_stamp(&self, kind: &str, key: &str) -> Result<()> {
        let path = self.layout().stamp(kind, key);
        match self.driver() {
            Driver::Fs(fs) => fs.touch_stamp(path).await,
            Driver::S3(s3) => s3.touch_stamp(&path).await,
        }
    }
}
