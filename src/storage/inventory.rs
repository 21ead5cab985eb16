//! What a repository holds, read whole for maintenance passes (cache eviction now, garbage
//! collection later): its manifest revisions and its layer links; and the blob removal such a pass
//! makes. Reads skip entries another node removes meanwhile.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::{Result, Storage, atomic, read_link};
use crate::registry::{Digest, RepoName};

/// One repository's contents.
#[derive(Debug, Default)]
pub struct RepoInventory {
    /// Manifest revisions with the time their link was written.
    pub revisions: Vec<(Digest, SystemTime)>,
    /// Blobs linked as layers (`_layers`).
    pub layers: Vec<Digest>,
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
            Ok(RepoInventory { revisions, layers })
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
