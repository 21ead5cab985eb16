//! Blob reads, links and deletes: the facade's side. Each operation asks the driver once; what
//! stays here is what both drivers share: the check of a blob's bytes against its digest the first
//! time this node serves it, and the quarantine of one that fails.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;

use super::{Driver, Result, Storage};
use crate::registry::{Digest, RepoName};

/// The bytes of a blob, read in large chunks straight into the buffers that go to the client.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

/// How many bytes the next read of a blob stream should take (reads are capped at the driver's
/// chunk size whatever it says): a response paced to its client asks for less while the client
/// has not taken what it was given (see `http::pacing`).
pub type ReadSize = Arc<dyn Fn() -> usize + Send + Sync>;

impl Storage {
    /// Size of `digest` if `name` links it (as a layer, or as a manifest revision).
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        match self.driver() {
            Driver::Fs(fs) => fs.blob_size(name, digest).await,
            Driver::S3(s3) => s3.blob_size(name, digest).await,
        }
    }

    /// Size of `digest` anywhere in the registry, regardless of repository links.
    pub async fn blob_size_global(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.driver() {
            Driver::Fs(fs) => fs.blob_size_global(digest).await,
            Driver::S3(s3) => s3.blob_size_global(digest).await,
        }
    }

    /// Streams `len` bytes of a blob from `start`. The caller has checked with [`blob_size`]
    /// that the repository links the blob, and validated the range against that size. Each chunk is
    /// read under the storage timeout, so a mount that hangs mid-download ends the stream with an
    /// error instead of a stuck connection.
    ///
    /// [`blob_size`]: Storage::blob_size
    pub async fn open_blob(&self, digest: &Digest, start: u64, len: u64) -> Result<BlobStream> {
        self.open_blob_sized(digest, start, len, None).await
    }

    /// [`open_blob`](Storage::open_blob), each read taking what `size` says (at most a chunk).
    /// From a bucket the chunks are what the network delivers; `size` is not asked.
    pub async fn open_blob_sized(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
        size: Option<ReadSize>,
    ) -> Result<BlobStream> {
        match self.driver() {
            Driver::Fs(fs) => fs.open_blob(digest, start, len, size).await,
            Driver::S3(s3) => s3.open_blob(digest, start, len).await,
        }
    }

    /// A presigned URL to send a blob GET to instead of serving the bytes, when the storage is
    /// an S3 bucket with `s3.redirect_blobs` on.
    pub fn blob_redirect(&self, digest: &Digest) -> Option<String> {
        match self.driver() {
            Driver::Fs(_) => None,
            Driver::S3(s3) => s3.blob_redirect(digest),
        }
    }

    /// Links an existing blob into `name` (cross-repository mount, completed upload).
    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.link_blob(name, digest).await,
            Driver::S3(s3) => s3.link_blob(name, digest).await,
        }
    }

    /// Whether `name` links `digest` as a layer (mount source check).
    pub async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        match self.driver() {
            Driver::Fs(fs) => fs.blob_linked(name, digest).await,
            Driver::S3(s3) => s3.blob_linked(name, digest).await,
        }
    }

    /// Removes `name`'s link to a blob. The bytes stay until garbage collection, since other
    /// repositories may link them.
    pub async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.unlink_blob(name, digest).await,
            Driver::S3(s3) => s3.unlink_blob(name, digest).await,
        }
    }
}

impl Storage {
    /// Records `digest` as verified: later serves on this node stream it without hashing.
    fn mark_verified(&self, digest: &Digest) {
        if let Ok(mut v) = self.inner.verified.lock() {
            if v.len() >= 100_000 {
                v.clear();
            }
            v.insert(digest.clone());
        }
    }

    /// Serves `inner` (the whole of blob `digest`) while checking it against its digest, the first
    /// time this node serves that blob. The last chunk is held back until the check passes: a blob
    /// that fails is never sent whole; the client gets an error, the blob is quarantined (fsck's
    /// quarantine) and the event is logged as an error.
    /// Reads a blob that failed its digest while served again, whole, and quarantines it only if
    /// that read fails the digest too: a short or garbled answer on the way (a proxy in front of
    /// an object store, say) must not move a good blob aside.
    async fn confirm_and_quarantine(&self, d: &Digest) {
        match self.hash_blob(d).await {
            Ok(Some(hex)) if hex == d.hex() => tracing::warn!(
                digest = %d,
                "the blob read again whole matches its digest: left in place (the first read was damaged on the way)"
            ),
            Ok(None) => {}
            Ok(Some(_)) => match self.quarantine_blob(d).await {
                Ok(_) => tracing::error!(digest = %d, "corrupt blob quarantined"),
                Err(e) => {
                    tracing::error!(digest = %d, error = %e, "cannot quarantine the corrupt blob")
                }
            },
            Err(e) => tracing::error!(
                digest = %d,
                error = %e,
                "cannot read the blob again to confirm the damage: left in place (run registryd fsck)"
            ),
        }
    }

    pub fn verifying(&self, digest: &Digest, inner: BlobStream) -> BlobStream {
        let known = self
            .inner
            .verified
            .lock()
            .map(|v| v.contains(digest))
            .unwrap_or(false);
        if known || digest.algorithm() != crate::registry::Algorithm::Sha256 {
            return inner;
        }
        struct State {
            inner: BlobStream,
            sha: sha2::Sha256,
            held: Option<Bytes>,
            finished: bool,
        }
        let me = self.clone();
        let d = digest.clone();
        let state = State {
            inner,
            sha: sha2::Sha256::new(),
            held: None,
            finished: false,
        };
        Box::pin(futures_util::stream::unfold(state, move |mut st| {
            let (me, d) = (me.clone(), d.clone());
            async move {
                if st.finished {
                    return None;
                }
                loop {
                    match st.inner.next().await {
                        Some(Ok(chunk)) => {
                            st.sha.update(&chunk);
                            if let Some(prev) = st.held.replace(chunk) {
                                return Some((Ok(prev), st));
                            }
                        }
                        Some(Err(e)) => {
                            st.finished = true;
                            return Some((Err(e), st));
                        }
                        None => {
                            st.finished = true;
                            let got = Digest::from_sha256_output(&st.sha.clone().finalize());
                            if got == d {
                                me.mark_verified(&d);
                                let last = st.held.take()?;
                                return Some((Ok(last), st));
                            }
                            tracing::error!(
                                digest = %d,
                                computed = %got,
                                "blob failed its digest while being served: the client got an error; the blob is read again whole and quarantined if that fails too (registryd fsck lists it)"
                            );
                            tokio::spawn(async move { me.confirm_and_quarantine(&d).await });
                            return Some((
                                Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "blob failed its digest check",
                                )),
                                st,
                            ));
                        }
                    }
                }
            }
        }))
    }
}
