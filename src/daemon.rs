//! Start-up order, reload, the storage health loop and graceful shutdown: the only place that wires
//! the parts together.
//!
//! Start: certificate (a bad pair stops start-up), link-local address and hosts entries (only when
//! a listener serves `node.address`, and never under `serve --dev`), storage health
//! (an unusable storage does not stop start-up: requests get 503 with the reason until it heals),
//! listeners, then `READY=1`. SIGHUP re-reads the config and applies what can change live. SIGTERM
//! sends `STOPPING=1` and drains in-flight requests for `server.shutdown_grace_secs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, parse_cidr};
use crate::health::Health;
use crate::http::handlers::App;
use crate::http::server;
use crate::node::mount::MountGuard;
use crate::node::tls::{Reload, Tls};
use crate::node::{hosts, netif, systemd};
use crate::storage::Storage;

/// Re-reads the configuration (file, environment, the flags the daemon started with).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Changes the log filter live.
pub type LevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The node's registry address and prefix (`node.address`).
pub fn node_ip(config: &Config) -> anyhow::Result<(IpAddr, u8)> {
    parse_cidr(&config.node.address).with_context(|| {
        format!(
            "node.address {:?} is not ADDRESS/PREFIX",
            config.node.address
        )
    })
}

/// The hosts-file entries for the configured hostnames.
pub fn hosts_entries(config: &Config, ip: IpAddr) -> Vec<(IpAddr, String)> {
    config
        .node
        .hostnames
        .iter()
        .map(|h| (ip, h.clone()))
        .collect()
}

/// Whether a listener serves `node.address` (the address itself, not a wildcard). Only then is
/// the node's set-up registryd's business: the link-local address and the hosts entries pointing
/// at it. A serve on other addresses (`serve --dev`, a loopback test) changes no system file.
pub fn serves_node_address(config: &Config, ip: IpAddr) -> bool {
    config.listen_addrs().iter().any(|a| a.ip() == ip)
}

fn apply_hosts(config: &Config, ip: IpAddr) {
    let path = &config.node.hosts_file;
    match hosts::apply(path, &hosts_entries(config, ip)) {
        Ok(hosts::Written::Unchanged) => {}
        Ok(hosts::Written::Replaced) => {
            tracing::info!(hosts_file = %path.display(), hostnames = ?config.node.hostnames, "hosts entries updated")
        }
        Ok(hosts::Written::InPlace) => tracing::info!(
            hosts_file = %path.display(),
            "hosts file is a bind mount (rename refused with EBUSY): rewrote it in place"
        ),
        Err(e) => {
            tracing::warn!(hosts_file = %path.display(), error = %e, "cannot update the hosts file; clients must resolve the registry name another way");
            return;
        }
    }
    warn_damaged_hosts(path);
}

/// Says in the log what in the hosts file looks like registryd's block but is not one (a `BEGIN`
/// without its `END`, a commented-out marker): registryd leaves those lines alone, and only the
/// operator can tell what they were meant to be.
fn warn_damaged_hosts(path: &std::path::Path) {
    let Ok(found) = hosts::inspect(path) else {
        return;
    };
    if !found.is_empty() {
        let damage: Vec<String> = found.iter().map(|d| d.to_string()).collect();
        tracing::warn!(
            hosts_file = %path.display(),
            damage = %damage.join("; "),
            "the hosts file holds a damaged registryd block: those lines are left as they are and registryd keeps its entries in a well-formed block of its own; fix or delete them by hand"
        );
    }
}

fn log_certificate(tls: &Tls, config: &Config) {
    let info = tls.info();
    tracing::info!(names = ?info.names, expires = %info.expiry_date(), days_left = info.days_left(), "certificate loaded");
    if info.days_left() <= config.tls.expiry_warning_days as i64 {
        tracing::warn!(expires = %info.expiry_date(), days_left = info.days_left(), "certificate expires soon: renew it (the new files are picked up without a restart)");
    }
    for h in &config.node.hostnames {
        if !info.covers(h) {
            tracing::warn!(hostname = %h, names = ?info.names, "certificate does not cover this hostname: clients using it will fail TLS verification");
        }
    }
}

