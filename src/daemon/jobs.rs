//! The daemon's background jobs, each started once after `READY=1` and each stopped by the
//! [`Shutdown`] it is given: the storage health check, the cache size limit and the cache's
//! totals, garbage collection, the systemd watchdog and the htpasswd watch. (The certificate
//! watch is in `certificate`, the heartbeat in `heartbeat`.)
//!
//! A periodic job that is mid-pass when shutdown comes finishes that pass on its own time; the
//! daemon does not wait for it, only for the listeners' drain.

use std::sync::Arc;
use std::time::Duration;

use super::board::{self, StorageFacts};
use super::status::Status;
use crate::config::Config;
use crate::http::handlers::App;
use crate::node::systemd;
use crate::shutdown::Shutdown;
use crate::storage::Storage;

/// Runs `tick` every `interval` (after the first wait) until `shutdown`.
fn every<F, Fut>(interval: Duration, shutdown: Shutdown, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.recv() => return,
            }
            tick().await;
        }
    });
}

/// The storage health and free-space check, every `storage.check_interval_secs`.
pub(super) fn health_checks(
    config: &Config,
    app: &Arc<App>,
    storage: &Storage,
    status: &Status,
    facts: &StorageFacts,
    shutdown: Shutdown,
) {
    let (app, storage, status) = (app.clone(), storage.clone(), status.clone());
    let facts = facts.clone();
    let check_every = Duration::from_secs(config.storage.check_interval_secs);
    // A check may take as long as any storage call: a loaded shared mount is slow, not broken.
    let check_timeout = Duration::from_secs(config.storage.operation_timeout_secs);
    let threshold = config.storage.check_failures;
    every(check_every, shutdown, move || {
        let (app, storage, status) = (app.clone(), storage.clone(), status.clone());
        let facts = facts.clone();
        async move {
            super::storage::check(&app, &storage, &status, &facts, check_timeout, threshold).await
        }
    });
}

/// Cache size limit: one eviction pass per interval, by whichever node takes the lock. Only with
/// `proxy.max_cache_bytes` set and an upstream configured. The pass posts the cache's totals;
/// a node whose turn another node took counts them itself.
pub(super) fn cache_eviction(
    config: &Config,
    app: &Arc<App>,
    storage: &Storage,
    shutdown: Shutdown,
) {
    if config.proxy.max_cache_bytes == 0 || app.proxy.is_empty() {
        return;
    }
    let (app, storage) = (app.clone(), storage.clone());
    let limit = config.proxy.max_cache_bytes;
    let interval = Duration::from_secs(config.proxy.evict_interval_secs);
    every(interval, shutdown, move || {
        let (app, storage) = (app.clone(), storage.clone());
        async move {
            if !app.health.is_ready() {
                return;
            }
            match crate::proxy::evict::evict(&app.proxy, &storage, limit).await {
                Ok(Some(r)) if r.manifests_removed > 0 => tracing::info!(
                    before = r.cache_bytes_before,
                    after = r.cache_bytes_after,
                    limit,
                    manifests = r.manifests_removed,
                    blobs = r.blobs_removed,
                    freed = r.bytes_freed,
                    "cache eviction pass"
                ),
                Ok(Some(_)) => {}
                Ok(None) => count_cache(&app, &storage).await,
                Err(e) => tracing::warn!(error = %e, "cache eviction pass failed"),
            }
        }
    });
}

/// How soon after start the cache is first counted: long enough for the start's own storage
/// traffic to settle, short enough that the upstreams page fills in the first minute.
const FIRST_COUNT_AFTER: Duration = Duration::from_secs(15);

/// What the cache holds, per upstream, for the upstreams page: counted soon after start, then per
/// `proxy.evict_interval_secs` on a node that runs no eviction pass (which counts as it goes).
pub(super) fn cache_totals(config: &Config, app: &Arc<App>, storage: &Storage, shutdown: Shutdown) {
    if app.proxy.is_empty() {
        return;
    }
    let evicting = config.proxy.max_cache_bytes != 0;
    let interval = Duration::from_secs(config.proxy.evict_interval_secs);
    let (app, storage) = (app.clone(), storage.clone());
    tokio::spawn(async move {
        let mut wait = FIRST_COUNT_AFTER;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.recv() => return,
            }
            count_cache(&app, &storage).await;
            if evicting {
                return;
            }
            wait = interval;
        }
    });
}

