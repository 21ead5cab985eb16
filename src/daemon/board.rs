//! This node's report on the status board, the web UI's node page: set at start from the
//! configuration, then kept current by whoever in the daemon learns something new: the storage
//! check (health, free space, the mount), the certificate watch and SIGHUP, the GC job, and the
//! heartbeat job (which also refreshes readiness before each beat). Each post is a few field
//! writes under the board's lock; none touches storage.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, StorageDriver};
use crate::health::Health;
use crate::http::handlers::App;
use crate::node::mount::MountGuard;
use crate::node::tls::Tls;
use crate::status::{Board, CertificateReport, GcReport, NodeName};

/// What a post about the storage's state needs besides the app: the mount guard, if any.
#[derive(Clone)]
pub(super) struct StorageFacts {
    pub guard: Option<MountGuard>,
    /// `storage.require_fstype`, shown beside the mount ("" for any type).
    pub fstype: String,
}

/// This node's name in the cluster: `node.name`, else the machine's hostname made into a name.
pub(super) fn node_name(config: &Config) -> NodeName {
    if !config.node.name.is_empty() {
        match NodeName::parse(&config.node.name) {
            Ok(n) => return n,
            // Validation refuses such a config; should one slip through, the hostname serves.
            Err(e) => tracing::warn!(error = %e, "node.name unusable, using the hostname"),
        }
    }
    // The kernel's own copy (what `hostname` prints), without a crate or a libc call for it.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    NodeName::from_hostname(&host)
}

/// The report at start: who this node is, where it serves, what storage it serves from.
pub(super) fn post_start(
    board: &Board,
    config: &Config,
    node: &NodeName,
    listen: &[SocketAddr],
    facts: &StorageFacts,
) {
    let heartbeat_secs = config.node.heartbeat_secs;
    board.update_node(|n| {
        n.name = node.to_string();
        n.version = env!("CARGO_PKG_VERSION").to_string();
        n.addresses = listen.iter().map(|a| a.to_string()).collect();
        n.hostnames = config.node.hostnames.clone();
        n.heartbeat_secs = heartbeat_secs;
        n.storage.driver = config.storage.driver.as_str().to_string();
        n.storage.root = storage_root(config);
        n.storage.mount_guard = mount_state(facts);
    });
}

/// Where the storage is: the root directory, or `s3://bucket/prefix`.
fn storage_root(config: &Config) -> String {
    match config.storage.driver {
        StorageDriver::Filesystem => config.storage.root.display().to_string(),
        StorageDriver::S3 => {
            let prefix = config.s3.prefix.trim_matches('/');
            if prefix.is_empty() {
                format!("s3://{}", config.s3.bucket)
            } else {
                format!("s3://{}/{prefix}", config.s3.bucket)
            }
        }
    }
}

/// The mount guard's verdict as the node page says it (`None`: no guard configured).
fn mount_state(facts: &StorageFacts) -> Option<String> {
    let g = facts.guard.as_ref()?;
    let kind = if facts.fstype.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.fstype)
    };
    Some(if g.passed() {
        format!("{}{kind} is mounted", g.mount().display())
    } else {
        format!(
            "{}{kind} is NOT mounted: nothing is read or written",
            g.mount().display()
        )
    })
}

/// Readiness, the last storage check, refused writes and the mount, as the health has them now.
pub(super) fn post_health(board: &Board, app: &App, facts: &StorageFacts) {
    let health: &Health = &app.health;
    let ready = health.is_ready();
    let reason = (!ready).then(|| health.reason());
    let writes_refused = if app.settings().read_only {
        Some("storage.read_only is on: pushes and deletes are refused".to_string())
    } else {
        health.low_space()
    };
    let last_check = health.last_check();
    board.update_node(|n| {
        n.ready = ready;
        n.not_ready_reason = reason;
        n.writes_refused = writes_refused;
        n.storage.mount_guard = mount_state(facts);
        if let Some((at, error)) = last_check {
            n.storage.last_check = Some(at);
            n.storage.last_check_error = error;
        }
    });
}

/// Free bytes under the root, as the last measure found them (`None`: a bucket).
pub(super) fn post_free_space(board: &Board, free: Option<u64>) {
    board.update_node(|n| n.storage.free_bytes = free);
}

/// GlusterFS settings that break registryd's assumptions, as the start-up check found them.
pub(super) fn post_gluster(board: &Board, warnings: Vec<String>) {
    board.update_node(|n| n.storage.gluster_warnings = warnings);
}

/// The certificate in service, and the last refused reload if the previous pair is kept.
pub(super) fn post_certificate(board: &Board, tls: &Tls) {
    let info = tls.info();
    let report = CertificateReport {
        subject: info.subject,
        names: info.names,
        not_after: u64::try_from(info.not_after)
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        reload_error: tls.last_error(),
    };
    board.update_node(|n| n.certificate = Some(report));
}

/// A GC pass this node ran to its end (`Ok`) or that failed (`Err`).
pub(super) fn post_gc(board: &Board, result: Result<&crate::lifecycle::gc::GcReport, String>) {
    let report = match result {
        Ok(r) => GcReport {
            finished: Some(SystemTime::now()),
            blobs_removed: r.blobs_removed as u64,
            manifests_removed: r.manifests_removed as u64,
            bytes_freed: r.bytes_freed,
            error: None,
        },
        Err(e) => GcReport {
            finished: Some(SystemTime::now()),
            error: Some(e),
            ..Default::default()
        },
    };
    board.update_node(|n| n.last_gc = Some(report));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_is_named_as_the_node_page_shows_it() {
        let mut c = Config::defaults();
        c.storage.root = "/srv/registry".into();
        assert_eq!(storage_root(&c), "/srv/registry");
        c.storage.driver = StorageDriver::S3;
        c.s3.bucket = "b".into();
        c.s3.prefix = "/reg/".into();
        assert_eq!(storage_root(&c), "s3://b/reg");
        c.s3.prefix.clear();
        assert_eq!(storage_root(&c), "s3://b");
    }

    #[test]
    fn node_names_come_from_the_config_or_the_hostname() {
        let mut c = Config::defaults();
        c.node.name = "node-7".into();
        assert_eq!(node_name(&c).as_str(), "node-7");
        c.node.name.clear();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(node_name(&c), NodeName::from_hostname(&host));
    }

    #[test]
    fn the_mount_guard_is_reported_with_its_verdict() {
        let none = StorageFacts {
            guard: None,
            fstype: String::new(),
        };
        assert_eq!(mount_state(&none), None);
        let facts = StorageFacts {
            guard: Some(MountGuard::new("/nonexistent/mount", None)),
            fstype: "fuse.glusterfs".into(),
        };
        assert_eq!(
            mount_state(&facts).unwrap(),
            "/nonexistent/mount (fuse.glusterfs) is NOT mounted: nothing is read or written"
        );
        let root = StorageFacts {
            guard: Some(MountGuard::new("/", None)),
            fstype: String::new(),
        };
        root.guard.as_ref().unwrap().check().unwrap();
        assert_eq!(mount_state(&root).unwrap(), "/ is mounted");
    }
}