/// Runs `tick` every `interval` (after the first wait) until `stop` says shut down.
fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            tick().await;
        }
    });
}

/// Compares the storage's free space with the floor; `true` when the verdict changed. Bounded in
/// time like any storage call; a check that does not finish changes nothing.
async fn check_space(app: &App, storage: &Storage, min_free: u64, timeout: Duration) -> bool {
    let root = storage.layout().root().to_path_buf();
    let free = tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || free_bytes(&root)),
    )
    .await;
    let Ok(Ok(Ok(free))) = free else {
        return false;
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

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn status_line(
    listen: &[SocketAddr],
    tls: Option<&Tls>,
    health: &Health,
    read_only: bool,
) -> String {
    let addrs: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    let mut s = format!("serving on {}", addrs.join(", "));
    match tls {
        Some(t) => {
            let i = t.info();
            s.push_str(&format!(
                "; certificate expires {} ({} days)",
                i.expiry_date(),
                i.days_left()
            ));
            if let Some(e) = t.last_error() {
                s.push_str(&format!(
                    "; certificate reload REFUSED: {e} (previous certificate in service)"
                ));
            }
        }
        None => s.push_str("; TLS OFF"),
    }
    if health.is_ready() {
        s.push_str("; storage ok");
    } else {
        s.push_str(&format!("; storage UNAVAILABLE: {}", health.reason()));
    }
    if read_only {
        s.push_str("; READ-ONLY (storage.read_only)");
    }
    if let Some(reason) = health.low_space() {
        s.push_str(&format!("; READ-ONLY: {reason}"));
    }
    s
}

/// The node set-up, when a listener serves `node.address`: the link-local address and the hosts
/// entries. Otherwise nothing: a developer's machine is not changed by a serve on loopback.
/// `registryd setup` runs this alone with full privileges (systemd `ExecStartPre=+`), so the
/// long-running process only finds the address present. Returns whether it created the link.
pub async fn node_setup(config: &Config) -> anyhow::Result<bool> {
    let (ip, prefix) = node_ip(config)?;
    if !serves_node_address(config, ip) {
        tracing::info!(
            address = %ip,
            "no listener serves node.address: the hosts file and the link-local address are left alone"
        );
        return Ok(false);
    }
    let created = match netif::ensure(
        ip,
        prefix,
        &config.node.interface,
        config.node.create_interface,
    )
    .await
    {
        Ok(netif::Outcome::Existing { interface }) => {
            tracing::info!(address = %config.node.address, interface = %interface, "link-local address already present, using it");
            false
        }
        Ok(netif::Outcome::Created { interface }) => {
            tracing::info!(address = %config.node.address, interface = %interface, "created dummy interface with the link-local address");
            true
        }
        Err(e) => bail!("{e}"),
    };
    apply_hosts(config, ip);
    Ok(created)
}

/// Whether the configuration can run: it parsed (the caller loaded it) and, with TLS, the
/// certificate pair loads. `Err` says what to do.
pub fn preflight(config: &Config) -> Result<String, String> {
    if !config.tls.enabled {
        return Ok("configuration ok (TLS off)".into());
    }
    let t = Tls::load(&config.tls.certificate, &config.tls.key).map_err(|e| {
        format!(
            "no usable TLS certificate: {e}. Put a certificate chain and key at {} and {} (or run `registryd cert init --hosts {}`), then `systemctl start registryd`",
            config.tls.certificate.display(),
            config.tls.key.display(),
            config.node.hostnames.join(",")
        )
    })?;
    let i = t.info();
    Ok(format!(
        "configuration ok; certificate for {} expires {}",
        i.names.join(", "),
        i.expiry_date()
    ))
}

/// Whether `run` may set up the node (the link-local address, the hosts entries) when a listener
/// serves `node.address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSetup {
    /// As configured: `registryd serve`.
    Managed,
    /// Never, whatever the configuration says: `registryd serve --dev`, a first try on someone's
    /// machine, touches no system file.
    Off,
}

