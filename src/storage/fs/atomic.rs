//! Durable file publication on a shared, replicated mount (ARCHITECTURE.md, durability rules 1 and 6).
//!
//! A file becomes visible under its final name only by: write a temp file in the same directory,
//! `fsync` it, `rename` it over the final name, `fsync` the directory. New directories are made
//! durable the same way: `mkdir`, then `fsync` of the parent. No `O_TMPFILE` and no `renameat2`
//! flags: GlusterFS refuses both.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

use crate::storage::layout::Layout;

/// `fsync` a directory so that entries created, renamed or removed in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    retry_stale(|| File::open(dir)?.sync_all())
}

/// `mkdir -p`, with every directory it creates made durable in its parent, and without the cluster
/// lock of [`make_dirs`]: for the lock directory itself, and for trees no other node creates.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if is_dir(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    create_dir_durable(dir)
}

/// `mkdir -p` of a directory under `layout`'s root, durable as [`create_dir_all_durable`], with each
/// new shared directory made under its cluster lock ([`Layout::dir_lock`]): two nodes creating the
/// same new directory at the same moment on a partitioned GlusterFS volume each give it their own
/// GFID (a split-brain the volume can only resolve by discarding one). Under the lock a node looks
/// again and finds the other's directory instead. A directory that exists costs one lookup, as
/// before: the lock is only taken to create.
pub fn make_dirs(layout: &Layout, dir: &Path) -> io::Result<()> {
    if is_dir(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(layout, parent)?;
    }
    let Some(lock) = layout.dir_lock(dir) else {
        return create_dir_durable(dir);
    };
    {
        let _held = lock_file_waiting(&lock, DIR_LOCK_WAIT)?;
        // Another node (or request) may have made it while this one waited for the lock.
        if is_dir(dir) {
            return Ok(());
        }
        create_dir(dir)?;
    }
    // The parent's fsync after the lock is released: the lock only keeps two nodes from making
    // the directory at once, and on a shared volume the fsync is the slow part (holding the lock
    // through it made 30 concurrent pushers queue for the 16 locks past the operation timeout).
    fsync_parent(dir)
}

/// [`make_dirs`] of several directories at once, a thread each: on a shared mount their round
/// trips overlap instead of adding up. The first error is returned once all have ended.
pub fn make_dirs_at_once(layout: &Layout, dirs: &[&Path]) -> io::Result<()> {
    std::thread::scope(|s| {
        let running = dirs
            .iter()
            .map(|d| std::thread::Builder::new().spawn_scoped(s, move || make_dirs(layout, d)))
            .collect::<Vec<_>>();
        let mut first = Ok(());
        for r in running {
            let done = match r {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a directory maker panicked"))),
                Err(e) => Err(e),
            };
            if first.is_ok() {
                first = done;
            }
        }
        first
    })
}

/// How long [`make_dirs`] waits for a directory lock: its holders hold it for a lookup and one
/// `mkdir`, so a longer wait means a hung mount, which the operation timeout reports anyway.
const DIR_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn is_dir(dir: &Path) -> bool {
    retry_stale(|| fs::metadata(dir)).is_ok_and(|m| m.is_dir())
}

/// One `mkdir` whose parent exists, made durable in the parent.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    create_dir(dir)?;
    fsync_parent(dir)
}

