//! The storage mount guard (`storage.require_mount`): the storage root must be on the configured
//! mount, optionally of a given filesystem type, or registryd writes nothing. This keeps data off the
//! local disk when the shared volume is not mounted at `/mnt/...`.
//!
//! The full check reads `/proc/self/mountinfo`; the per-request check is one `stat` comparing the
//! mount point's device with the one recorded when the check passed (a lazy unmount, or a mount that
//! never happened, shows the parent filesystem's device).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Clones share the device recorded by the last passing check, so the storage driver (which checks
/// before each storage call, on its own threads) and the health state see the same verdict.
#[derive(Debug, Clone)]
pub struct MountGuard {
    mount: PathBuf,
    fstype: Option<String>,
    /// Device of the mount when the full check last passed; 0 = not passed (or lost since).
    dev: Arc<AtomicU64>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            let code = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = code {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (mount point, filesystem type) of each line of a mountinfo text, in order; later lines are
/// mounted on top of earlier ones. Malformed lines are skipped.
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = (PathBuf, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mp = pre.split(' ').nth(4)?;
        Some((PathBuf::from(unescape(mp)), post.split(' ').next()?))
    })
}

/// The filesystem type mounted at `point` according to a mountinfo text (last mount wins).
pub fn fstype_at(mountinfo: &str, point: &Path) -> Option<String> {
    mounts(mountinfo)
        .filter(|(mp, _)| mp == point)
        .last()
        .map(|(_, fstype)| fstype.to_string())
}

impl MountGuard {
    pub fn new(mount: impl Into<PathBuf>, fstype: Option<String>) -> MountGuard {
        MountGuard {
            mount: mount.into(),
            fstype: fstype.filter(|f| !f.is_empty()),
            dev: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Whether the last full check passed and no storage call has seen the mount go since.
    pub fn passed(&self) -> bool {
        self.dev.load(Ordering::SeqCst) != 0
    }

    /// The full check (blocking: it stats the mount point); records the device on success.
    pub fn check(&self) -> Result<u64, String> {
        let r = self.check_inner();
        self.dev.store(*r.as_ref().unwrap_or(&0), Ordering::SeqCst);
        r
    }

    /// Before a storage call, on the thread that makes it (blocking: one `stat`): the mount point
    /// must still be the device that passed the full check, or nothing is touched.
    pub fn admit(&self) -> Result<(), String> {
        let dev = self.dev.load(Ordering::SeqCst);
        if dev != 0 && self.still_mounted(dev) {
            return Ok(());
        }
        self.dev.store(0, Ordering::SeqCst);
        Err(format!(
            "{} is not mounted (storage.require_mount); nothing is written until it is back",
            self.mount.display()
        ))
    }

    fn check_inner(&self) -> Result<u64, String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let Some(fstype) = fstype_at(&info, &self.mount) else {
            return Err(format!(
                "{} is not mounted (storage.require_mount); nothing is written until it is",
                self.mount.display()
            ));
        };
        if let Some(want) = &self.fstype
            && *want != fstype
        {
            return Err(format!(
                "{} is a {fstype} mount, not {want} (storage.require_fstype); nothing is written until it is",
                self.mount.display()
            ));
        }
        std::fs::metadata(&self.mount)
            .map(|m| m.dev())
            .map_err(|e| format!("cannot stat {}: {e}", self.mount.display()))
    }

    /// Is the mount point still the device that passed `check`?
    fn still_mounted(&self, dev: u64) -> bool {
        std::fs::metadata(&self.mount)
            .map(|m| m.dev() == dev)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        90 22 0:50 / /mnt/vagabond rw,relatime shared:40 - fuse.glusterfs node1:/vol rw\n\
        91 22 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";

    #[test]
    fn finds_mounts() {
        assert_eq!(
            fstype_at(INFO, Path::new("/mnt/vagabond")).as_deref(),
            Some("fuse.glusterfs")
        );
        assert_eq!(
            fstype_at(INFO, Path::new("/mnt/with space")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(fstype_at(INFO, Path::new("/mnt")), None);
        assert_eq!(fstype_at(INFO, Path::new("/")).as_deref(), Some("ext4"));
    }
}
