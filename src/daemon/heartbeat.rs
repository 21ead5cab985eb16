//! The heartbeat job: every `node.heartbeat_secs` (and at once at start) this node writes its
//! beat to the shared storage and reads everyone's into the board's cluster list; at shutdown it
//! writes a last beat saying it is not ready. Other nodes going stale or coming back, beats of
//! nodes gone for a week (removed), and another process beating under this node's name are logged.
//!
//! Each round reads the cluster before it writes: this node's own file must then still hold the
//! beat it wrote last round, and a beat from another daemon instance in its place means two
//! processes share one node name (two machines with one hostname).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::board::{self, StorageFacts};
use crate::http::handlers::App;
use crate::shutdown::Shutdown;
use crate::status::{FORGET_AFTER, Heartbeat, NodeName};
use crate::storage::Storage;

/// Why the node is not ready in the beat it writes as it stops.
const STOPPING: &str = "stopped: the daemon is shutting down";

pub(super) struct Beater {
    app: Arc<App>,
    storage: Storage,
    facts: StorageFacts,
    node: NodeName,
    period: Duration,
    /// Drawn at start: told apart from another process writing under the same name.
    instance: String,
    /// Whether this node wrote a beat yet (before, its file may hold a previous run's).
    wrote: bool,
    /// Each other node's state at the last round (stale or not), to log the changes.
    seen: HashMap<String, bool>,
    /// The last problem, logged once when it starts and once when it ends.
    problem: Option<String>,
}

/// Starts the job unless `node.heartbeat_secs` is 0. The handle ends after the last beat, once
/// `shutdown` came: the stop phase waits for it (see [`finish`]).
pub(super) fn start(
    app: &Arc<App>,
    storage: &Storage,
    facts: StorageFacts,
    node: NodeName,
    period_secs: u64,
    shutdown: Shutdown,
) -> Option<JoinHandle<()>> {
    if period_secs == 0 {
        tracing::info!("node.heartbeat_secs = 0: no heartbeat, the cluster is not listed");
        return None;
    }
    let mut b = Beater {
        app: app.clone(),
        storage: storage.clone(),
        facts,
        node,
        period: Duration::from_secs(period_secs),
        instance: uuid::Uuid::new_v4().simple().to_string(),
        wrote: false,
        seen: HashMap::new(),
        problem: None,
    };
    Some(tokio::spawn(async move {
        // Nodes of a cluster start together: spread their first writes, which may make the
        // heartbeat directory, over a second (directories made at one instant on GlusterFS risk
        // a split-brain).
        let jitter = Duration::from_millis((uuid::Uuid::new_v4().as_u128() % 1000) as u64);
        tokio::select! {
            _ = tokio::time::sleep(jitter) => {}
            _ = shutdown.recv() => return,
        }
        loop {
            b.round().await;
            tokio::select! {
                _ = tokio::time::sleep(b.period) => {}
                _ = shutdown.recv() => break,
            }
        }
        b.last_beat().await;
    }))
}

/// Stop phase: waits for the last beat, at most `limit` (a hung mount must not hold the stop).
pub(super) async fn finish(job: Option<JoinHandle<()>>, limit: Duration) {
    if let Some(job) = job
        && tokio::time::timeout(limit, job).await.is_err()
    {
        tracing::warn!(
            "the last heartbeat was not written in time; other nodes see this node go stale instead"
        );
    }
}

impl Beater {
    /// This node's beat now, from its report on the board.
    fn beat(&self) -> Heartbeat {
        board::post_health(&self.app.status, &self.app, &self.facts);
        let n = self.app.status.node();
        Heartbeat {
            node: self.node.to_string(),
            version: n.version,
            addresses: n.addresses,
            certificate_not_after: n.certificate.and_then(|c| c.not_after),
            ready: n.ready,
            reason: n.not_ready_reason,
            seen: Some(SystemTime::now()),
            period_secs: self.period.as_secs(),
            instance: self.instance.clone(),
        }
    }