/// One count of the cache's totals (posted on the board by the count itself).
async fn count_cache(app: &App, storage: &Storage) {
    if !app.health.is_ready() {
        return;
    }
    let started = std::time::Instant::now();
    match crate::proxy::totals::count(&app.proxy, storage).await {
        Ok(totals) => tracing::debug!(
            upstreams = totals.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "cache counted"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot count what the cache holds"),
    }
}

/// Garbage collection: one pass per `gc.interval_secs`, by whichever node takes the cluster lock;
/// none while the storage is unavailable or read-only.
pub(super) fn garbage_collection(
    config: &Config,
    app: &Arc<App>,
    storage: &Storage,
    shutdown: Shutdown,
) {
    if config.gc.interval_secs == 0 {
        return;
    }
    let (app, storage) = (app.clone(), storage.clone());
    let opts = crate::lifecycle::cli::gc_options(config, false, false);
    let interval = Duration::from_secs(config.gc.interval_secs);
    every(interval, shutdown, move || {
        let (app, storage, mut opts) = (app.clone(), storage.clone(), opts.clone());
        async move {
            if !app.health.is_ready() || app.settings().read_only {
                return;
            }
            // The rules in force now: a reload may have changed them.
            opts.retention.rules = app.settings().rules.clone();
            let started = std::time::Instant::now();
            let result = crate::lifecycle::gc::collect(&storage, &opts, &|_, _, _| {}).await;
            let m = crate::metrics::get();
            match &result {
                Ok(Some(r)) => {
                    m.gc_run("done", r.bytes_freed, r.manifests_removed as u64);
                    board::post_gc(&app.status, Ok(r));
                }
                Ok(None) => m.gc_run("skipped", 0, 0),
                Err(e) => {
                    m.gc_run("failed", 0, 0);
                    board::post_gc(&app.status, Err(e.to_string()));
                }
            }
            match result {
                Ok(Some(r)) => tracing::info!(
                    repositories = r.repositories,
                    manifests = r.manifests,
                    blobs = r.blobs,
                    blobs_removed = r.blobs_removed,
                    bytes_freed = r.bytes_freed,
                    manifests_removed = r.manifests_removed,
                    uploads_removed = r.uploads_removed,
                    fills_removed = r.fills_removed,
                    tags_removed = r.tags_removed,
                    young_kept = r.blobs_young_kept,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "garbage collection pass"
                ),
                Ok(None) => {
                    tracing::debug!("garbage collection skipped: another node is collecting")
                }
                Err(e) => tracing::warn!(error = %e, "garbage collection pass failed"),
            }
        }
    });
}

/// `WATCHDOG=1` at half the interval systemd asks for, when it asks. Given the shutdown that
/// comes after the drain, not the one that starts it: a long drain must not look like a hang.
pub(super) fn watchdog(stopped: Shutdown) {
    let Some(every) = systemd::watchdog_interval() else {
        return;
    };
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        loop {
            systemd::watchdog();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.recv() => return,
            }
        }
    });
}

/// Re-reads the htpasswd file whenever it changes (its directory is watched, as for certificates),
/// until `shutdown`. The watch follows the path in force at start; a new path arrives with SIGHUP.
pub(super) fn htpasswd_watch(app: &Arc<App>, shutdown: Shutdown) {
    let path = app.auth.htpasswd_path();
    if path.as_os_str().is_empty() {
        return;
    }
    let a = app.clone();
    let w = crate::node::watch::watch_files(std::slice::from_ref(&path), shutdown, move || match a
        .auth
        .reload_users()
    {
        Ok(Some(users)) => tracing::info!(users, "htpasswd file reloaded"),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "htpasswd file refused, previous users stay in service")
        }
    });
    if let Err(e) = w {
        tracing::warn!(error = %e, path = %path.display(), "cannot watch the htpasswd file; reload with SIGHUP");
    }
}
