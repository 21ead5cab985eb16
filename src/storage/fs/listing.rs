//! Remembered directory listings (tag lists here; the catalog's tree in `catalog.rs` uses the same
//! stamps), checked against the directory they were read from on every use.
//!
//! A listing is kept with a stamp of its directory (inode, mtime, ctime, link count). Any entry
//! added to or removed from a directory changes its mtime, on this node or any other node sharing
//! the mount, so a listing is reused only while the stamp still matches: one `stat` instead of an
//! `open` + `getdents` + `close`, and never a stale answer.
//!
//! Timestamps are coarse (a kernel tick, or a second on some filesystems), so a change in the same
//! tick as the last one leaves the mtime unchanged. A directory modified less than [`SETTLE`] before
//! it was read is therefore never trusted: the listing is used for that request and not kept (git's
//! "racy index" rule). `SETTLE` also covers clock skew between nodes that set mtimes on a shared mount.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SETTLE: Duration = Duration::from_secs(3);

/// Tag names kept across all repositories; past it the tag cache starts over (bounded memory).
const MAX_CACHED_TAGS: usize = 200_000;

/// What a directory looked like when it was listed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) struct Stamp {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    nlink: u64,
}

impl Stamp {
    /// The directory's stamp now; `None` when it does not exist.
    pub(super) fn of(dir: &Path) -> io::Result<Option<Stamp>> {
        match std::fs::metadata(dir) {
            Ok(m) => Ok(Some(Stamp {
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                nlink: m.nlink(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the directory last changed long enough before `read_at` that a change after the read
    /// is sure to move its mtime.
    pub(super) fn settled(&self, read_at: SystemTime) -> bool {
        // mtime only: any change of the entries sets it to the current time (ctime can't be aged).
        let newest = self.mtime;
        let Ok(read) = read_at.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let limit = read.saturating_sub(SETTLE);
        newest.0 >= 0
            && Duration::new(newest.0 as u64, newest.1.clamp(0, 999_999_999) as u32) < limit
    }
}

/// A sorted listing of one directory, and the directory's stamp when it was read.
pub(super) struct Listing {
    pub dir: PathBuf,
    pub stamp: Stamp,
    pub items: Arc<[String]>,
}

impl Listing {
    /// Whether the directory still looks as it did: the listing is current.
    pub(super) fn current(&self) -> io::Result<bool> {
        Ok(Stamp::of(&self.dir)?.as_ref() == Some(&self.stamp))
    }
}

/// The cached tag lists of one node.
#[derive(Default)]
pub(super) struct Listings {
    tags: HashMap<String, Arc<Listing>>,
    tag_count: usize,
}

impl Listings {
    pub(super) fn tags(&self, repo: &str) -> Option<Arc<Listing>> {
        self.tags.get(repo).cloned()
    }

    /// Keeps `repo`'s tag listing, or forgets the old one when the new one may not be kept.
    pub(super) fn keep_tags(&mut self, repo: &str, listing: Option<Arc<Listing>>) {
        if let Some(old) = self.tags.remove(repo) {
            self.tag_count -= old.items.len();
        }
        let Some(listing) = listing else { return };
        if self.tag_count + listing.items.len() > MAX_CACHED_TAGS {
            self.tags.clear();
            self.tag_count = 0;
        }
        self.tag_count += listing.items.len();
        self.tags.insert(repo.to_string(), listing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_changed_just_before_the_read_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let s = Stamp::of(d.path()).unwrap().unwrap();
        assert!(!s.settled(SystemTime::now()));
        assert!(s.settled(SystemTime::now() + Duration::from_secs(10)));
    }

    #[test]
    fn adding_or_removing_an_entry_changes_the_stamp() {
        let d = tempfile::tempdir().unwrap();
        let listing = || Listing {
            dir: d.path().to_path_buf(),
            stamp: Stamp::of(d.path()).unwrap().unwrap(),
            items: Arc::from(Vec::new()),
        };
        let l = listing();
        assert!(l.current().unwrap());
        // Same-tick changes may keep the mtime; the link count of a directory still moves.
        std::fs::create_dir(d.path().join("t")).unwrap();
        assert!(!l.current().unwrap());
        let l = listing();
        std::fs::remove_dir(d.path().join("t")).unwrap();
        assert!(!l.current().unwrap());
        assert_eq!(
            Stamp::of(&d.path().join("missing")).unwrap(),
            None,
            "a missing directory has no stamp"
        );
    }
}
