//! What a repository holds, read whole for maintenance passes (cache eviction now, garbage
//! collection later): its manifest revisions, its layer links, which tags name which revision; and
//! the removals such a pass makes. Reads skip entries another node removes meanwhile.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::manifests::list_tag_names;
use super::{Result, Storage, atomic, read_link};
use crate::registry::{Digest, RepoName, Tag};

/// One repository's contents.
#[derive(Debug, Default)]
pub struct RepoInventory {
    /// Manifest revisions with the time their link was written.
    pub revisions: Vec<(Digest, SystemTime)>,
    /// Blobs linked as layers (`_layers`).
    pub layers: Vec<Digest>,
    /// Tags and the revision each names.
    pub tags: Vec<(Tag, Digest)>,
}

/// The digests under a `<dir>/sha256/<hex>/link` tree whose link names them.
fn linked_digests(dir: &Path) -> Result<Vec<(Digest, SystemTime)>> {
    let Some(entries) = super::read_dir_if_exists(&dir.join("sha256"))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
        else {
            continue;
        };
        let link = e.path().join("link");
        let at = match std::fs::metadata(&link) {
            Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if read_link(&link)?.as_ref() == Some(&d) {
            out.push((d, at));
        }
    }
    Ok(out)
}

impl Storage {
    /// Every repository name (the whole catalog).
    pub async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let (page, more) = self.list_repositories(last.clone(), Some(10_000)).await?;
            last = page.last().cloned();
            out.extend(page.iter().filter_map(|n| n.parse().ok()));
            if !more || last.is_none() {
                return Ok(out);
            }
        }
    }

    /// What `name` holds.
    pub async fn inventory(&self, name: &RepoName) -> Result<RepoInventory> {
        let l = self.layout().clone();
        let name = name.clone();
        self.blocking(move || {
            let revisions = linked_digests(&l.manifests_dir(&name).join("revisions"))?;
            let layers = linked_digests(&l.layers_dir(&name))?
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            let mut tags = Vec::new();
            for t in list_tag_names(&l.tags_dir(&name))? {
                if let Some(d) = read_link(&l.tag_current_link(&name, &t))? {
                    tags.push((t, d));
                }
            }
            Ok(RepoInventory {
                revisions,
                layers,
                tags,
            })
        })
        .await
    }

    /// The bytes of a stored manifest (or any blob small enough to read whole); `None` if absent.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.layout().blob_data(digest);
        self.blocking(move || match atomic::read_retrying(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Removes a revision from `name`, with the tags in `tags` (which name it), tags first: a
    /// crash in between leaves a revision without tags, never a tag naming a missing revision.
    pub async fn remove_revision(
        &self,
        name: &RepoName,
        digest: &Digest,
        tags: Vec<Tag>,
    ) -> Result<()> {
        let l = self.layout().clone();
        let (name, digest) = (name.clone(), digest.clone());
        self.blocking(move || {
            for t in &tags {
                atomic::remove_durable(&l.tag_dir(&name, t))?;
            }
            atomic::remove_durable(&l.revision_dir(&name, &digest))?;
            Ok(())
        })
        .await
    }

    /// Deletes a blob's data, if no repository links it as a layer or a revision (checked again
    /// here, right before the removal). Returns the bytes freed.
    pub async fn delete_blob_if_unlinked(
        &self,
        digest: &Digest,
        repos: Vec<RepoName>,
    ) -> Result<u64> {
        let l = self.layout().clone();
        let digest = digest.clone();
        self.blocking(move || {
            for r in &repos {
                if read_link(&l.layer_link(r, &digest))?.is_some()
                    || read_link(&l.revision_link(r, &digest))?.is_some()
                {
                    return Ok(0);
                }
            }
            let size = super::blobs::data_size(&l.blob_data(&digest))?.unwrap_or(0);
            atomic::remove_durable(&l.blob_dir(&digest))?;
            Ok(size)
        })
        .await
    }

    /// Size of a stored blob (0 when absent).
    pub async fn stored_size(&self, digest: &Digest) -> Result<u64> {
        Ok(self.blob_size_global(digest).await?.unwrap_or(0))
    }

    /// When `name@digest` was last pulled through the cache (recorded at most once a minute per
    /// node).
    pub async fn pulled_at(&self, name: &RepoName, digest: &Digest) -> Result<Option<SystemTime>> {
        self.stamp_time("pulled", &format!("{name}@{digest}")).await
    }

    /// Records a pull of `name@digest` now (not durable: losing it only makes eviction older-biased).
    pub async fn mark_pulled(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.touch_stamp("pulled", &format!("{name}@{digest}"))
            .await
    }

    /// Removes `name`'s layer link to `digest`, if any.
    pub async fn unlink_layer(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let link = self.layout().layer_link(name, digest);
        self.blocking(move || {
            if let Some(dir) = link.parent() {
                atomic::remove_durable(dir)?;
            }
            Ok(())
        })
        .await
    }

    /// An advisory lock named `name` on the shared storage, held until the returned file is
    /// dropped (or the holder dies); `None` when another process, on any node, holds it.
    pub async fn try_lock(&self, name: &str) -> Result<Option<std::fs::File>> {
        let path = self
            .layout()
            .root()
            .join("registryd/locks")
            .join(format!("{name}.lock"));
        self.blocking(move || Ok(atomic::try_lock_file(&path)?))
            .await
    }
}