    /// One round: read the cluster, write this node's beat, post both.
    async fn round(&mut self) {
        let read = self.storage.heartbeats().await;
        let mine = self.beat();
        let written = self.storage.write_heartbeat(&mine).await;
        let mut problems = Vec::new();
        let mut cluster = match read {
            Ok(beats) => {
                if let Some(p) = self.impostor(&beats) {
                    problems.push(p);
                }
                self.forget_old(beats).await
            }
            Err(e) => {
                problems.push(format!("cannot read the cluster's heartbeats: {e}"));
                self.app.status.cluster()
            }
        };
        match written {
            Ok(()) => self.wrote = true,
            Err(e) => problems.push(format!("cannot write this node's heartbeat: {e}")),
        }
        cluster.retain(|b| b.node != mine.node);
        self.log_changes(&cluster);
        cluster.push(mine);
        cluster.sort_by(|a, b| a.node.cmp(&b.node));
        self.app.status.set_cluster(cluster);
        self.set_problem((!problems.is_empty()).then(|| problems.join("; ")));
    }

    /// What another process beating under this node's name looks like: after this node's first
    /// write, its file holds another instance's beat.
    fn impostor(&self, beats: &[Heartbeat]) -> Option<String> {
        let b = beats.iter().find(|b| b.node == self.node.as_str())?;
        (self.wrote && b.instance != self.instance).then(|| {
            format!(
                "another registryd (addresses {}) writes heartbeats as {}: give each node its own node.name",
                b.addresses.join(", "),
                self.node
            )
        })
    }

    /// Removes the beats of nodes silent for [`FORGET_AFTER`] and returns the others.
    async fn forget_old(&self, beats: Vec<Heartbeat>) -> Vec<Heartbeat> {
        let now = SystemTime::now();
        let mut kept = Vec::new();
        for b in beats {
            let gone = b.node != self.node.as_str() && b.age(now).is_some_and(|a| a > FORGET_AFTER);
            let Some(name) = gone.then(|| NodeName::parse(&b.node).ok()).flatten() else {
                kept.push(b);
                continue;
            };
            match self.storage.remove_heartbeat(&name).await {
                Ok(()) => {
                    tracing::info!(node = %name, "removed the heartbeat of a node silent for a week")
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot remove an old heartbeat");
                    kept.push(b);
                }
            }
        }
        kept
    }

    /// Logs each other node that appeared, went stale, came back or was removed.
    fn log_changes(&mut self, others: &[Heartbeat]) {
        let now = SystemTime::now();
        let mut next = HashMap::new();
        for b in others {
            let stale = b.is_stale(now);
            let age = b.age(now).map_or(0, |a| a.as_secs());
            match (self.seen.get(&b.node), stale) {
                (None | Some(true), false) => tracing::info!(
                    node = %b.node, version = %b.version, ready = b.ready,
                    addresses = %b.addresses.join(","), "cluster node beating"
                ),
                (Some(false), true) => tracing::warn!(
                    node = %b.node, last_beat_secs_ago = age,
                    "cluster node stopped beating (stale)"
                ),
                (None, true) => tracing::info!(
                    node = %b.node, last_beat_secs_ago = age,
                    "cluster node listed but not beating (stale)"
                ),
                (Some(false), false) | (Some(true), true) => {}
            }
            next.insert(b.node.clone(), stale);
        }
        for gone in self.seen.keys().filter(|n| !next.contains_key(*n)) {
            tracing::info!(node = %gone, "cluster node's heartbeat removed");
        }
        self.seen = next;
    }

    fn set_problem(&mut self, problem: Option<String>) {
        match (&self.problem, &problem) {
            (None, Some(p)) => tracing::warn!(problem = %p, "heartbeat"),
            (Some(_), None) => tracing::info!("heartbeat written and the cluster read again"),
            (Some(a), Some(b)) if a != b => tracing::warn!(problem = %b, "heartbeat"),
            _ => {}
        }
        self.app
            .status
            .update_node(|n| n.heartbeat_error = problem.clone());
        self.problem = problem;
    }

    /// The beat written as the daemon stops: not ready, and why.
    async fn last_beat(&self) {
        let beat = Heartbeat {
            ready: false,
            reason: Some(STOPPING.into()),
            ..self.beat()
        };
        match self.storage.write_heartbeat(&beat).await {
            Ok(()) => tracing::debug!("last heartbeat written: not ready"),
            Err(e) => tracing::warn!(error = %e, "cannot write the last heartbeat"),
        }
    }
}
