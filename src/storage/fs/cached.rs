//! Reads that finish from the kernel's caches alone, done on the async thread that asks.
//!
//! Storage calls normally run on a blocking thread under a timeout, since a network filesystem can
//! hang. On a local filesystem, a path lookup that the dentry cache answers (`openat2` with
//! `RESOLVE_CACHED`) and a read that the page cache holds (`preadv2` with `RWF_NOWAIT`) cannot
//! block, and for the small hot reads of a pull (a tag's link, a revision link, a blob's size) the
//! hop to a blocking thread and back costs more than the work: two thread wake-ups against a few
//! microseconds. Whatever the caches cannot answer says [`io::ErrorKind::WouldBlock`], and the caller
//! takes the blocking path. Only used where the storage root is on a local filesystem and no mount
//! guard is configured (a shared mount always takes the blocking path).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the kernel lacks `RESOLVE_CACHED` (before 5.12): every call then says WouldBlock.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

pub(super) fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

/// Filesystems on a local block device or in memory, where cached lookups and reads cannot wait on
/// anything but memory.
const LOCAL: &[i64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
    0x794C_7630, // overlayfs (containers)
];

/// Whether `root`, or its nearest existing ancestor (a root not created yet), is on a local
/// filesystem.
pub(super) fn is_local(root: &Path) -> bool {
    for dir in root.ancestors() {
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: a zeroed statfs is a valid out-parameter; `c` is a NUL-terminated path.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
            return LOCAL.contains(&(st.f_type as i64));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
            return false;
        }
    }
    false
}

/// Opens `path` with `flags` if the dentry cache resolves every component; `NotFound` when it
/// knows the name is absent, `WouldBlock` when it would have to ask the filesystem.
pub(super) fn open(path: &Path, flags: libc::c_int) -> io::Result<File> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(would_block());
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| would_block())?;
    // SAFETY: open_how is plain data; zeroed is "no flags", then the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    // SAFETY: `c` and `how` outlive the call; the size passed is that of `how`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) => would_block(),
            Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                would_block()
            }
            _ => e,
        });
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
}

/// The whole content of a small file (at most `limit` bytes), if the caches hold all of it.
pub(super) fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = open(path, libc::O_RDONLY)?;
    let size = f.metadata()?.len();
    if size > limit {
        return Err(would_block());
    }
    let mut buf = vec![0u8; size as usize];
    if size == 0 {
        return Ok(buf);
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points into `buf`, which outlives the call.
    let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    if n < 0 || n as u64 != size {
        // Not cached (EAGAIN), or a short read (being rewritten, or partly cached): ask again on
        // a blocking thread, which reports real errors.
        return Err(would_block());
    }
    Ok(buf)
}

/// The size of the file at `path`, from the inode cache.
pub(super) fn size(path: &Path) -> io::Result<u64> {
    Ok(open(path, libc::O_PATH)?.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_answer_or_say_would_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("link");
        std::fs::write(&p, b"sha256:abc").unwrap();
        // Just written: in the caches. (WouldBlock is allowed too, never a wrong answer.)
        match read_small(&p, 4096) {
            Ok(b) => assert_eq!(b, b"sha256:abc"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
        match size(&p) {
            Ok(n) => assert_eq!(n, 10),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
        assert_eq!(
            read_small(&p, 4).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let missing = dir.path().join("missing");
        let _ = std::fs::metadata(&missing); // leaves a negative dentry
        let e = read_small(&missing, 4096).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::WouldBlock
            ),
            "{e}"
        );
    }

    #[test]
    fn local_filesystem_detection_walks_up_to_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("not/yet/created");
        assert_eq!(is_local(&deep), is_local(dir.path()));
    }
}
