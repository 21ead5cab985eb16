//! The two storage drivers, and what the facade hands out that belongs to one of them.
//!
//! An enum rather than a trait: there are two drivers and both live in this crate, so a `match`
//! per operation dispatches statically (no boxed futures, no `async_trait`, no object safety to
//! design around generic streams), and its exhaustiveness shows a reader of the facade that every
//! operation exists on both drivers, side by side, in one place. The operations are inherent
//! methods of [`FsDriver`] and [`S3Driver`] with the same names; a driver that has nothing to do
//! for an operation (a bucket holds no `flock`, a filesystem redirects no blob GET) says so in its
//! arm of the facade's match. This enum is the only place that names both drivers: nothing outside
//! the facade's dispatch asks which one it is on.

use std::sync::Arc;

use bytes::Bytes;

use super::Result;
use super::fs::{FileFill, FsDriver};
use super::s3::S3Driver;
use super::s3::fill::S3Fill;
use super::s3::lifecycle::Lease;
use crate::registry::RepoName;

/// The driver under a [`Storage`](super::Storage): the filesystem under a root, or a bucket.
pub enum Driver {
    Fs(Arc<FsDriver>),
    S3(Arc<S3Driver>),
}

/// A cluster-wide lock held: a `flock`ed file on a shared filesystem, a lease object in a bucket.
/// Released when dropped.
pub enum Held {
    File(std::fs::File),
    Lease(Lease),
}

impl Held {
    /// Lets go of the lock now, waiting until other nodes can see that it is free.
    pub async fn release(self) {
        match self {
            Held::File(f) => drop(f),
            Held::Lease(l) => l.release().await,
        }
    }
}

/// The right to fetch one blob into storage. Dropped without [`FillLease::finish`], it removes
/// what it wrote and releases its lock, and readers following it fail.
pub enum FillLease {
    File(FileFill),
    S3(S3Fill),
}

impl FillLease {
    /// Starts the fill, announcing the blob's size when the upstream's answer had one (readers
    /// then follow the bytes as they arrive; without it they wait for the stored blob).
    pub async fn begin(&mut self, size: Option<u64>) -> Result<()> {
        match self {
            FillLease::File(f) => f.begin(size).await,
            FillLease::S3(f) => f.begin(size).await,
        }
    }

    /// Appends the next bytes.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        match self {
            FillLease::File(f) => f.write(chunk).await,
            FillLease::S3(f) => f.write(chunk).await,
        }
    }

    /// Verifies the digest, makes the blob durable under its name, and links it into `name`.
    pub async fn finish(self, name: &RepoName) -> Result<u64> {
        match self {
            FillLease::File(f) => f.finish(name).await,
            FillLease::S3(f) => f.finish(name).await,
        }
    }
}