/// Runs the registry until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    reload_config: ConfigLoader,
    set_level: LevelSetter,
    node: NodeSetup,
) -> anyhow::Result<()> {
    let (ip, _) = node_ip(&config)?;
    let listen = config.listen_addrs();
    // The listeners do not change until a restart, so neither does this.
    let manage_node = node == NodeSetup::Managed && serves_node_address(&config, ip);

    // 1. Certificate: refuse to start on a bad pair, with the reason.
    let tls = if config.tls.enabled {
        let t = Tls::load(&config.tls.certificate, &config.tls.key).map_err(|e| {
            anyhow::anyhow!(
                "TLS: {e}. Set tls.certificate and tls.key, make a pair with `registryd cert init`, or use --plain-http on loopback"
            )
        })?;
        log_certificate(&t, &config);
        Some(t)
    } else {
        tracing::warn!(
            "TLS is OFF (--plain-http / tls.enabled = false): traffic and credentials travel in clear text. Use this only for development on loopback."
        );
        None
    };

    // 2-3. The link-local address and the hosts entries.
    let created_link = match node {
        NodeSetup::Managed => node_setup(&config).await?,
        NodeSetup::Off => {
            tracing::info!(
                "development mode: the hosts file and the link-local address are left alone"
            );
            false
        }
    };

    // 4. Storage and its health; an unusable storage answers 503 rather than stopping the node.
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
    if !storage.is_s3() {
        warn_incoherent_gluster(&root).await;
    }
    let check_every = Duration::from_secs(config.storage.check_interval_secs);
    let proxy = crate::proxy::Proxy::from_settings(&config.proxy_settings())?;
    if !proxy.is_empty() {
        tracing::info!(
            upstreams = %proxy.upstream_names().join(","),
            default = %config.proxy.default_upstream,
            "pull-through cache on"
        );
    }
    let auth = crate::auth::Auth::from_settings(&config.auth_settings()).map_err(|e| {
        anyhow::anyhow!("{e}. Fix the file (entries from `htpasswd -B`) or unset auth.htpasswd")
    })?;
    if !config.auth.htpasswd.as_os_str().is_empty() {
        tracing::info!(
            htpasswd = %config.auth.htpasswd.display(),
            users = auth.user_count(),
            rules = config.access.len(),
            "logins on"
        );
    }
    let app = App::build(
        storage.clone(),
        Health::new(guard),
        config.http_settings(),
        proxy,
        auth,
        config.conn_limits(),
    );
    // A check may take as long as any storage call: a loaded shared mount is slow, not broken.
    let check_timeout = Duration::from_secs(config.storage.operation_timeout_secs);
    app.health.verify(&storage, check_timeout, 1).await;
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

    // 5. Listeners.
    let acceptor = match &tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            t.server_config().context("TLS configuration")?,
        )),
        None => None,
    };
    let mut listeners = Vec::new();
    for addr in &listen {
        let l = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (server.listen / --listen): is another registry running, or the address missing?")
        })?;
        listeners.push((*addr, l));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut tasks = Vec::new();
    for (addr, l) in listeners {
        tracing::info!(address = %addr, tls = tls.is_some(), storage = %root.display(), "listening");
        tasks.push(tokio::spawn(server::serve(
            l,
            app.clone(),
            acceptor.clone(),
            stop_rx.clone(),
            grace,
        )));
    }

    // 6. Tell systemd, then keep telling it.
    let status = {
        let (tls, app, listen) = (tls.clone(), app.clone(), listen.clone());
        Arc::new(move || {
            status_line(
                &listen,
                tls.as_deref(),
                &app.health,
                app.settings().read_only,
            )
        })
    };
    systemd::ready(&status());
    if let Some(every) = systemd::watchdog_interval() {
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        tokio::spawn(async move {
            loop {
                systemd::watchdog();
                tokio::time::sleep(every).await;
            }
        });
    }
    let _watcher = match &tls {
        Some(t) => {
            let status = status.clone();
            let w = t.watch(move |outcome| {
                match outcome {
                    Ok(Reload::Replaced(info)) => tracing::info!(names = ?info.names, expires = %info.expiry_date(), "certificate reloaded"),
                    Ok(Reload::Unchanged) => {}
                    Err(e) => tracing::error!(error = %e, "new certificate refused, previous one stays in service"),
                }
                systemd::status(&status());
            });
            match w {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the certificate directory; reload with SIGHUP");
                    None
                }
            }
        }
        None => None,
    };
    let _htpasswd_watcher = watch_htpasswd(&app);
    {
        let (app, storage, status) = (app.clone(), storage.clone(), status.clone());
        let threshold = config.storage.check_failures;
        every(check_every, stop_rx.clone(), move || {
            let (app, storage, status) = (app.clone(), storage.clone(), status.clone());
            async move {
                if app.health.verify(&storage, check_timeout, threshold).await {
                    if app.health.is_ready() {
                        tracing::info!("storage is usable again, serving");
                    } else {
                        tracing::error!(reason = %app.health.reason(), "storage unavailable, answering 503");
                    }
                    systemd::status(&status());
                }
                let min_free = app.settings().min_free_bytes;
                let changed = if min_free == 0 || storage.is_s3() {
                    app.health.set_low_space(None)
                } else {
                    app.health.is_ready()
                        && check_space(&app, &storage, min_free, check_timeout).await
                };
                if changed {
                    match app.health.low_space() {
                        Some(reason) => {
                            tracing::error!(%reason, "storage nearly full: refusing pushes until space is freed")
                        }
                        None => tracing::info!(
                            "free space is back above storage.min_free_bytes: accepting pushes"
                        ),
                    }
                    systemd::status(&status());
                }
            }
        });
    }

    // Cache size limit: one eviction pass per interval, by whichever node takes the lock.
    if config.proxy.max_cache_bytes > 0 && !app.proxy.is_empty() {
        let (app, storage) = (app.clone(), storage.clone());
        let limit = config.proxy.max_cache_bytes;
        let interval = Duration::from_secs(config.proxy.evict_interval_secs);
        every(interval, stop_rx.clone(), move || {
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
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cache eviction pass failed"),
                }
            }
        });
    }

    // Garbage collection: one pass per interval, by whichever node takes the cluster lock.
    if config.gc.interval_secs > 0 {
        let (app, storage) = (app.clone(), storage.clone());
        let opts = crate::lifecycle::cli::gc_options(&config, false, false);
        let interval = Duration::from_secs(config.gc.interval_secs);
        every(interval, stop_rx.clone(), move || {
            let (app, storage, opts) = (app.clone(), storage.clone(), opts.clone());
            async move {
                if !app.health.is_ready() || app.settings().read_only {
                    return;
                }
                let started = std::time::Instant::now();
                let result = crate::lifecycle::gc::collect(&storage, &opts, &|_, _, _| {}).await;
                let m = crate::metrics::get();
                match &result {
                    Ok(Some(r)) => m.gc_run("done", r.bytes_freed),
                    Ok(None) => m.gc_run("skipped", 0),
                    Err(_) => m.gc_run("failed", 0),
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

    // 7. Signals.
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
                let hosts_ip = manage_node.then_some(ip);
                current = reload(current, &reload_config, &set_level, &app, tls.as_deref(), hosts_ip);
                systemd::ready(&status());
            }
        }
    }
    systemd::stopping(&format!(
        "draining in-flight requests (up to {}s)",
        grace.as_secs()
    ));
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if created_link && current.node.remove_interface_on_stop {
        match netif::remove(&current.node.interface).await {
            Ok(()) => {
                tracing::info!(interface = %current.node.interface, "removed the dummy interface")
            }
            Err(e) => {
                tracing::warn!(interface = %current.node.interface, error = %e, "cannot remove the dummy interface")
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-read the config, apply what can change live, report what needs a restart.
/// `hosts_ip`: the address the hosts entries point at, when this daemon keeps them.
fn reload(
    current: Config,
    loader: &ConfigLoader,
    set_level: &LevelSetter,
    app: &App,
    tls: Option<&Tls>,
    hosts_ip: Option<IpAddr>,
) -> Config {
    tracing::info!("SIGHUP: reloading configuration and certificate");
    let new = match loader() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(errors = %e.replace('\n', "; "), "configuration has errors: keeping the running one");
            if let Some(t) = tls {
                reload_certificate(t);
            }
            return current;
        }
    };
    if let Err(e) = set_level(&new.log.level) {
        tracing::warn!(error = %e, "cannot change the log level");
    }
    app.settings.store(Arc::new(new.http_settings()));
    if current.storage.read_only != new.storage.read_only {
        if new.storage.read_only {
            tracing::warn!(
                "read-only mode ON (storage.read_only): pushes and deletes refused, pulls go on"
            );
        } else {
            tracing::info!("read-only mode OFF: accepting pushes and deletes again");
        }
    }
    match app.auth.apply(&new.auth_settings()) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, "htpasswd file refused, previous users stay in service")
        }
    }
    if let Some(ip) = hosts_ip {
        apply_hosts(&new, ip);
    }
    if let Some(t) = tls {
        t.set_paths(new.tls.certificate.clone(), new.tls.key.clone());
        reload_certificate(t);
    }
    let needs_restart: Vec<&str> = [
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
    .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these settings changed but only take effect after a restart");
    }
    tracing::info!("configuration reloaded");
    new
}

