//! Serving until told to stop: SIGHUP re-reads the configuration and applies what can change live
//! (with `RELOADING=1` before and `READY=1` after), SIGTERM or SIGINT ends the wait so the daemon
//! can drain.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::board::{self, StorageFacts};
use super::status::Status;
use super::{ConfigLoader, LevelSetter, certificate, node};
use crate::config::Config;
use crate::http::handlers::App;
use crate::node::systemd;
use crate::node::tls::Tls;

/// What a SIGHUP touches: the live settings, the log filter, the users, the hosts entries (when
/// this daemon keeps them) and the certificate.
pub(super) struct Reloader<'a> {
    pub loader: &'a ConfigLoader,
    pub set_level: &'a LevelSetter,
    pub app: &'a App,
    pub tls: Option<&'a Tls>,
    /// The address the hosts entries point at, when this daemon keeps them.
    pub hosts_ip: Option<IpAddr>,
    pub status: &'a Status,
    /// For the status board's storage facts (read-only mode may change).
    pub facts: &'a StorageFacts,
}

/// Reloads on every SIGHUP until SIGTERM or SIGINT, and returns the configuration then in force
/// (the stop phase reads it).
pub(super) async fn until_stopped(config: Config, r: Reloader<'_>) -> anyhow::Result<Config> {
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut current = config;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining in-flight requests"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining in-flight requests"); break; }
            _ = hup.recv() => {
                systemd::reloading();
                current = reload(current, &r);
                board::post_health(&r.app.status, r.app, r.facts);
                if let Some(t) = r.tls {
                    board::post_certificate(&r.app.status, t);
                }
                systemd::ready(&(r.status)());
            }
        }
    }
    Ok(current)
}

/// SIGHUP: re-read the config, apply what can change live, report what needs a restart.
fn reload(current: Config, r: &Reloader<'_>) -> Config {
    tracing::info!("SIGHUP: reloading configuration and certificate");
    let new = match (r.loader)() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(errors = %e.replace('\n', "; "), "configuration has errors: keeping the running one");
            if let Some(t) = r.tls {
                certificate::reload(t);
            }
            return current;
        }
    };
    if let Err(e) = (r.set_level)(&new.log.level) {
        tracing::warn!(error = %e, "cannot change the log level");
    }
    r.app.settings.store(Arc::new(new.http_settings()));
    if current.storage.read_only != new.storage.read_only {
        if new.storage.read_only {
            tracing::warn!(
                "read-only mode ON (storage.read_only): pushes and deletes refused, pulls go on"
            );
        } else {
            tracing::info!("read-only mode OFF: accepting pushes and deletes again");
        }
    }
    match r.app.auth.apply(&new.auth_settings()) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, "htpasswd file refused, previous users stay in service")
        }
    }
    if let Some(ip) = r.hosts_ip {
        node::apply_hosts(&new, ip);
    }
    if let Some(t) = r.tls {
        t.set_paths(new.tls.certificate.clone(), new.tls.key.clone());
        certificate::reload(t);
    }
    let needs_restart = needs_restart(&current, &new);
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these settings changed but only take effect after a restart");
    }
    tracing::info!("configuration reloaded");
    new
}

/// The settings that changed from `current` to `new` but only take effect after a restart.
fn needs_restart(current: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("server.listen", current.server.listen != new.server.listen),
        ("storage.root", current.storage.root != new.storage.root),
        (
            "storage.require_mount",
            current.storage.require_mount != new.storage.require_mount,
        ),
        ("tls.enabled", current.tls.enabled != new.tls.enabled),
        ("node.address", current.node.address != new.node.address),
        (
            "node.interface",
            current.node.interface != new.node.interface,
        ),
        ("proxy", current.proxy != new.proxy),
        ("gc", current.gc != new.gc),
        (
            "limits (connections and timeouts)",
            current.limits.header_read_timeout_secs != new.limits.header_read_timeout_secs
                || current.limits.idle_timeout_secs != new.limits.idle_timeout_secs
                || current.limits.send_stall_timeout_secs != new.limits.send_stall_timeout_secs
                || current.limits.max_connections != new.limits.max_connections,
        ),
        ("upstream", current.upstream != new.upstream),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect()
}
