//! The catalog: every repository in lexical order, one page at a time, from a cached tree of the
//! `repositories` directory.
//!
//! Each directory of the tree keeps its stamp (see [`super::listing`]), whether it is a repository
//! (holds `_layers` or `_manifests`, as Distribution's walk decides) and its subdirectories. A page
//! visits only the directories it needs: one `stat` each, and a `readdir` only for a directory that
//! changed (or changed too recently to trust). Subtrees that sort wholly before `last` are skipped
//! without a look, and the walk stops once the page is full, so a page of 1,000 costs about 1,000
//! `stat`s whether the registry holds 1,000 repositories or 100,000.
//!
//! Order is exact byte order of the full names. A directory `a` contributes two runs to its parent:
//! the repository `a` itself, sorted at key `a`, and everything below it, at key `a/`; with a sibling
//! `a-b` the order is `a` < `a-b` < `a/x`, which a plain depth-first walk gets wrong.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::listing::Stamp;

#[derive(Default)]
pub(super) struct Dir {
    stamp: Option<Stamp>,
    /// Stamp settled when read: unchanged stamp means unchanged entries.
    settled: bool,
    /// The page walk that last refreshed this node, so a walk checks each directory once.
    seen: u64,
    is_repo: bool,
    /// Subdirectories that are not `_` directories, sorted by name; their nodes are filled on visit.
    children: Vec<(Box<str>, Dir)>,
    /// Visit order of the children: (index, false) is child's own repository at key `name`,
    /// (index, true) its subtree at key `name/`.
    order: Vec<(u32, bool)>,
}

/// One page: up to `n` repositories after `last`, and whether more follow.
pub(super) struct Page {
    pub repos: Vec<String>,
    pub more: bool,
}

impl Dir {
    /// Brings this node up to date with `path` (stat, and readdir when changed). False when the
    /// directory does not exist.
    fn refresh(&mut self, path: &Path, walk: u64) -> io::Result<bool> {
        if self.seen == walk {
            return Ok(self.stamp.is_some());
        }
        let read_at = SystemTime::now();
        let stamp = Stamp::of(path)?;
        let gone = |d: &mut Dir| {
            *d = Dir {
                seen: walk,
                ..Dir::default()
            };
            Ok(false)
        };
        let Some(s) = &stamp else {
            return gone(self);
        };
        if self.settled && self.stamp.as_ref() == Some(s) {
            self.seen = walk;
            return Ok(true);
        }
        let settled = s.settled(read_at);
        let mut is_repo = false;
        let mut names = Vec::new();
        let Some(entries) = super::read_dir_if_exists(path)? else {
            return gone(self);
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
                is_repo |= n == "_layers" || n == "_manifests";
            } else {
                names.push(n);
            }
        }
        names.sort();
        // Keep what is known below children that are still there.
        let mut old = std::mem::take(&mut self.children).into_iter().peekable();
        let mut children = Vec::with_capacity(names.len());
        for n in names {
            while old.next_if(|(o, _)| **o < *n).is_some() {}
            let node = match old.next_if(|(o, _)| **o == *n) {
                Some((_, d)) => d,
                None => Dir::default(),
            };
            children.push((n.into_boxed_str(), node));
        }
        let mut order: Vec<(u32, bool)> = (0..children.len() as u32)
            .flat_map(|i| [(i, false), (i, true)])
            .collect();
        let key = |&(i, sub): &(u32, bool)| {
            // `order` holds indices of `children` only.
            let name = children.get(i as usize).map(|c| c.0.as_bytes());
            (name.unwrap_or_default(), sub)
        };
        // Byte order of `name` vs `name/`: compare the names with a '/' appended for subtrees.
        order.sort_by(|a, b| {
            let (an, asub) = key(a);
            let (bn, bsub) = key(b);
            let ai = an.iter().chain(asub.then_some(&b'/'));
            let bi = bn.iter().chain(bsub.then_some(&b'/'));
            ai.cmp(bi)
        });
        *self = Dir {
            stamp,
            settled,
            seen: walk,
            is_repo,
            children,
            order,
        };
        Ok(true)
    }

    /// Appends the repositories below this directory (named `prefix` + name) that sort after
    /// `last`, until `want` are collected.
    fn collect(
        &mut self,
        path: &Path,
        prefix: &str,
        last: Option<&str>,
        want: usize,
        walk: u64,
        out: &mut Vec<String>,
    ) -> io::Result<()> {
        for &(i, sub) in &self.order {
            if out.len() >= want {
                return Ok(());
            }
            let Some((name, child)) = self.children.get_mut(i as usize) else {
                continue;
            };
            let full = format!("{prefix}{name}");
            if !sub {
                if last.is_some_and(|l| full.as_str() <= l) {
                    continue;
                }
                if child.refresh(&path.join(&**name), walk)? && child.is_repo {
                    out.push(full);
                }
            } else {
                let below = format!("{full}/");
                // Every name below starts with `below`: all sort before `last` when `below` does
                // and `last` is not itself below it.
                if last.is_some_and(|l| below.as_str() < l && !l.starts_with(below.as_str())) {
                    continue;
                }
                let dir = path.join(&**name);
                if !child.refresh(&dir, walk)? {
                    continue;
                }
                if !child.children.is_empty() {
                    child.collect(&dir, &below, last, want, walk, out)?;
                }
            }
        }
        Ok(())
    }
}

