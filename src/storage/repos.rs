//! Listings: the repositories of the registry (catalog), the tags of a repository, and the referrers
//! of a manifest.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::{Result, Storage, StorageError, exists, manifests::list_tag_names, read_link};
use crate::registry::{Digest, RepoName};

impl Storage {
    /// Every repository, sorted. A directory is a repository when it holds `_layers` or
    /// `_manifests`, as Distribution's catalog walk decides; other `_` directories are not entered.
    pub async fn list_repositories(&self) -> Result<Vec<String>> {
        let root = self.layout().repositories();
        self.blocking(move || {
            let mut found = BTreeSet::new();
            walk_repos(&root, "", &mut found)?;
            Ok(found.into_iter().collect())
        })
        .await
    }

    /// The tags of `name`, sorted lexically; `NameUnknown` when the repository does not exist.
    pub async fn list_tags(&self, name: &RepoName) -> Result<Vec<String>> {
        let l = self.layout().clone();
        let name = name.clone();
        self.blocking(move || {
            if !exists(&l.manifests_dir(&name))? && !exists(&l.layers_dir(&name))? {
                return Err(StorageError::NameUnknown);
            }
            // Directory names only, as Distribution lists them: a stat per tag made a 5,000-tag list
            // slower than Distribution's. A tag directory without `current/link` (left only by a crash
            // between two durable writes of a tag's first push) resolves to MANIFEST_UNKNOWN.
            let mut tags: Vec<String> = list_tag_names(&l.tags_dir(&name))?
                .into_iter()
                .map(|t| t.as_str().to_string())
                .collect();
            tags.sort();
            Ok(tags)
        })
        .await
    }

    /// The descriptors of the manifests in `name` whose subject is `subject`, sorted by digest.
    /// Entries whose manifest was deleted behind registryd's back are skipped.
    pub async fn list_referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>> {
        let l = self.layout().clone();
        let (name, subject) = (name.clone(), subject.clone());
        self.blocking(move || {
            let dir = l.referrers_dir(&name, &subject);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for e in entries {
                let e = e?;
                let file = e.file_name();
                let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                    continue;
                };
                let Some(digest) = stem.replacen('-', ":", 1).parse::<Digest>().ok() else {
                    continue;
                };
                if read_link(&l.revision_link(&name, &digest))?.as_ref() != Some(&digest) {
                    continue;
                }
                let bytes = std::fs::read(e.path())?;
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    out.push((digest, v));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out.into_iter().map(|(_, v)| v).collect())
        })
        .await
    }
}

fn walk_repos(dir: &Path, prefix: &str, found: &mut BTreeSet<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if n.starts_with('_') {
            if (n == "_layers" || n == "_manifests") && !prefix.is_empty() {
                found.insert(prefix.to_string());
            }
            continue;
        }
        let child = if prefix.is_empty() {
            n
        } else {
            format!("{prefix}/{n}")
        };
        walk_repos(&e.path(), &child, found)?;
    }
    Ok(())
}
