//! The storage in the daemon's life: opened behind its mount guard at start, verified before the
//! first request (an unusable storage does not stop start-up: requests get 503 with the reason
//! until it heals), then checked periodically for health and free space.

use std::time::Duration;

use super::board::{self, StorageFacts};
use super::status::Status;
use crate::config::{Config, StorageDriver};
use crate::http::handlers::App;
use crate::node::mount::MountGuard;
use crate::node::systemd;
use crate::storage::Storage;

/// Start-up phase: the storage as configured, behind the mount guard when `storage.require_mount`
/// names one (the guard is also the health check's, so it is returned too), and the GlusterFS
/// settings found wrong (each warned about in the log).
pub(super) async fn open(
    config: &Config,
) -> anyhow::Result<(Storage, Option<MountGuard>, Vec<String>)> {
    let root = config.storage.root.clone();
    let storage = config
        .storage_settings()
        .and_then(|s| Storage::from_settings(&s, 256))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(storage = %config.storage_description(), "storage");
    let guard = (!config.storage.require_mount.is_empty()).then(|| {
        MountGuard::new(
            &config.storage.require_mount,
            Some(config.storage.require_fstype.clone()),
        )
    });
    let storage = match &guard {
        Some(g) => storage.with_guard(g.clone()),
        None => storage,
    };
    let gluster = if config.storage.driver == StorageDriver::Filesystem {
        warn_incoherent_gluster(&root).await
    } else {
        Vec::new()
    };
    Ok((storage, guard, gluster))
}

/// Start-up phase: one health check before the listeners open, and with logins on, the shared
/// token key read ahead of the first login.
pub(super) async fn verify(app: &App, storage: &Storage, config: &Config, facts: &StorageFacts) {
    // A check may take as long as any storage call: a loaded shared mount is slow, not broken.
    let check_timeout = Duration::from_secs(config.storage.operation_timeout_secs);
    app.health.verify(storage, check_timeout, 1).await;
    board::post_health(&app.status, app, facts);
    if app.health.is_ready() {
        board::post_free_space(&app.status, storage.free_space().await.ok().flatten());
    }
    if !app.health.is_ready() {
        tracing::warn!(reason = %app.health.reason(), "storage unavailable at start: answering 503 until it is usable");
    } else if !config.auth.htpasswd.as_os_str().is_empty() {
        // The key tokens are signed with, read now so the first login does not wait for it;
        // bounded, a hung mount must not stop the start. Until it is read (here or at the first
        // request that needs it), token requests answer 503: a key of this node's own would
        // sign tokens the other nodes refuse.
        let timeout = Duration::from_secs(config.storage.operation_timeout_secs);
        match tokio::time::timeout(timeout, app.token_key()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e.message, detail = e.private.as_deref().unwrap_or(""),
                "cannot read or create the shared token key; token requests answer 503 until it can be read")
            }
            Err(_) => tracing::warn!(
                "the shared token key did not load in time; it is read again at the next token request"
            ),
        }
    }
}

/// One periodic check: the storage's health (with `threshold` failures in a row before it is
/// declared unavailable) and its free space against `storage.min_free_bytes`; each change is
/// logged and put in the status line, and every outcome on the status board.
pub(super) async fn check(
    app: &App,
    storage: &Storage,
    status: &Status,
    facts: &StorageFacts,
    timeout: Duration,
    threshold: u64,
) {
    if app.health.verify(storage, timeout, threshold).await {
        if app.health.is_ready() {
            tracing::info!("storage is usable again, serving");
        } else {
            tracing::error!(reason = %app.health.reason(), "storage unavailable, answering 503");
        }
        systemd::status(&status());
    }
    let min_free = app.settings().min_free_bytes;
    // Measured whether a floor is set or not: the node page shows it either way.
    let free = if app.health.is_ready() {
        storage.free_space().await
    } else {
        Err(crate::storage::StorageError::Unavailable(
            app.health.reason(),
        ))
    };
    if let Ok(f) = &free {
        board::post_free_space(&app.status, *f);
    }
    let changed = if min_free == 0 {
        app.health.set_low_space(None)
    } else {
        app.health.is_ready() && check_space(app, free, min_free)
    };
    board::post_health(&app.status, app, facts);
    if changed {
        match app.health.low_space() {
            Some(reason) => {
                tracing::error!(%reason, "storage nearly full: refusing pushes until space is freed")
            }
            None => {
                tracing::info!("free space is back above storage.min_free_bytes: accepting pushes")
            }
        }
        systemd::status(&status());
    }
}

/// Compares the storage's free space (a storage call like any: guarded, bounded in time) with
/// the floor; `true` when the verdict changed. A measure that did not finish changes nothing, and
/// a bucket has no floor.
fn check_space(app: &App, free: crate::storage::Result<Option<u64>>, min_free: u64) -> bool {
    let free = match free {
        Ok(Some(free)) => free,
        Ok(None) => return app.health.set_low_space(None),
        Err(_) => return false,
    };
    // 5% hysteresis, so a registry hovering at the floor does not flap.
    let verdict = if free < min_free {
        Some(format!(
            "{} MiB free, under storage.min_free_bytes ({} MiB)",
            free >> 20,
            min_free >> 20
        ))
    } else if app.health.low_space().is_some() && free < min_free + min_free / 20 {
        app.health.low_space()
    } else {
        None
    };
    app.health.set_low_space(verdict)
}

/// Warns, once per setting, when the storage is on a GlusterFS mount whose caches let other nodes
/// read stale tags and blobs (see `node::gluster`), and returns the warnings for the node page.
/// Bounded in time: a hung mount must not stop the start, where the storage health check reports
/// it.
async fn warn_incoherent_gluster(root: &std::path::Path) -> Vec<String> {
    let root = root.to_path_buf();
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || crate::node::gluster::check(&root)),
    )
    .await;
    match found {
        Ok(Ok(Some(Ok(problems)))) if problems.is_empty() => {
            tracing::info!("storage is on GlusterFS with the coherence settings on");
            Vec::new()
        }
        Ok(Ok(Some(Ok(problems)))) => problems
            .into_iter()
            .map(|p| {
                tracing::warn!(
                    fix = %p.fix,
                    "GlusterFS storage: {}; {}",
                    p.what,
                    p.effect
                );
                format!("{}: {} (fix: {})", p.what, p.effect, p.fix)
            })
            .collect(),
        Ok(Ok(Some(Err(reason)))) => {
            tracing::warn!(%reason, "storage is on GlusterFS but its coherence settings cannot be read");
            vec![format!(
                "the GlusterFS coherence settings cannot be read: {reason}"
            )]
        }
        Ok(Ok(None)) => Vec::new(),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("the GlusterFS coherence check did not finish within 5 s");
            vec!["the GlusterFS coherence check did not finish within 5 s".into()]
        }
    }
}
