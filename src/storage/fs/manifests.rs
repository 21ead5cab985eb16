//! Manifests and tags on the filesystem. A manifest is a blob (stored byte-exact) plus a revision
//! link in its repository; a tag is a `current/link` naming a revision, with an index of every
//! revision the tag has named. Publication order (durability rule 3): blob data, revision link,
//! referrer entry, tag index, tag current link. A crash between any two leaves the old state or the
//! new one.

use super::blobs::put_small_blob_sync;
use super::{FsDriver, atomic, read_link};
use crate::registry::{Digest, RepoName, Tag};
use crate::storage::layout::link_content;
use crate::storage::manifests::ReferrerEntry;
use crate::storage::{Result, StorageError};

impl FsDriver {
    /// Stores a manifest whose digest (`digest`, of `bytes`) the caller computed and validated, and
    /// points `tag` at it. Durable when this returns.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes: Vec<u8>,
        tag: Option<&Tag>,
        referrer: Option<ReferrerEntry>,
    ) -> Result<()> {
        let l = self.layout.clone();
        let (name, digest, tag) = (name.clone(), digest.clone(), tag.cloned());
        self.pool
            .blocking(move || {
                // The directories each step below writes in are made at once, a thread each: a new
                // one costs round trips to every brick on a shared mount, and a new tag alone is a
                // chain of four. The tag's are made only once the manifest is stored, as before: a
                // tag directory without a link is listed (and resolves to MANIFEST_UNKNOWN).
                let parents = |files: &[std::path::PathBuf]| -> Result<()> {
                    let dirs: Vec<_> = files.iter().filter_map(|f| f.parent()).collect();
                    Ok(atomic::make_dirs_at_once(&l, &dirs)?)
                };
                let mut files = vec![l.blob_data(&digest), l.revision_link(&name, &digest)];
                if let Some(r) = &referrer {
                    files.push(l.referrer_entry(&name, &r.subject, &digest));
                }
                parents(&files)?;
                put_small_blob_sync(&l, &digest, &bytes)?;
                let link = link_content(&digest);
                // Publication order (durability rule 3): revision link, referrer entry, tag index,
                // then the tag's current link.
                let write_link = |path: std::path::PathBuf| -> Result<()> {
                    if read_link(&path)?.as_ref() != Some(&digest) {
                        atomic::write_atomic(&l, &path, link.as_bytes())?;
                    }
                    Ok(())
                };
                atomic::rewrite_link(&l, &l.revision_link(&name, &digest), &link)?;
                if let Some(r) = &referrer {
                    atomic::write_atomic(
                        &l,
                        &l.referrer_entry(&name, &r.subject, &digest),
                        &r.descriptor,
                    )?;
                }
                if let Some(t) = &tag {
                    parents(&[
                        l.tag_index_link(&name, t, &digest),
                        l.tag_current_link(&name, t),
                    ])?;
                    write_link(l.tag_index_link(&name, t, &digest))?;
                }
                if let Some(tag) = &tag {
                    atomic::write_atomic(&l, &l.tag_current_link(&name, tag), link.as_bytes())?;
                }
                Ok(())
            })
            .await
    }

    /// Whether `name` holds the manifest `digest` (its revision link).
    pub async fn manifest_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let path = self.layout.revision_link(name, digest);
        let d = digest.clone();
        self.pool
            .blocking(move || Ok(read_link(&path)?.as_ref() == Some(&d)))
            .await
    }

    /// Deletes manifest `digest` from `name`, every tag currently pointing at it, and its referrer
    /// entry (`subject` is the manifest's subject, if it had one).
    pub async fn delete_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        subject: Option<Digest>,
    ) -> Result<()> {
        let l = self.layout.clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.pool
            .blocking(move || {
                if read_link(&l.revision_link(&name, &digest))?.as_ref() != Some(&digest) {
                    return Err(StorageError::ManifestUnknown);
                }
                // Tags first: a tag must never name a revision that is gone.
                for tag in list_tag_names(&l.tags_dir(&name))? {
                    if read_link(&l.tag_current_link(&name, &tag))?.as_ref() == Some(&digest) {
                        atomic::remove_durable(&l.tag_dir(&name, &tag))?;
                    }
                }
                if let Some(s) = subject {
                    atomic::remove_durable(&l.referrer_entry(&name, &s, &digest))?;
                }
                atomic::remove_durable(&l.revision_dir(&name, &digest))?;
                Ok(())
            })
            .await
    }

    /// Deletes a tag (the manifest it named stays, addressable by digest).
    pub async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<()> {
        let l = self.layout.clone();
        let (name, tag) = (name.clone(), tag.clone());
        self.pool
            .blocking(move || {
                if read_link(&l.tag_current_link(&name, &tag))?.is_none() {
                    return Err(StorageError::ManifestUnknown);
                }
                atomic::remove_durable(&l.tag_dir(&name, &tag))?;
                Ok(())
            })
            .await
    }
}

/// The tags under a `_manifests/tags` directory whose names are valid tags, unsorted.
pub(super) fn list_tag_names(dir: &std::path::Path) -> Result<Vec<Tag>> {
    let Some(entries) = super::read_dir_if_exists(dir)? else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    for e in entries {
        let e = e?;
        if let Some(t) = e.file_name().to_str().and_then(|s| s.parse::<Tag>().ok()) {
            tags.push(t);
        }
    }
    Ok(tags)
}
