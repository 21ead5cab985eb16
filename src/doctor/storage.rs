//! The storage: the S3 bucket (reachable, a write read back, its clock), or the filesystem root
//! (present, writable, on the expected mount, with space to spare).

use std::io::Write;
use std::time::SystemTime;

use super::Report;
use crate::config::Config;

/// The S3 bucket: reachable with the configured credentials, a write read back, the store's
/// clock against this node's.
pub(super) async fn bucket(r: &mut Report, config: &Config) {
    let where_ = config.storage_description();
    let timeout = std::time::Duration::from_secs(config.storage.operation_timeout_secs);
    let opened = config
        .storage_settings()
        .and_then(|s| crate::storage::Storage::from_settings(&s, 4));
    let storage = match opened {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "storage",
                e,
                "set the [s3] section (endpoint, bucket, credentials) or AWS_* variables".into(),
            );
            return;
        }
    };
    if let Err(e) = storage.check().await {
        r.fail(
            "storage",
            format!("{where_}: {e}"),
            "check the endpoint, the bucket name and that the key may read and write it".into(),
        );
        return;
    }
    r.ok("storage", format!("{where_}: a write read back"));
    if let Ok(stamped) = tokio::time::timeout(timeout, storage.clock())
        .await
        .unwrap_or_else(|_| {
            Err(crate::storage::StorageError::Unavailable(
                "timed out".into(),
            ))
        })
    {
        let skew = match stamped.duration_since(std::time::SystemTime::now()) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        };
        if skew.abs() > 60 {
            r.warn(
                "clock",
                format!("the object store's clock is {skew} s from this node's"),
                "sync both with NTP (SigV4 requests fail beyond 15 minutes of skew)".into(),
            );
        }
    }
}

pub(super) fn filesystem(r: &mut Report, config: &Config) {
    let root = &config.storage.root;
    if !config.storage.require_mount.is_empty() {
        let guard = crate::node::mount::MountGuard::new(
            &config.storage.require_mount,
            Some(config.storage.require_fstype.clone()),
        );
        if let Err(e) = guard.check() {
            r.fail(
                "storage",
                e,
                format!(
                    "mount it (mount {} or check /etc/fstab and systemctl status {}.mount)",
                    config.storage.require_mount,
                    config
                        .storage
                        .require_mount
                        .trim_start_matches('/')
                        .replace('/', "-")
                ),
            );
            return;
        }
    }
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            r.fail(
                "storage",
                format!("{} is not a directory", root.display()),
                "set storage.root to a directory".into(),
            );
            return;
        }
        Err(e) => {
            r.fail(
                "storage",
                format!("{}: {e}", root.display()),
                format!(
                    "create it: mkdir -p {} (the package makes /var/lib/registryd)",
                    root.display()
                ),
            );
            return;
        }
    }
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|mi| crate::node::gluster::mount_of(&mi, root));
    let on = mount
        .as_ref()
        .map(|(mp, fs)| format!("on {} ({fs})", mp.display()))
        .unwrap_or_else(|| "on an unknown mount".into());
    // Writable and durable: the daemon's own probe, by hand.
    let probe = root.join(format!(".registryd-doctor-{}", std::process::id()));
    let written = (|| -> std::io::Result<SystemTime> {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"registryd doctor\n")?;
        f.sync_all()?;
        let m = std::fs::metadata(&probe)?.modified()?;
        std::fs::remove_file(&probe)?;
        Ok(m)
    })();
    let mtime = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&probe);
            r.fail(
                "storage",
                format!("{} {on}: cannot write: {e}", root.display()),
                "check the mount (read-only? full? the registryd user's permissions: chown -R registryd: on the root)".into(),
            );
            return;
        }
    };
    let free = crate::storage::free_bytes(root).unwrap_or(0);
    let gib = free as f64 / (1u64 << 30) as f64;
    if config.storage.min_free_bytes > 0 && free < config.storage.min_free_bytes {
        r.fail(
            "storage",
            format!(
                "{} {on}: {gib:.1} GiB free, under storage.min_free_bytes: pushes are refused",
                root.display()
            ),
            "free space: registryd gc (and docker image prune on the nodes)".into(),
        );
    } else {
        r.ok(
            "storage",
            format!("{} {on}: writable, {gib:.1} GiB free", root.display()),
        );
    }
    // A clock far from the storage servers' breaks GC grace and upload expiry.
    let skew = match mtime.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    if skew.abs() > 5.0 {
        r.warn(
            "clock",
            format!("files written on the storage get times {skew:+.0} s from this node's clock"),
            "synchronise every node and storage server with NTP (timedatectl set-ntp true)".into(),
        );
    }
    match crate::node::gluster::check(root) {
        None => {}
        Some(Err(e)) => r.warn(
            "glusterfs",
            format!("cannot read the volume's options: {e}"),
            "mount with the glusterfs FUSE client (not NFS) so registryd can check coherence"
                .into(),
        ),
        Some(Ok(problems)) if problems.is_empty() => r.ok(
            "glusterfs",
            "coherence options are as registryd needs them".into(),
        ),
        Some(Ok(problems)) => {
            for p in problems {
                r.warn("glusterfs", p.what, p.fix);
            }
        }
    }
}