/// A page of the catalog under `root` (the `repositories` directory), updating `tree` on the way.
pub(super) fn page(
    tree: &mut Dir,
    root: &Path,
    last: Option<&str>,
    n: Option<usize>,
) -> io::Result<Page> {
    let want = n.map_or(usize::MAX, |n| n.saturating_add(1));
    let walk = tree.seen.wrapping_add(1).max(1);
    let mut repos = Vec::new();
    if tree.refresh(root, walk)? {
        tree.collect(root, "", last, want, walk, &mut repos)?;
    }
    let more = n.is_some_and(|n| repos.len() > n);
    if let Some(n) = n {
        repos.truncate(n);
    }
    Ok(Page { repos, more })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(root: &Path, name: &str) {
        std::fs::create_dir_all(root.join(name).join("_layers")).unwrap();
    }

    #[test]
    fn exact_byte_order_and_pages() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for r in ["a", "a-b", "a/x", "a/x/y", "b", "c/d", "c/d/e/f", "c.e"] {
            repo(root, r);
        }
        std::fs::create_dir_all(root.join("empty/dir")).unwrap();
        let mut want: Vec<&str> = vec!["a", "a-b", "a/x", "a/x/y", "b", "c.e", "c/d", "c/d/e/f"];
        want.sort();
        let mut tree = Dir::default();
        let all = page(&mut tree, root, None, None).unwrap();
        assert_eq!(all.repos, want);
        assert!(!all.more);
        // Every page size and every starting point gives the same sequence.
        for n in 1..=want.len() + 1 {
            for start in 0..=want.len() {
                let last = start.checked_sub(1).map(|i| want[i]);
                let p = page(&mut tree, root, last, Some(n)).unwrap();
                let end = (start + n).min(want.len());
                assert_eq!(p.repos, &want[start..end], "n={n} last={last:?}");
                assert_eq!(p.more, end < want.len(), "n={n} last={last:?}");
            }
        }
        // `last` need not be a repository.
        let p = page(&mut tree, root, Some("a/w"), Some(2)).unwrap();
        assert_eq!(p.repos, ["a/x", "a/x/y"]);
    }

    #[test]
    fn changes_show_at_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repositories");
        let mut tree = Dir::default();
        assert!(page(&mut tree, &root, None, None).unwrap().repos.is_empty());
        repo(&root, "x/one");
        assert_eq!(page(&mut tree, &root, None, None).unwrap().repos, ["x/one"]);
        repo(&root, "x/one/two");
        repo(&root, "w");
        assert_eq!(
            page(&mut tree, &root, None, None).unwrap().repos,
            ["w", "x/one", "x/one/two"]
        );
        std::fs::remove_dir_all(root.join("x/one/two")).unwrap();
        assert_eq!(
            page(&mut tree, &root, None, None).unwrap().repos,
            ["w", "x/one"]
        );
    }
}
