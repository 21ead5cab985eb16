//! Writing the hosts file: atomically (temp file, fsync, rename, directory fsync) with its mode and
//! owner kept, in place where it is a bind mount, and merging another program's edit that lands
//! while registryd rewrites it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::block::{Damage, damage, remove_block, render};

/// [`damage`] of the hosts file at `path`.
pub fn inspect(path: &Path) -> io::Result<Vec<Damage>> {
    Ok(damage(&fs::read_to_string(path)?))
}

/// How the file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Unchanged,
    Replaced,
    /// Rename was refused (a bind-mounted file); the content was rewritten in place.
    InPlace,
}

/// Applies `entries` to the hosts file at `path`.
pub fn apply(path: &Path, entries: &[(IpAddr, String)]) -> io::Result<Written> {
    update(path, |text| render(text, entries))
}

/// Removes the block from the hosts file at `path`.
pub fn remove(path: &Path) -> io::Result<Written> {
    update(path, remove_block)
}

fn update(path: &Path, f: impl Fn(&str) -> String) -> io::Result<Written> {
    // When another program's edit lands in the file between our read and our rename, it is in the
    // old inode we hold open; the next round applies our change on top of it.
    let mut base: Option<String> = None;
    for _ in 0..10 {
        let mut old = File::open(path)?;
        let mut on_disk = String::new();
        old.read_to_string(&mut on_disk)?;
        let new = f(base.as_deref().unwrap_or(&on_disk));
        if new == on_disk {
            return Ok(Written::Unchanged);
        }
        let meta = old.metadata()?;
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "hosts path has no directory")
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.registryd-{}", std::process::id()));
        let renamed = (|| {
            let mut t = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(meta.mode() & 0o7777)
                .open(&tmp)?;
            t.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            // Keep the owner (only root can give a file away, and registryd runs as root here).
            let _ = std::os::unix::fs::fchown(&t, Some(meta.uid()), Some(meta.gid()));
            t.write_all(new.as_bytes())?;
            t.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            // A bind-mounted file cannot be renamed over (EBUSY), and under ProtectSystem=strict with
            // ReadWritePaths=/etc/hosts its directory is read-only (EROFS): rewrite it in place.
            if !matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EROFS)) {
                return Err(e);
            }
            let mut f = OpenOptions::new().write(true).open(path)?;
            f.set_len(0)?;
            f.seek(io::SeekFrom::Start(0))?;
            f.write_all(new.as_bytes())?;
            f.sync_all()?;
            return Ok(Written::InPlace);
        }
        File::open(dir)?.sync_all()?;
        // Writers that opened the file just before our rename are appending to the old inode, which
        // we still hold open. Move what they add to the new file, whole lines only (a read can catch
        // an append half done), until the old inode has been quiet for a few milliseconds.
        let mut moved = on_disk.len();
        let mut after = String::new();
        let mut appended_only = true;
        let mut quiet_rounds = 0;
        let mut last_len = on_disk.len();
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            // Look for other holders of the old inode *before* reading it: a writer that appends and
            // closes between a read and the look would otherwise be missed. Once nobody holds it, no
            // one can open it again (the name points at the new file), so this read is the last word.
            let released = quiet_rounds >= 3 && !held_elsewhere(&old, &meta);
            after.clear();
            old.seek(io::SeekFrom::Start(0))?;
            old.read_to_string(&mut after)?;
            if !after.starts_with(on_disk.as_str()) {
                appended_only = false;
                break;
            }
            quiet_rounds = if after.len() == last_len {
                quiet_rounds + 1
            } else {
                0
            };
            last_len = after.len();
            let pending = &after[moved..];
            // Whole lines now; a partial last line only once the writer has gone quiet.
            let take = if quiet_rounds >= 3 {
                pending
            } else {
                pending
                    .rfind('\n')
                    .and_then(|p| pending.get(..=p))
                    .unwrap_or_default()
            };
            if !take.is_empty() {
                let mut f = OpenOptions::new().append(true).open(path)?;
                f.write_all(take.as_bytes())?;
                f.sync_all()?;
                moved += take.len();
            }
            // A writer can sit between its open and its write for longer than any quiet period
            // (a busy machine deschedules it), so finish only once nobody else holds the old inode.
            if released && moved == after.len() {
                break;
            }
        }
        if appended_only {
            return Ok(Written::Replaced);
        }
        // Rewritten in place meanwhile: their version wins, and our block goes on top of it.
        base = Some(after);
    }
    Err(io::Error::other(
        "hosts file keeps changing under registryd; gave up after 10 tries",
    ))
}

/// Whether any open file descriptor other than `ours` (in this or another process) may write to the
/// inode `meta` describes (readers that keep the file open do not matter). Processes whose descriptors cannot be read are skipped.
fn held_elsewhere(ours: &File, meta: &fs::Metadata) -> bool {
    use std::os::fd::AsRawFd;
    let own_pid = std::process::id().to_string();
    let own_fd = ours.as_raw_fd().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    for proc in procs.flatten() {
        let pid = proc.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if pid == own_pid && fd.file_name() == own_fd.as_str() {
                continue;
            }
            if let Ok(m) = fs::metadata(fd.path())
                && m.dev() == meta.dev()
                && m.ino() == meta.ino()
                && open_for_writing(&proc.path(), &fd.file_name())
            {
                return true;
            }
        }
    }
    false
}

/// Whether descriptor `fd` of the process at `proc` was opened for writing, from its fdinfo flags.
fn open_for_writing(proc: &Path, fd: &std::ffi::OsStr) -> bool {
    let Ok(info) = fs::read_to_string(proc.join("fdinfo").join(fd)) else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(hosts: &[&str]) -> Vec<(IpAddr, String)> {
        hosts
            .iter()
            .map(|h| ("169.254.254.254".parse().unwrap(), h.to_string()))
            .collect()
    }

    #[test]
    fn apply_keeps_mode_and_owner_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        fs::write(&p, "127.0.0.1 localhost\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            apply(&p, &e(&["registry.home"])).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            apply(&p, &e(&["registry.home"])).unwrap(),
            Written::Unchanged
        );
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert!(fs::read_to_string(&p).unwrap().contains("registry.home"));
        assert_eq!(remove(&p).unwrap(), Written::Replaced);
        assert_eq!(fs::read_to_string(&p).unwrap(), "127.0.0.1 localhost\n");
        // no temp files left
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
