//! Start-up order, the storage health loop and graceful shutdown. The only place that wires the
//! parts together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::http::handlers::App;
use crate::http::server;
use crate::storage::Storage;

/// Runs the registry until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if !config.tls.enabled {
        tracing::warn!(
            "TLS is OFF (--plain-http / tls.enabled = false): traffic and credentials travel in clear text. \
             Use this only for development on loopback."
        );
    }
    let root = &config.storage.root;
    let storage = Storage::open(root).with_context(|| {
        format!(
            "cannot open storage root {} (storage.root): check it exists and is writable",
            root.display()
        )
    })?;
    storage.check().await.with_context(|| {
        format!(
            "storage root {} failed its write/read check",
            root.display()
        )
    })?;
    let app = App::new(
        storage.clone(),
        config.storage.delete_enabled,
        config.limits.max_manifest_bytes,
    );

    let mut listeners = Vec::new();
    for addr in config.listen_addrs() {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.listen / --listen)"))?;
        listeners.push((addr, l));
    }
    let (tx, rx) = watch::channel(false);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut tasks = Vec::new();
    for (addr, l) in listeners {
        tracing::info!(address = %addr, tls = config.tls.enabled, storage = %root.display(), "listening");
        tasks.push(tokio::spawn(server::serve(
            l,
            app.clone(),
            rx.clone(),
            grace,
        )));
    }
    tokio::spawn(health_loop(
        app.clone(),
        Duration::from_secs(config.storage.check_interval_secs),
        config.storage.check_failures,
        rx.clone(),
    ));

    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining in-flight requests"),
        _ = int.recv() => tracing::info!("SIGINT: draining in-flight requests"),
    }
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Periodically proves storage is usable; after `threshold` failures in a row, requests get 503
/// until a check passes again.
async fn health_loop(
    app: Arc<App>,
    every: Duration,
    threshold: u64,
    shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u64;
    let stop = server::wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        match tokio::time::timeout(every, app.storage.check()).await {
            Ok(Ok(())) => {
                if !app.storage_ready.swap(true, Ordering::Relaxed) {
                    tracing::info!("storage is healthy again, serving");
                }
                failures = 0;
            }
            result => {
                failures += 1;
                let reason = match result {
                    Ok(Err(e)) => e.to_string(),
                    _ => "storage check timed out".to_string(),
                };
                tracing::warn!(failures, reason = %reason, "storage check failed");
                if failures >= threshold {
                    if let Ok(mut r) = app.storage_reason.lock() {
                        *r = reason;
                    }
                    app.storage_ready.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}
