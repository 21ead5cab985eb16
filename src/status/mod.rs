//! What this node knows about itself, its upstreams and the cluster, for the web UI: a board that
//! the parts doing the work write to (the daemon's phases and jobs, the pull-through cache) and
//! the UI reads snapshots from. Nothing here reaches storage; the heartbeats every node writes
//! are read and written through `storage` by the daemon, which posts what it read here.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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
    /// When the storage was last checked, and what the check found (`None`: healthy).
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

/// What one node writes to the shared storage every beat, and the cluster page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub version: String,
    pub addresses: Vec<String>,
    pub certificate_not_after: Option<SystemTime>,
    pub ready: bool,
    /// Why it is not ready.
    pub reason: Option<String>,
    /// When it wrote this beat (its own clock).
    pub seen: Option<SystemTime>,
}

/// One upstream of the pull-through cache, as this node has seen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamReport {
    pub name: String,
    pub url: String,
    /// `None`: not asked anything yet.
    pub reachable: Option<bool>,
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
    pub cached_images: u64,
    pub cached_bytes: u64,
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
    pub addresses: Vec<String>,
    pub certificate: Option<CertificateReport>,
    pub storage: StorageReport,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
    pub last_gc: Option<GcReport>,
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
}
