//! Repository facts on the filesystem, for the web UI: a repository's tag count, last push and
//! size; its tags with their digests and push times; its manifest revisions; the uploads in
//! progress across the registry.
//!
//! A repository's facts are kept with the stamps (see [`listing`](super::listing)) of the three
//! directories they come from: `_layers/sha256` and `_manifests/revisions/sha256` (a link added
//! or removed) and `_manifests/tags` (a tag added or removed). While all three keep their stamps,
//! on this node or any other sharing the mount, the facts are reused for three `stat`s. A tag moved
//! to a manifest the repository already held changes none of them: its push time shows once the
//! facts are read again, by the next census (see `storage::census`) at the latest.
//!
//! Uploads are found with a cached walk of the repository tree, one `stat` per directory when
//! nothing changed (an `_uploads` directory appearing changes its repository's directory).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use uuid::Uuid;

use super::blobs::data_size;
use super::listing::Stamp;
use super::manifests::list_tag_names;
use super::{FsDriver, atomic, read_link};
use crate::registry::{Digest, RepoName};
use crate::storage::Result;
use crate::storage::layout::Layout;
use crate::storage::summary::{BlobSizes, Measured, RepoFacts, TagInfo, UploadInfo, blob_key};

/// Repositories whose facts are kept; past it the cache starts over (bounded memory: an entry is
/// about 300 bytes, three directory stamps and the facts).
const MAX_KEPT: usize = 100_000;

/// Repositories whose facts one blocking call reads.
const BATCH: usize = 100;
/// Blocking calls of one request at a time.
const BATCHES_IN_FLIGHT: usize = 4;

/// What this node keeps of repositories' facts and of the walk for uploads.
#[derive(Default)]
pub(super) struct Summaries {
    repos: HashMap<RepoName, Kept>,
    /// The tree walked for `_uploads`; taken out while a walk uses it.
    uploads: Option<UploadDir>,
}

/// A repository's facts and the stamps of the directories they were read from.
struct Kept {
    stamps: [Option<Stamp>; 3],
    facts: RepoFacts,
}

impl Summaries {
    fn keep(&mut self, name: &RepoName, kept: Option<Kept>) {
        match kept {
            None => {
                self.repos.remove(name);
            }
            Some(k) => {
                if self.repos.len() >= MAX_KEPT && !self.repos.contains_key(name) {
                    self.repos.clear();
                }
                self.repos.insert(name.clone(), k);
            }
        }
    }
}

/// The directories whose stamps validate `name`'s kept facts.
fn stamped_dirs(l: &Layout, name: &RepoName) -> [PathBuf; 3] {
    [
        Layout::sha256_links(&l.layers_dir(name)),
        Layout::sha256_links(&l.revisions_dir(name)),
        l.tags_dir(name),
    ]
}

/// The digests under a `<dir>/sha256/<hex>/link` tree that hold a link, with when each link was
/// written. Entries removed meanwhile (by another node) are skipped.
fn links_with_times(dir: &Path) -> Result<Vec<(Digest, SystemTime)>> {
    let mut out = Vec::new();
    for (d, link) in super::sha256_link_entries(dir)? {
        if let Some(at) = modified(&link)? {
            out.push((d, at));
        }
    }
    Ok(out)
}

