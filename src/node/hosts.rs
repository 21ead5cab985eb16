//! The `/etc/hosts` block: one line per configured hostname pointing at the registry address, fenced
//! by marker comments. Every other byte of the file is preserved (comments, tabs, CRLF, a missing
//! final newline), and removing the block gives back exactly the file it was added to.
//!
//! The file is replaced atomically (temp file, fsync, rename, directory fsync) with its mode and
//! owner kept. Where it is a bind mount (containers, some systemd sandboxes) rename fails with
//! `EBUSY`, and the content is rewritten in place instead. Another program's edit that lands while
//! registryd rewrites the file is detected (the old inode changed after it was read) and merged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const BEGIN: &str = "# BEGIN registryd managed block (do not edit; see node.hostnames)";
pub const END: &str = "# END registryd managed block";

fn eol_of(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// Byte span of the block, widened to take the line ending that joined it to the file.
fn block_span(text: &str) -> Option<(usize, usize)> {
    let begin = text.find(BEGIN)?;
    // BEGIN must start a line.
    if begin > 0 && !text[..begin].ends_with('\n') {
        return None;
    }
    let end_rel = text[begin..].find(END)?;
    let mut end = begin + end_rel + END.len();
    let mut start = begin;
    if text[end..].starts_with("\r\n") {
        end += 2;
    } else if text[end..].starts_with('\n') {
        end += 1;
    } else if start > 0 {
        // The block was appended to a file without a final newline: we added the separator before
        // it, so take that back too.
        start -= if text[..start].ends_with("\r\n") {
            2
        } else {
            1
        };
    }
    Some((start, end))
}

/// The file without the block.
pub fn remove_block(text: &str) -> String {
    match block_span(text) {
        Some((s, e)) => format!("{}{}", &text[..s], &text[e..]),
        None => text.to_string(),
    }
}

/// The file with the block holding `entries` (address, hostname), in place of any previous block;
/// without a block when `entries` is empty.
pub fn render(text: &str, entries: &[(IpAddr, String)]) -> String {
    if entries.is_empty() {
        return remove_block(text);
    }
    let eol = eol_of(text);
    let mut block = String::from(BEGIN);
    for (ip, host) in entries {
        block.push_str(eol);
        block.push_str(&format!("{ip}\t{host}"));
    }
    block.push_str(eol);
    block.push_str(END);
    if let Some((s, e)) = block_span(text) {
        // Keep the joint exactly as it was: an end-of-file block stays without a final newline.
        let had_eol = text[..e].ends_with('\n');
        let sep_before = s < text.len() && !text[s..].starts_with(BEGIN);
        let mut out = String::from(&text[..s]);
        if sep_before {
            out.push_str(eol);
        }
        out.push_str(&block);
        if had_eol {
            out.push_str(eol);
        }
        out.push_str(&text[e..]);
        return out;
    }
    if text.is_empty() || text.ends_with('\n') {
        format!("{text}{block}{eol}")
    } else {
        format!("{text}{eol}{block}")
    }
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
                pending.len()
            } else {
                pending.rfind('\n').map_or(0, |p| p + 1)
            };
            if take > 0 {
                let mut f = OpenOptions::new().append(true).open(path)?;
                f.write_all(&pending.as_bytes()[..take])?;
                f.sync_all()?;
                moved += take;
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
    fn table() {
        let cases = [
            "",
            "127.0.0.1\tlocalhost\n",
            "127.0.0.1 localhost\n# comment\n::1\tip6-localhost ip6-loopback\n",
            "127.0.0.1 localhost",                    // no trailing newline
            "127.0.0.1 localhost\r\n10.0.0.1\tx\r\n", // CRLF
            "127.0.0.1 localhost\r\n10.0.0.1\tx",     // CRLF, no trailing newline
            "\t# indented comment\t\n\n\n",
        ];
        for original in cases {
            let one = render(original, &e(&["registry.home"]));
            assert!(one.contains("169.254.254.254\tregistry.home"), "{one:?}");
            assert!(
                one.starts_with(original) || !original.ends_with('\n'),
                "{original:?} -> {one:?}"
            );
            // Idempotent.
            assert_eq!(render(&one, &e(&["registry.home"])), one);
            // Changing the names replaces the block; removed names go.
            let two = render(&one, &e(&["a.home", "b.home"]));
            assert!(
                !two.contains("registry.home") && two.contains("a.home") && two.contains("b.home")
            );
            assert_eq!(two.matches(BEGIN).count(), 1);
            // Removing gives back the original, byte for byte.
            assert_eq!(remove_block(&two), original, "from {two:?}");
            assert_eq!(render(&two, &[]), original);
            if original.contains("\r\n") {
                assert!(
                    !two.replace("\r\n", "").contains('\n'),
                    "mixed line endings in {two:?}"
                );
            }
        }
    }

    #[test]
    fn block_in_the_middle_keeps_both_sides() {
        let text = format!("a\n{BEGIN}\n1.2.3.4\told\n{END}\nb\n");
        let out = render(&text, &e(&["new.home"]));
        assert_eq!(
            out,
            format!("a\n{BEGIN}\n169.254.254.254\tnew.home\n{END}\nb\n")
        );
        assert_eq!(remove_block(&out), "a\nb\n");
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
