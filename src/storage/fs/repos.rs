//! Listings on the filesystem: the repositories of the registry (catalog), the tags of a
//! repository, and the referrers of a manifest.

use std::sync::Arc;
use std::time::SystemTime;

use super::catalog;
use super::listing::{Listing, Stamp};
use super::{FsDriver, exists, manifests::list_tag_names, read_link};
use crate::registry::{Digest, RepoName};
use crate::storage::{Result, StorageError};

impl FsDriver {
    /// One page of the catalog: up to `n` repositories after `last` in lexical order, and whether
    /// more follow. A directory is a repository when it holds `_layers` or `_manifests`, as
    /// Distribution's catalog walk decides; see [`catalog`](super::catalog) for the cached walk.
    pub async fn list_repositories(
        self: &Arc<Self>,
        last: Option<String>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        let me = self.clone();
        self.pool
            .blocking(move || {
                // The tree is taken out while walking: no lock is held across I/O, and a walk running
                // at the same time starts from an empty tree instead of waiting.
                let mut tree = me.catalog_tree().take().unwrap_or_default();
                let page =
                    catalog::page(&mut tree, &me.layout().repositories(), last.as_deref(), n)?;
                *me.catalog_tree() = Some(tree);
                Ok((page.repos, page.more))
            })
            .await
    }

    /// The tags of `name`, sorted lexically; `NameUnknown` when the repository does not exist.
    pub async fn list_tags(self: &Arc<Self>, name: &RepoName) -> Result<Arc<[String]>> {
        let me = self.clone();
        let name = name.clone();
        self.pool
            .blocking(move || {
                let l = me.layout();
                let dir = l.tags_dir(&name);
                let cached = me.listings().tags(name.as_str());
                if let Some(c) = cached
                    && c.current()?
                {
                    return Ok(c.items.clone());
                }
                let read_at = SystemTime::now();
                let Some(stamp) = Stamp::of(&dir)? else {
                    if !exists(&l.manifests_dir(&name))? && !exists(&l.layers_dir(&name))? {
                        return Err(StorageError::NameUnknown);
                    }
                    return Ok(Arc::from(Vec::new()));
                };
                // Directory names only, as Distribution lists them: a stat per tag made a 5,000-tag list
                // slower than Distribution's. A tag directory without `current/link` (left only by a crash
                // between two durable writes of a tag's first push) resolves to MANIFEST_UNKNOWN.
                let mut tags: Vec<String> = list_tag_names(&dir)?
                    .into_iter()
                    .map(|t| t.as_str().to_string())
                    .collect();
                tags.sort();
                let items: Arc<[String]> = tags.into();
                let listing = stamp.settled(read_at).then(|| {
                    Arc::new(Listing {
                        dir,
                        stamp,
                        items: items.clone(),
                    })
                });
                me.listings().keep_tags(name.as_str(), listing);
                Ok(items)
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
        let l = self.layout.clone();
        let (name, subject) = (name.clone(), subject.clone());
        self.pool
            .blocking(move || {
                let dir = l.referrers_dir(&name, &subject);
                let Some(entries) = super::read_dir_if_exists(&dir)? else {
                    return Ok(Vec::new());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn driver(root: &Path) -> Arc<FsDriver> {
        let pool = Arc::new(crate::storage::pool::Pool::new(
            Duration::from_secs(30),
            8,
            false,
        ));
        Arc::new(FsDriver::new(root, pool))
    }

    /// Sets every directory's mtime an hour back, so listings of them are settled and kept.
    fn age(dir: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        for e in walkdir(dir) {
            let f = std::fs::File::open(&e).unwrap();
            f.set_modified(old).unwrap();
        }
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.to_path_buf()];
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
        }
        out
    }

    #[tokio::test]
    async fn kept_listings_follow_changes_made_by_another_node() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (driver(d.path()), driver(d.path()));
        let repo = |n: &str| a.layout().repositories().join(n);
        for r in ["x/one", "x/two"] {
            std::fs::create_dir_all(repo(r).join("_manifests/tags/v1")).unwrap();
        }
        age(&a.layout().repositories());
        let names: RepoName = "x/one".parse().unwrap();
        assert_eq!(
            b.list_repositories(None, None).await.unwrap().0,
            ["x/one", "x/two"]
        );
        assert_eq!(&*b.list_tags(&names).await.unwrap(), ["v1"]);
        assert!(b.catalog_tree().is_some(), "the catalog tree is kept");
        assert!(
            b.listings().tags("x/one").is_some(),
            "settled tags are kept"
        );

        // Another node adds a repository nested in an existing one, and a tag.
        std::fs::create_dir_all(repo("x/one/sub/_layers")).unwrap();
        std::fs::create_dir_all(repo("x/one/_manifests/tags/v2")).unwrap();
        assert_eq!(
            b.list_repositories(None, None).await.unwrap().0,
            ["x/one", "x/one/sub", "x/two"]
        );
        assert_eq!(&*b.list_tags(&names).await.unwrap(), ["v1", "v2"]);
        // Fresh directories are not trusted yet: nothing stale is kept.
        assert!(b.listings().tags("x/one").is_none());

        // And removes them again (Distribution's tag delete removes the directory).
        std::fs::remove_dir_all(repo("x/one/_manifests/tags/v1")).unwrap();
        std::fs::remove_dir_all(repo("x/two")).unwrap();
        assert_eq!(&*b.list_tags(&names).await.unwrap(), ["v2"]);
        assert_eq!(
            b.list_repositories(None, None).await.unwrap().0,
            ["x/one", "x/one/sub"]
        );
    }

    #[tokio::test]
    async fn a_registry_root_created_later_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let s = driver(&d.path().join("root"));
        assert!(s.list_repositories(None, None).await.unwrap().0.is_empty());
        std::fs::create_dir_all(s.layout().repositories().join("a/_layers")).unwrap();
        assert_eq!(s.list_repositories(None, None).await.unwrap().0, ["a"]);
    }
}