/// One `mkdir` whose parent exists; made already (by another node or request) is fine.
fn create_dir(dir: &Path) -> io::Result<()> {
    match retry_stale(|| fs::create_dir(dir)) {
        Ok(()) => Ok(()),
        // Another node or request made it at the same moment: fine, it is there.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // Nodes creating one new directory at the same moment can leave its replicas with different
        // identities (a GlusterFS GFID split-brain): EIO until the volume's favorite-child policy
        // resolves it, which it does on the next lookup. Look once more before failing.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
            back_off(1);
            if is_dir(dir) {
                tracing::warn!(
                    dir = %dir.display(),
                    "mkdir answered EIO but a fresh lookup finds the directory (a split-brain the volume resolved)"
                );
                return Ok(());
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn fsync_parent(dir: &Path) -> io::Result<()> {
    match dir.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

fn temp_name(path: &Path) -> io::Result<std::path::PathBuf> {
    Layout::temp_beside(path, &Uuid::new_v4())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
}

/// Whether a file named `file_name` is an atomic write's temp file (see [`Layout::temp_beside`]).
pub fn is_temp(file_name: &str) -> bool {
    Layout::is_temp(file_name)
}

/// Writes `bytes` to `path` (under `layout`'s root) so that a reader (on any node) sees either the
/// old file or the whole new one, and the new one survives a crash once this returns.
pub fn write_atomic(layout: &Layout, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let tmp = temp_name(path)?;
    let create = || retry_stale(|| OpenOptions::new().write(true).create_new(true).open(&tmp));
    // The directory is looked at (and made) only when the temp file finds it missing: it mostly
    // exists, and each lookup is a round trip to every brick on a shared mount.
    let mut f = match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dirs(layout, dir)?;
            create()?
        }
        other => other?,
    };
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        rename_retrying(&tmp, path, || Ok(fs::read(path)? == bytes))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)
}

/// Writes a link file even when it already says `content`, so its time says when a push last
/// confirmed it: the garbage collector keeps what was linked since its mark began. (Rewriting by
/// rename, not touching the time in place: on GlusterFS, setting the time of a file that another
/// node renames over at the same moment failed with EIO under a 30-client push storm.)
pub fn rewrite_link(layout: &Layout, path: &Path, content: &str) -> io::Result<()> {
    write_atomic(layout, path, content.as_bytes())
}

/// Moves an already-fsynced file to `dest` (same filesystem, under `layout`'s root) and makes the
/// rename durable.
pub fn publish(layout: &Layout, src: &Path, dest: &Path) -> io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    make_dirs(layout, dir)?;
    // A blob is immutable: whatever lies at `dest` once `src` is gone is the same bytes.
    rename_retrying(src, dest, || Ok(fs::symlink_metadata(dest).is_ok()))?;
    fsync_dir(dir)
}

/// `rename`, repeated on transient errors. A transient error can come after the rename took
/// effect on the servers, so a repeat that finds `src` gone is success when `landed` confirms
/// that `dest` holds what was renamed.
fn rename_retrying(
    src: &Path,
    dest: &Path,
    landed: impl Fn() -> io::Result<bool>,
) -> io::Result<()> {
    let mut repeated = false;
    retry_stale(|| {
        let r = fs::rename(src, dest);
        match r {
            Err(ref e) if repeated && e.kind() == io::ErrorKind::NotFound && landed()? => Ok(()),
            Err(ref e) if transient(e) => {
                repeated = true;
                r
            }
            other => other,
        }
    })
}

/// Takes `flock` operation `op` (`LOCK_EX` or `LOCK_SH`) on `f` without waiting: `true` when taken,
/// `false` when another open file description (in this process or on any node sharing the mount)
/// holds a conflicting lock. The kernel releases it when the holder dies.
pub fn flock_nb(f: &File, op: libc::c_int) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `f` owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Opens (creating it and its directory) the lock file at `path` and takes it exclusively without
/// waiting; `None` when someone else holds it. The lock lasts as long as the returned file.
pub fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    let f = open_lock_file(path)?;
    Ok(flock_nb(&f, libc::LOCK_EX)?.then_some(f))
}

