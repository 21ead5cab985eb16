//! Blob reads, links and deletes. A blob is served from a repository only when the repository links
//! it (`_layers`), as Distribution does; the bytes themselves live once in the global blob store.

use std::io::{self, SeekFrom};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Result, Storage, StorageError, atomic, exists, layout, read_link};
use crate::registry::{Digest, RepoName};

/// An open blob: a file positioned at the requested start, and how many bytes to send.
pub struct BlobReader {
    pub reader: tokio::io::Take<tokio::fs::File>,
    pub total_size: u64,
}

impl Storage {
    /// Size of `digest` if `name` links it (as a layer, or as a manifest revision).
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let l = self.layout().clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.blocking(move || {
            let linked = read_link(&l.layer_link(&name, &digest))?.as_ref() == Some(&digest)
                || read_link(&l.revision_link(&name, &digest))?.as_ref() == Some(&digest);
            if !linked {
                return Ok(None);
            }
            data_size(&l.blob_data(&digest))
        })
        .await
    }

    /// Size of `digest` anywhere in the registry, regardless of repository links.
    pub async fn blob_size_global(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.layout().blob_data(digest);
        self.blocking(move || data_size(&path)).await
    }

    /// Opens a linked blob for reading `len` bytes from `start` (the caller validated the range).
    pub async fn open_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<BlobReader> {
        let total_size = self
            .blob_size(name, digest)
            .await?
            .ok_or(StorageError::BlobUnknown)?;
        let mut file = self
            .timed(tokio::fs::File::open(self.layout().blob_data(digest)))
            .await?;
        if start > 0 {
            self.timed(file.seek(SeekFrom::Start(start))).await?;
        }
        Ok(BlobReader {
            reader: file.take(len),
            total_size,
        })
    }

    /// Links an existing blob into `name` (cross-repository mount, completed upload).
    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let l = self.layout().clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.blocking(move || {
            let link = l.layer_link(&name, &digest);
            if read_link(&link)?.as_ref() == Some(&digest) {
                return Ok(());
            }
            atomic::write_atomic(&link, layout::link_content(&digest).as_bytes())?;
            Ok(())
        })
        .await
    }

    /// Whether `name` links `digest` as a layer (mount source check).
    pub async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let link = self.layout().layer_link(name, digest);
        let d = digest.clone();
        self.blocking(move || Ok(read_link(&link)?.as_ref() == Some(&d)))
            .await
    }

    /// Removes `name`'s link to a blob. The bytes stay until garbage collection, since other
    /// repositories may link them.
    pub async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let dir = self.layout().layer_link(name, digest);
        self.blocking(move || {
            let dir = dir.parent().map(|p| p.to_path_buf()).unwrap_or(dir);
            if !exists(&dir.join("link"))? {
                return Err(StorageError::BlobUnknown);
            }
            atomic::remove_durable(&dir)?;
            Ok(())
        })
        .await
    }

    /// Writes a small blob (a manifest) whose digest the caller computed, if not already stored.
    pub(super) fn put_small_blob_sync(
        l: &layout::Layout,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<()> {
        let path = l.blob_data(digest);
        if data_size(&path)? == Some(bytes.len() as u64) {
            return Ok(());
        }
        atomic::write_atomic(&path, bytes)?;
        Ok(())
    }
}

fn data_size(path: &std::path::Path) -> Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
