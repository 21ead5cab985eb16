//! What this node knows about itself, its upstreams and the cluster, for the web UI: a board that
//! the parts doing the work write to (the daemon's phases and jobs, the pull-through cache) and
//! the UI reads snapshots from. Nothing here reaches storage; the heartbeats every node writes
//! are read and written through `storage` by the daemon, which posts what it read here.
//!
//! Who writes what: the daemon (`daemon::board`) this node's report, after each storage check,
//! certificate reload and GC pass; the daemon's heartbeat job the cluster; the pull-through cache
//! its upstreams, as requests happen (reachability, hits, misses, stale answers) and after each
//! pass over the cache (cached images and bytes).

mod heartbeat;

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use heartbeat::{DEFAULT_PERIOD_SECS, FORGET_AFTER, Heartbeat, NodeName, STALE_AFTER_PERIODS};

/// The certificate a TLS listener serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateReport {
    pub subject: String,
    /// The names it is valid for (subject alternative names).
    pub names: Vec<String>,
    pub not_after: Option<SystemTime>,
    /// The last refused reload, if the previous certificate is still in service because of it.
    pub reload_error: Option<String>,
}

/// The storage this node serves from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageReport {
    /// `filesystem` or `s3`.
    pub driver: String,
    /// The root directory, or `s3://bucket/prefix`.
    pub root: String,
    /// Free bytes under the root (`None`: a bucket, or not measured yet).
    pub free_bytes: Option<u64>,
    /// The mount guard's state (`None`: no guard configured).
    pub mount_guard: Option<String>,
    /// GlusterFS volume options that break registryd's assumptions, as the daemon warned.
    pub gluster_warnings: Vec<String>,
    /// When the storage was last checked, and what the check found (`None`: healthy). A
    /// failed check may leave the node ready: it takes `storage.check_failures` in a row.
    pub last_check: Option<SystemTime>,
    pub last_check_error: Option<String>,
}

/// One garbage collection pass this node ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub finished: Option<SystemTime>,
    pub blobs_removed: u64,
    pub manifests_removed: u64,
    pub bytes_freed: u64,
    /// Why it stopped short, if it did.
    pub error: Option<String>,
}

/// One upstream of the pull-through cache, as this node has seen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamReport {
    pub name: String,
    pub url: String,
    /// `None`: not asked anything yet.
    pub reachable: Option<bool>,
    pub last_check: Option<SystemTime>,
    /// The last failure (kept after the upstream recovers, with its time, for the operator).
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Images (manifests no other manifest of their repository lists: an index counts, its
    /// children do not) stored in the upstream's repositories, and the bytes of the blobs they
    /// link; counted by a pass over the cache, at `totals_at` (`None`: not counted yet).
    pub cached_images: u64,
    pub cached_bytes: u64,
    pub totals_at: Option<SystemTime>,
    /// Tags answered from the cache while the upstream could not be reached.
    pub stale_served: u64,
    pub hits: u64,
    pub misses: u64,
}

/// This node as the UI shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub name: String,
    pub version: String,
    /// The listen addresses.
    pub addresses: Vec<String>,
    /// The names clients reach the registry by (`node.hostnames`).
    pub hostnames: Vec<String>,
    pub certificate: Option<CertificateReport>,
    pub storage: StorageReport,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
    /// Why pushes and deletes are refused while pulls go on (`storage.read_only`, or free space
    /// under `storage.min_free_bytes`), if they are.
    pub writes_refused: Option<String>,
    pub last_gc: Option<GcReport>,
    /// Seconds between this node's heartbeats (0: it writes none).
    pub heartbeat_secs: u64,
    /// Why the last heartbeat could not be written or the cluster's read, or that another
    /// process beats under this node's name (`None`: all well).
    pub heartbeat_error: Option<String>,
}

/// The board: written by whoever does the work, read whole by the UI.
#[derive(Debug, Default)]
pub struct Board {
    node: RwLock<NodeReport>,
    cluster: RwLock<Vec<Heartbeat>>,
    upstreams: RwLock<Vec<UpstreamReport>>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, f: impl FnOnce(&mut T)) {
    f(&mut l.write().unwrap_or_else(|p| p.into_inner()))
}

impl Board {
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    pub fn node(&self) -> NodeReport {
        read(&self.node)
    }

    pub fn update_node(&self, f: impl FnOnce(&mut NodeReport)) {
        write(&self.node, f)
    }

    /// Every node's last heartbeat read from the shared storage, this one included.
    pub fn cluster(&self) -> Vec<Heartbeat> {
        read(&self.cluster)
    }

    pub fn set_cluster(&self, beats: Vec<Heartbeat>) {
        write(&self.cluster, |c| *c = beats)
    }

    pub fn upstreams(&self) -> Vec<UpstreamReport> {
        read(&self.upstreams)
    }

    pub fn update_upstreams(&self, f: impl FnOnce(&mut Vec<UpstreamReport>)) {
        write(&self.upstreams, f)
    }

    /// Changes the report of the upstream `name` (made, empty but for its name, if the board
    /// had none: the daemon lists the configured upstreams at start, with their URLs).
    pub fn update_upstream(&self, name: &str, f: impl FnOnce(&mut UpstreamReport)) {
        write(&self.upstreams, |all| {
            if let Some(u) = all.iter_mut().find(|u| u.name == name) {
                return f(u);
            }
            let mut u = UpstreamReport {
                name: name.to_string(),
                ..Default::default()
            };
            f(&mut u);
            all.push(u);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_reports_are_changed_in_place_or_made() {
        let b = Board::new();
        b.update_upstreams(|u| {
            u.push(UpstreamReport {
                name: "docker.io".into(),
                url: "https://registry-1.docker.io".into(),
                ..Default::default()
            })
        });
        b.update_upstream("docker.io", |u| u.hits += 2);
        b.update_upstream("ghcr.io", |u| u.misses += 1);
        let all = b.upstreams();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].hits, all[0].url.as_str()),
            (2, "https://registry-1.docker.io")
        );
        assert_eq!((all[1].name.as_str(), all[1].misses), ("ghcr.io", 1));
    }
}