/// Opens the lock file at `path`, creating it and its directory when missing. The directory is
/// looked at only when the open finds it missing (it nearly always exists: every lookup is a
/// network round trip on a shared mount).
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    let open = || {
        retry_stale(|| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
        })
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                create_dir_all_durable(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// Takes the lock file at `path` exclusively, waiting up to `wait` for its holder (on any node) to
/// let go: polled, so a thread never blocks in the kernel on a lock whose holder hangs. The lock
/// lasts as long as the returned file.
///
/// Threads of this process wait for each other in memory first ([`gate`]): only the one at the
/// front polls the shared lock, so 30 requests of one node that need one lock cost the mount one
/// poll at a time instead of 30 (each a round trip to every brick).
pub fn lock_file_waiting(path: &Path, wait: std::time::Duration) -> io::Result<HeldLock> {
    let stale = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} stayed locked for {} s", path.display(), wait.as_secs()),
        )
    };
    let deadline = std::time::Instant::now() + wait;
    let pass = gate::enter(path, deadline).ok_or_else(stale)?;
    let f = open_lock_file(path)?;
    let mut pause = std::time::Duration::from_millis(1);
    while !flock_nb(&f, libc::LOCK_EX)? {
        if std::time::Instant::now() >= deadline {
            return Err(stale());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
    // Field order: the file (and its flock) goes before the pass lets the next thread in.
    Ok(HeldLock {
        _file: f,
        _pass: pass,
    })
}

/// A lock file held by [`lock_file_waiting`]: released (on every node) when dropped.
pub struct HeldLock {
    _file: File,
    _pass: gate::Pass,
}

/// This process's queue in front of each lock file: one thread at a time per path.
mod gate {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::Instant;

    /// Per path: whether a thread is inside, and how many threads hold or await the entry (the
    /// last one out removes it, so the map holds only paths in use).
    #[derive(Default)]
    struct Entry {
        busy: Mutex<(bool, usize)>,
        free: Condvar,
    }

    fn entries() -> MutexGuard<'static, HashMap<PathBuf, Arc<Entry>>> {
        static ENTRIES: OnceLock<Mutex<HashMap<PathBuf, Arc<Entry>>>> = OnceLock::new();
        ENTRIES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Inside while held.
    pub struct Pass {
        path: PathBuf,
        entry: Arc<Entry>,
        /// False while still waiting (and for one that gave up): leaving then lets nobody in.
        inside: bool,
    }

    /// Waits until no other thread of this process is inside `path`'s gate, up to `deadline`;
    /// `None` when the deadline passed first.
    pub fn enter(path: &Path, deadline: Instant) -> Option<Pass> {
        let entry = {
            let mut map = entries();
            let e = map.entry(path.to_path_buf()).or_default().clone();
            e.busy.lock().unwrap_or_else(PoisonError::into_inner).1 += 1;
            e
        };
        let mut pass = Pass {
            path: path.to_path_buf(),
            entry,
            inside: false,
        };
        let mut busy = pass
            .entry
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while busy.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Dropped without having entered: only the count goes.
                drop(busy);
                return None;
            }
            busy = pass
                .entry
                .free
                .wait_timeout(busy, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        busy.0 = true;
        drop(busy);
        pass.inside = true;
        Some(pass)
    }

    impl Drop for Pass {
        fn drop(&mut self) {
            let mut map = entries();
            let mut busy = self
                .entry
                .busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.inside {
                busy.0 = false;
            }
            busy.1 -= 1;
            if busy.1 == 0 {
                map.remove(&self.path);
            }
            drop(busy);
            // Every waiter looks again (a handful at most: one node's requests for one lock).
            self.entry.free.notify_all();
        }
    }

    #[cfg(test)]
    pub fn in_use(path: &Path) -> bool {
        entries().contains_key(path)
    }
}

/// Removes a directory tree without making the removal durable (for what a crash may bring back
/// harmlessly); absent is success. `Ok(false)` when the directory is still there after the retries.
///
/// `remove_dir_all` takes `NotFound` for done, and on a shared mount a lookup can answer it (or
/// `ESTALE`, or `ENOTEMPTY` for an entry another brick still lists) while the directory remains:
/// a fresh lookup decides, and the removal is repeated with the back-off of [`retry_stale`].
pub fn remove_tree(path: &Path) -> io::Result<bool> {
    for attempt in 0..=RETRIES {
        match fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if transient(&e) || e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => return Err(e),
        }
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) if !transient(&e) => return Err(e),
            _ if attempt < RETRIES => back_off(attempt + 1),
            _ => {}
        }
    }
    Ok(false)
}

/// Removes a file or a whole directory, durably; `Ok(false)` when it was absent. A directory goes
/// through [`remove_tree`], and one still listed after its retries is an error: the caller asked for
/// it gone (a cancelled upload, a deleted tag), and must not answer as if it were.
pub fn remove_durable(path: &Path) -> io::Result<bool> {
    let removed = match retry_stale(|| fs::symlink_metadata(path)) {
        Ok(m) if m.is_dir() => {
            if !remove_tree(path)? {
                return Err(io::Error::other(format!(
                    "{} is still listed after removing it",
                    path.display()
                )));
            }
            true
        }
        Ok(_) => match fs::remove_file(path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if removed && let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Reads a small file, retrying a bounded number of times when another node's rename races the
/// read (`ESTALE` on GlusterFS and NFS).
pub fn read_retrying(path: &Path) -> io::Result<Vec<u8>> {
    retry_stale(|| fs::read(path))
}

/// Whether a shared-mount error is worth repeating the operation for: `ESTALE` (another node just
/// renamed over or created the entry, leaving this node's cached handle stale) and `ENOTCONN`
/// (GlusterFS answers it now and then when several clients rename onto one name at the same moment,
/// with every brick up; a real loss of quorum keeps answering it and the retries end quickly).
fn transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOTCONN))
}

/// How many times a transient shared-mount error is retried.
const RETRIES: u64 = 5;

/// The pause before retry `attempt` (1-based): 20 ms more each time, 300 ms over all [`RETRIES`].
fn back_off(attempt: u64) {
    std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
}