/// When the file at `path` was last written; `None` when it does not exist.
fn modified(path: &Path) -> Result<Option<SystemTime>> {
    match atomic::retry_stale(|| std::fs::metadata(path)) {
        Ok(m) => Ok(Some(m.modified()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every tag of `name` with what its link names and when the link was written; `with_digests`
/// false leaves the links unread (their times are enough for a summary).
fn tags_of(l: &Layout, name: &RepoName, with_digests: bool) -> Result<Vec<TagInfo>> {
    let mut out = Vec::new();
    for t in list_tag_names(&l.tags_dir(name))? {
        let link = l.tag_current_link(name, &t);
        let pushed = modified(&link)?;
        let digest = match (with_digests, pushed) {
            (true, Some(_)) => read_link(&link).ok().flatten(),
            _ => None,
        };
        out.push(TagInfo {
            tag: t.as_str().to_string(),
            digest,
            pushed,
        });
    }
    Ok(out)
}

/// Reads `name`'s facts, and the blobs it links when `with_links`.
fn measure(l: &Layout, name: &RepoName, sizes: &BlobSizes, with_links: bool) -> Result<Measured> {
    let layers = links_with_times(&l.layers_dir(name))?;
    let revisions = links_with_times(&l.revisions_dir(name))?;
    let tags = tags_of(l, name, false)?;
    let last_push = revisions
        .iter()
        .map(|(_, at)| *at)
        .chain(tags.iter().filter_map(|t| t.pushed))
        .max();
    let mut seen = HashSet::new();
    let mut size = 0u64;
    let mut links = Vec::new();
    for (d, _) in layers.iter().chain(revisions.iter()) {
        let key = blob_key(d);
        if !seen.insert(key) {
            continue;
        }
        let bytes = match sizes.get(&key) {
            Some(n) => n,
            None => match data_size(&l.blob_data(d))? {
                Some(n) => {
                    sizes.insert(key, n);
                    n
                }
                // Linked but not stored (removed behind registryd's back): nothing to count.
                None => continue,
            },
        };
        size = size.saturating_add(bytes);
        if with_links {
            links.push((key, bytes));
        }
    }
    Ok(Measured {
        facts: RepoFacts {
            tags: tags.len(),
            last_push,
            size,
        },
        links: with_links.then_some(links),
    })
}

impl FsDriver {
    fn summaries(&self) -> std::sync::MutexGuard<'_, Summaries> {
        self.summaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The facts of each of `names`, in order: kept facts whose directories kept their stamps
    /// are reused, the others read again. `with_links` (the census) reads every repository afresh
    /// and lists the blobs it links. Repositories go in blocking calls of [`BATCH`], a few at a
    /// time: one call per page when the facts are kept, and each call short enough for the
    /// storage timeout when they must be read on a slow shared mount.
    pub async fn repo_facts(
        self: &Arc<Self>,
        names: Vec<RepoName>,
        sizes: Arc<BlobSizes>,
        with_links: bool,
    ) -> Result<Vec<Result<Measured>>> {
        let batches: Vec<Vec<RepoName>> = names.chunks(BATCH).map(<[_]>::to_vec).collect();
        let results: Vec<Result<Vec<Result<Measured>>>> = futures_util::stream::iter(batches)
            .map(|batch| {
                let (me, sizes) = (self.clone(), sizes.clone());
                self.pool.blocking(move || {
                    let l = me.layout();
                    Ok(batch
                        .iter()
                        .map(|name| me.facts_of(l, name, &sizes, with_links))
                        .collect())
                })
            })
            .buffered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(names.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn facts_of(
        &self,
        l: &Layout,
        name: &RepoName,
        sizes: &BlobSizes,
        with_links: bool,
    ) -> Result<Measured> {
        let read_at = SystemTime::now();
        let dirs = stamped_dirs(l, name);
        let mut stamps: [Option<Stamp>; 3] = Default::default();
        for (s, dir) in stamps.iter_mut().zip(&dirs) {
            *s = atomic::retry_stale(|| Stamp::of(dir))?;
        }
        if !with_links
            && let Some(k) = self.summaries().repos.get(name)
            && k.stamps == stamps
        {
            return Ok(Measured {
                facts: k.facts.clone(),
                links: None,
            });
        }
        // Stamps taken before the read: a change during it shows as a changed stamp next time.
        let m = measure(l, name, sizes, with_links)?;
        let settled = stamps.iter().flatten().all(|s| s.settled(read_at));
        let kept = settled.then(|| Kept {
            stamps,
            facts: m.facts.clone(),
        });
        let mut summaries = self.summaries();
        // The census refreshes what pages keep (a tag's move shows there at the latest) but
        // does not fill the cache with every repository of the store.
        if !with_links || summaries.repos.contains_key(name) {
            summaries.keep(name, kept);
        }
        drop(summaries);
        Ok(m)
    }

    /// The tags of `name`, each with its digest and when its link was last written.
    pub async fn tag_details(&self, name: &RepoName) -> Result<Vec<TagInfo>> {
        let (l, name) = (self.layout.clone(), name.clone());
        self.pool.blocking(move || tags_of(&l, &name, true)).await
    }

    /// The tags of `name` (as [`tag_details`](Self::tag_details)) and its manifest revisions with
    /// when each was linked.
    pub async fn manifest_links(
        &self,
        name: &RepoName,
    ) -> Result<(Vec<TagInfo>, Vec<(Digest, SystemTime)>)> {
        let (l, name) = (self.layout.clone(), name.clone());
        self.pool
            .blocking(move || {
                let tags = tags_of(&l, &name, true)?;
                Ok((tags, links_with_times(&l.revisions_dir(&name))?))
            })
            .await
    }

    /// Every upload session in the registry: its repository, bytes received, start and last
    /// write.
    pub async fn uploads_in_progress(self: &Arc<Self>) -> Result<Vec<UploadInfo>> {
        let me = self.clone();
        self.pool
            .blocking(move || {
                let l = me.layout();
                let top = l.repositories();
                let mut tree = me.summaries().uploads.take().unwrap_or_default();
                let mut repos = Vec::new();
                let walked = tree.visit(&top, "", &mut repos);
                me.summaries().uploads = Some(tree);
                walked?;
                let mut out = Vec::new();
                for repo in repos.iter().filter_map(|r| r.parse::<RepoName>().ok()) {
                    uploads_of(l, &repo, &mut out)?;
                }
                Ok(out)
            })
            .await
    }
}

/// The upload sessions of `repo`, appended to `out`.
fn uploads_of(l: &Layout, repo: &RepoName, out: &mut Vec<UploadInfo>) -> Result<()> {
    let Some(entries) = super::read_dir_if_exists(&l.uploads_dir(repo))? else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let Some(id) = e.file_name().to_str().and_then(|s| Uuid::try_parse(s).ok()) else {
            continue;
        };
        let started = modified(&l.upload_started_at(repo, &id))?;
        let data = match atomic::retry_stale(|| std::fs::metadata(l.upload_data(repo, &id))) {
            Ok(m) => Some((m.len(), m.modified()?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        // No data yet: the session's start is its last activity (else its directory's time).
        let last_write = match (data, started) {
            (Some((_, at)), _) | (None, Some(at)) => at,
            (None, None) => match modified(&e.path())? {
                Some(at) => at,
                None => continue,
            },
        };
        out.push(UploadInfo {
            repository: repo.clone(),
            id,
            last_write,
            bytes: Some(data.map_or(0, |(n, _)| n)),
            started,
        });
    }
    Ok(())
}

/// A directory of the repository tree, as the walk for uploads last saw it.
#[derive(Default)]
struct UploadDir {
    stamp: Option<Stamp>,
    /// Stamp settled when read: an unchanged stamp means unchanged entries.
    settled: bool,
    has_uploads: bool,
    /// Subdirectories that are not `_` directories, sorted by name.
    children: Vec<(Box<str>, UploadDir)>,
}

impl UploadDir {
    /// Appends the repositories at or below `path` (named `prefix` + ...) that hold `_uploads`,
    /// reading again only the directories whose stamps changed.
    fn visit(&mut self, path: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
        let read_at = SystemTime::now();
        let Some(stamp) = atomic::retry_stale(|| Stamp::of(path))? else {
            *self = UploadDir::default();
            return Ok(());
        };
        if !(self.settled && self.stamp.as_ref() == Some(&stamp)) {
            let Some(entries) = super::read_dir_if_exists(path)? else {
                *self = UploadDir::default();
                return Ok(());
            };
            let mut has_uploads = false;
            let mut names = Vec::new();
            for e in entries {
                let e = e?;
                if !e.file_type()?.is_dir() {
                    continue;
                }
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if n.starts_with('_') {
                    has_uploads |= n == "_uploads";
                } else {
                    names.push(n);
                }
            }
            names.sort();
            let mut old: HashMap<Box<str>, UploadDir> =
                std::mem::take(&mut self.children).into_iter().collect();
            self.children = names
                .into_iter()
                .map(|n| {
                    let n = n.into_boxed_str();
                    let node = old.remove(&n).unwrap_or_default();
                    (n, node)
                })
                .collect();
            self.settled = stamp.settled(read_at);
            self.stamp = Some(stamp);
            self.has_uploads = has_uploads;
        }
        if self.has_uploads && !prefix.is_empty() {
            out.push(prefix.trim_end_matches('/').to_string());
        }
        for (name, child) in &mut self.children {
            child.visit(&path.join(&**name), &format!("{prefix}{name}/"), out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Tag;
    use std::time::Duration;

    fn driver(root: &Path) -> Arc<FsDriver> {
        let pool = Arc::new(crate::storage::pool::Pool::new(
            Duration::from_secs(30),
            8,
            false,
        ));
        Arc::new(FsDriver::new(root, pool))
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// A blob of `bytes` linked into `repo` as a layer (or a revision), written directly.
    fn link(l: &Layout, repo: &RepoName, bytes: &[u8], revision: bool) -> Digest {
        let d = Digest::sha256_of(bytes);
        write(&l.blob_data(&d), bytes);
        let link = if revision {
            l.revision_link(repo, &d)
        } else {
            l.layer_link(repo, &d)
        };
        write(&link, d.to_string().as_bytes());
        d
    }

    /// Sets every directory's mtime an hour back, so stamps of them are settled and kept.
    fn age(dir: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }

    async fn facts(fs: &Arc<FsDriver>, name: &RepoName, sizes: &Arc<BlobSizes>) -> RepoFacts {
        let mut m = fs
            .repo_facts(vec![name.clone()], sizes.clone(), false)
            .await
            .unwrap();
        m.pop().unwrap().unwrap().facts
    }

    #[tokio::test]
    async fn facts_are_kept_while_stamps_hold_and_follow_another_node() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (driver(d.path()), driver(d.path()));
        let l = a.layout().clone();
        let repo: RepoName = "team/app".parse().unwrap();
        let one = link(&l, &repo, b"layer one", false);
        let m = link(&l, &repo, b"{\"manifest\":1}", true);
        write(
            &l.tag_current_link(&repo, &"v1".parse::<Tag>().unwrap()),
            m.to_string().as_bytes(),
        );
        age(&l.repositories());
        let sizes = Arc::new(BlobSizes::default());
        let first = facts(&b, &repo, &sizes).await;
        assert_eq!(first.tags, 1);
        assert_eq!(first.size, 9 + 14);
        assert!(
            b.summaries().repos.contains_key(&repo),
            "settled facts are kept"
        );

        // Reused without a look at the blobs: with a blob gone behind its back (and no sizes
        // known), the kept facts still stand.
        std::fs::remove_file(l.blob_data(&one)).unwrap();
        let no_sizes = Arc::new(BlobSizes::default());
        assert_eq!(facts(&b, &repo, &no_sizes).await, first);
        write(&l.blob_data(&one), b"layer one");
        // Another node links a layer: the stamp of `_layers/sha256` moves.
        link(&l, &repo, b"layer two!", false);
        let second = facts(&b, &repo, &sizes).await;
        assert_eq!(second.size, first.size + 10);
        assert!(
            !b.summaries().repos.contains_key(&repo),
            "facts of a directory changed just now are not kept"
        );
        // A tag added by another node.
        write(
            &l.tag_current_link(&repo, &"v2".parse::<Tag>().unwrap()),
            m.to_string().as_bytes(),
        );
        assert_eq!(facts(&b, &repo, &sizes).await.tags, 2);
        // A repository that does not exist has no tags, no size.
        let none = facts(&b, &"no/such".parse().unwrap(), &sizes).await;
        assert_eq!(none, RepoFacts::default());
    }

    #[tokio::test]
    async fn the_census_gets_each_linked_blob_once_with_its_size() {
        let d = tempfile::tempdir().unwrap();
        let fs = driver(d.path());
        let l = fs.layout().clone();
        let repo: RepoName = "r".parse().unwrap();
        let a = link(&l, &repo, b"aaaa", false);
        // The same blob linked as a layer and as a revision counts once.
        write(&l.revision_link(&repo, &a), a.to_string().as_bytes());
        // A link whose blob is gone counts nothing.
        let gone = Digest::sha256_of(b"gone");
        write(&l.layer_link(&repo, &gone), gone.to_string().as_bytes());
        let mut m = fs
            .repo_facts(vec![repo], Arc::new(BlobSizes::default()), true)
            .await
            .unwrap();
        let m = m.pop().unwrap().unwrap();
        assert_eq!(m.facts.size, 4);
        assert_eq!(m.links.unwrap(), vec![(blob_key(&a), 4)]);
    }

    #[tokio::test]
    async fn a_tag_moved_within_the_repository_shows_after_the_census() {
        let d = tempfile::tempdir().unwrap();
        let fs = driver(d.path());
        let l = fs.layout().clone();
        let (repo, other): (RepoName, RepoName) = ("r".parse().unwrap(), "o".parse().unwrap());
        let m = link(&l, &repo, b"{}", true);
        let tag = l.tag_current_link(&repo, &"v1".parse::<Tag>().unwrap());
        write(&tag, m.to_string().as_bytes());
        link(&l, &other, b"other", false);
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&tag)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let revision = std::fs::File::open(l.revision_link(&repo, &m)).unwrap();
        revision.set_modified(hour_ago).unwrap();
        age(&l.repositories());
        let sizes = Arc::new(BlobSizes::default());
        let before = facts(&fs, &repo, &sizes).await;
        assert!(before.last_push.unwrap() < hour_ago + Duration::from_secs(1));

        // The tag's link is rewritten in place: no directory of the repository changes.
        write(&tag, m.to_string().as_bytes());
        assert_eq!(
            facts(&fs, &repo, &sizes).await,
            before,
            "kept until the census"
        );
        let census = fs
            .repo_facts(vec![repo.clone(), other.clone()], sizes.clone(), true)
            .await
            .unwrap();
        assert!(census.iter().all(|m| m.is_ok()));
        let after = facts(&fs, &repo, &sizes).await;
        assert!(
            after.last_push.unwrap() > hour_ago + Duration::from_secs(60),
            "{after:?}"
        );
        assert!(
            !fs.summaries().repos.contains_key(&other),
            "the census keeps only what a page asked for"
        );
    }

    #[tokio::test]
    async fn a_page_longer_than_a_batch_keeps_its_order() {
        let d = tempfile::tempdir().unwrap();
        let fs = driver(d.path());
        let l = fs.layout().clone();
        let names: Vec<RepoName> = (0..3 * BATCH + 7)
            .map(|i| format!("r{i:04}").parse().unwrap())
            .collect();
        for (i, n) in names.iter().enumerate().step_by(3) {
            link(&l, n, &vec![b'x'; i + 1], false);
        }
        let got = fs
            .repo_facts(names.clone(), Arc::new(BlobSizes::default()), false)
            .await
            .unwrap();
        assert_eq!(got.len(), names.len());
        for (i, m) in got.into_iter().enumerate() {
            let want = if i % 3 == 0 { i as u64 + 1 } else { 0 };
            assert_eq!(m.unwrap().facts.size, want, "row {i}");
        }
    }

    #[tokio::test]
    async fn uploads_are_found_below_any_repository() {
        let d = tempfile::tempdir().unwrap();
        let fs = driver(d.path());
        let l = fs.layout().clone();
        assert!(fs.uploads_in_progress().await.unwrap().is_empty());
        let (top, nested): (RepoName, RepoName) = ("a".parse().unwrap(), "a/b/c".parse().unwrap());
        let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
        write(&l.upload_started_at(&top, &u1), b"x");
        write(&l.upload_data(&top, &u1), &[0; 1000]);
        write(&l.upload_started_at(&nested, &u2), b"x");
        age(&l.repositories());
        let mut got = fs.uploads_in_progress().await.unwrap();
        got.sort_by_key(|u| u.repository.clone());
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].repository.as_str(), got[0].bytes),
            ("a", Some(1000))
        );
        assert_eq!(
            (got[1].repository.as_str(), got[1].bytes),
            ("a/b/c", Some(0))
        );
        assert!(got.iter().all(|u| u.started.is_some()));

        // The kept tree sees a new upload in an existing repository, and a finished one go.
        let u3 = Uuid::new_v4();
        let other: RepoName = "z".parse().unwrap();
        write(&l.upload_started_at(&other, &u3), b"x");
        std::fs::remove_dir_all(l.uploads_dir(&nested)).unwrap();
        let got = fs.uploads_in_progress().await.unwrap();
        let mut ids: Vec<Uuid> = got.iter().map(|u| u.id).collect();
        ids.sort();
        let mut want = vec![u1, u3];
        want.sort();
        assert_eq!(ids, want);
    }
}