/// Re-reads the htpasswd file whenever it changes (its directory is watched, as for certificates).
/// The watch follows the path in force at start; a new path arrives with SIGHUP.
fn watch_htpasswd(app: &Arc<App>) -> Option<notify::RecommendedWatcher> {
    let path = app.auth.htpasswd_path();
    if path.as_os_str().is_empty() {
        return None;
    }
    let a = app.clone();
    let w = crate::node::watch::watch_files(std::slice::from_ref(&path), move || {
        match a.auth.reload_users() {
            Ok(Some(users)) => tracing::info!(users, "htpasswd file reloaded"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "htpasswd file refused, previous users stay in service")
            }
        }
    });
    match w {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot watch the htpasswd file; reload with SIGHUP");
            None
        }
    }
}

fn reload_certificate(t: &Tls) {
    match t.reload() {
        Ok(Reload::Replaced(info)) => {
            tracing::info!(names = ?info.names, expires = %info.expiry_date(), "certificate reloaded")
        }
        Ok(Reload::Unchanged) => tracing::info!("certificate unchanged"),
        Err(e) => {
            tracing::error!(error = %e, "new certificate refused, previous one stays in service")
        }
    }
}

/// Warns, once per setting, when the storage is on a GlusterFS mount whose caches let other nodes
/// read stale tags and blobs (see `node::gluster`). Bounded in time: a hung mount must not stop the
/// start, where the storage health check reports it.
async fn warn_incoherent_gluster(root: &std::path::Path) {
    let root = root.to_path_buf();
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || crate::node::gluster::check(&root)),
    )
    .await;
    match found {
        Ok(Ok(Some(Ok(problems)))) if problems.is_empty() => {
            tracing::info!("storage is on GlusterFS with the coherence settings on");
        }
        Ok(Ok(Some(Ok(problems)))) => {
            for p in problems {
                tracing::warn!(
                    fix = %p.fix,
                    "GlusterFS storage: {}; {}",
                    p.what,
                    p.effect
                );
            }
        }
        Ok(Ok(Some(Err(reason)))) => {
            tracing::warn!(%reason, "storage is on GlusterFS but its coherence settings cannot be read");
        }
        Ok(Ok(None)) => {}
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("the GlusterFS coherence check did not finish within 5 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A serve whose listeners all miss node.address (here `serve --dev`'s) sets up nothing: the
    /// hosts file keeps every byte, and no netlink call is made (this runs unprivileged).
    #[tokio::test]
    async fn node_setup_leaves_the_node_alone_when_no_listener_serves_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1\tlocalhost").unwrap();
        let mut config = Config::defaults();
        config.server.listen = vec!["127.0.0.1:5000".into()];
        config.node.hosts_file = hosts.clone();
        assert!(!node_setup(&config).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            "127.0.0.1\tlocalhost"
        );
        // A wildcard listener serves node.address only by accident: still nothing.
        config.server.listen = vec!["0.0.0.0:8443".into()];
        assert!(!node_setup(&config).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            "127.0.0.1\tlocalhost"
        );
    }
}