/// Runs `op` again when it fails with a transient shared-mount error (up to [`RETRIES`] times,
/// with [`back_off`]): repeating the lookup finds the new entry (durability rule 5).
pub fn retry_stale<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if transient(&e) && attempt < RETRIES => {
                attempt += 1;
                back_off(attempt);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Threads of one process queue in memory for a lock file; the one that waits past its time
    /// gives up with a message naming the lock, and the queue leaves nothing behind.
    #[test]
    fn lock_file_waiters_queue_in_memory_and_give_up_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/mkdir-03");
        let long = std::time::Duration::from_secs(10);
        let held = lock_file_waiting(&path, long).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiters: Vec<_> = (0..4)
            .map(|k| {
                let (p, o) = (path.clone(), order.clone());
                std::thread::spawn(move || {
                    let _l = lock_file_waiting(&p, long).unwrap();
                    o.lock().unwrap().push(k);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            order.lock().unwrap().is_empty(),
            "a waiter got in while the lock was held"
        );
        let short = lock_file_waiting(&path, std::time::Duration::from_millis(30));
        let e = short.err().expect("the lock is held");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("mkdir-03 stayed locked"), "{e}");
        drop(held);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(order.lock().unwrap().len(), 4);
        assert!(!gate::in_use(&path));
        // Another process (another open file description) is refused while one holds it.
        let held = lock_file_waiting(&path, long).unwrap();
        assert!(try_lock_file(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock_file(&path).unwrap().is_some());
    }

    /// A write into a directory that is not there yet makes it (and only then looks for it).
    #[test]
    fn write_atomic_makes_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let path = l.repositories().join("a/b/_manifests/tags/t/current/link");
        write_atomic(&l, &path, b"one").unwrap();
        write_atomic(&l, &path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "a temp file was left beside the link");
    }

    #[test]
    fn remove_tree_removes_and_takes_absent_for_done() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("_uploads/u1");
        fs::create_dir_all(tree.join("hashstates/sha256")).unwrap();
        fs::write(tree.join("data"), b"x").unwrap();
        fs::write(tree.join("hashstates/sha256/0"), b"y").unwrap();
        assert!(remove_tree(&tree).unwrap());
        assert!(!tree.exists());
        assert!(dir.path().join("_uploads").is_dir());
        assert!(remove_tree(&tree).unwrap());
    }

    #[test]
    fn write_atomic_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let p = dir.path().join("a/b/c/link");
        write_atomic(&l, &p, b"one").unwrap();
        write_atomic(&l, &p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // no temp files left behind
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn remove_durable_absent_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!remove_durable(&dir.path().join("x")).unwrap());
        write_atomic(&Layout::new(dir.path()), &dir.path().join("d/f"), b"x").unwrap();
        assert!(remove_durable(&dir.path().join("d")).unwrap());
        assert!(!dir.path().join("d").exists());
    }
    #[test]
    fn a_new_directory_waits_for_its_lock_and_an_existing_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let repo = dir.path().join("docker/registry/v2/repositories/a/_layers");
        make_dirs(&l, &repo).unwrap();
        let new = repo.join("sha256/0123");
        // Another node holds the lock for the new directory (a separate open file description).
        let lock = l.dir_lock(&repo.join("sha256")).unwrap();
        let held = lock_file_waiting(&lock, std::time::Duration::ZERO).unwrap();
        let existing = std::time::Instant::now();
        make_dirs(&l, &repo).unwrap();
        assert!(existing.elapsed() < std::time::Duration::from_secs(1));
        let maker = {
            let (l, new) = (l.clone(), new.clone());
            std::thread::spawn(move || make_dirs(&l, &new))
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!repo.join("sha256").exists(), "made without its lock");
        drop(held);
        maker.join().unwrap().unwrap();
        assert!(new.is_dir());
    }

    #[test]
    fn locks_are_named_from_the_path_under_the_root_and_spare_upload_sessions() {
        let (a, b) = (Layout::new("/mnt/one"), Layout::new("/srv/two/root"));
        let rel = "docker/registry/v2/repositories/x/_layers/sha256/ab";
        let lock_a = a.dir_lock(&a.root().join(rel)).unwrap();
        let lock_b = b.dir_lock(&b.root().join(rel)).unwrap();
        assert_eq!(lock_a.file_name(), lock_b.file_name());
        assert!(a.dir_locks().contains(&lock_a));
        let session = a
            .root()
            .join("docker/registry/v2/repositories/x/_uploads/u1/hashstates");
        assert_eq!(a.dir_lock(&session), None);
        assert_eq!(a.dir_lock(session.parent().unwrap()), None);
        assert!(
            a.dir_lock(&a.root().join("docker/registry/v2/repositories/x/_uploads"))
                .is_some()
        );
        assert_eq!(a.dir_lock(a.root()), None);
        assert_eq!(a.dir_lock(Path::new("/elsewhere")), None);
        assert_eq!(a.dir_lock(&a.lock_file("x").with_file_name("")), None);
    }
}
