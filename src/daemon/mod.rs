//! Start-up order, reload and graceful shutdown: the only place that wires the parts together.
//!
//! [`run`] reads as its phases, each a function of its own:
//! 1. the certificate (`certificate`): a bad pair stops start-up;
//! 2. the node (`node`): link-local address and hosts entries, only when a listener serves
//!    `node.address`, and never under `serve --dev`;
//! 3. the storage (`storage`): opened behind its mount guard and verified; an unusable storage
//!    does not stop start-up, requests get 503 with the reason until it heals;
//! 4. the app (storage, upstreams, logins), then the listeners, bound and serving;
//! 5. `READY=1`, and the background jobs (`jobs`, and the heartbeat: `heartbeat`);
//! 6. serving until SIGTERM or SIGINT, SIGHUP re-reading the config (`reload`);
//! 7. the drain: `STOPPING=1`, every task told through one [`Shutdown`](crate::shutdown::Shutdown),
//!    in-flight requests given `server.shutdown_grace_secs` (and the last heartbeat its storage
//!    timeout), then the link removed if asked.
//!
//! Along the way this node's report on the status board (the web UI's node page) is posted by
//! the phase or job that learns each fact (`board`).

mod board;
mod certificate;
mod heartbeat;
mod jobs;
mod node;
mod reload;
mod status;
mod storage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use self::certificate::preflight;
pub use self::node::{hosts_entries, node_ip, node_setup, serves_node_address};
use crate::config::Config;
use crate::health::Health;
use crate::http::handlers::App;
use crate::http::server;
use crate::node::mount::MountGuard;
use crate::node::systemd;
use crate::node::tls::Tls;
use crate::shutdown::Notifier;
use crate::storage::Storage;

/// Re-reads the configuration (file, environment, the flags the daemon started with).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Changes the log filter live.
pub type LevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

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

    let tls = certificate::load(&config)?;
    let created_link = node::prepare(&config, node).await?;
    let (storage, guard, gluster) = storage::open(&config).await?;
    let facts = board::StorageFacts {
        guard: guard.clone(),
        fstype: config.storage.require_fstype.clone(),
    };
    let app = build_app(&config, &storage, guard)?;
    let node_name = board::node_name(&config);
    board::post_start(&app.status, &config, &node_name, &listen, &facts);
    board::post_gluster(&app.status, gluster);
    if let Some(t) = &tls {
        board::post_certificate(&app.status, t);
    }
    storage::verify(&app, &storage, &config, &facts).await;
    let listeners = bind(&listen, tls.as_deref()).await?;

    // From here on every task hears the same shutdown; the watchdog alone hears the end of the
    // drain instead of its start.
    let shutdown = Notifier::new();
    let stopped = Notifier::new();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let servers = serve(listeners, &app, &config, &shutdown, grace);

    let status = status::reporter(&listen, tls.as_ref(), &app);
    systemd::ready(&status());
    jobs::watchdog(stopped.subscribe());
    if let Some(t) = &tls {
        certificate::watch(t, &app, status.clone(), shutdown.subscribe());
    }
    jobs::htpasswd_watch(&app, shutdown.subscribe());
    jobs::health_checks(
        &config,
        &app,
        &storage,
        &status,
        &facts,
        shutdown.subscribe(),
    );
    jobs::cache_eviction(&config, &app, &storage, shutdown.subscribe());
    jobs::cache_totals(&config, &app, &storage, shutdown.subscribe());
    jobs::garbage_collection(&config, &app, &storage, shutdown.subscribe());
    let beats = heartbeat::start(
        &app,
        &storage,
        facts.clone(),
        node_name,
        config.node.heartbeat_secs,
        shutdown.subscribe(),
    );

    let reloader = reload::Reloader {
        loader: &reload_config,
        set_level: &set_level,
        app: &app,
        tls: tls.as_deref(),
        hosts_ip: manage_node.then_some(ip),
        status: &status,
        facts: &facts,
    };
    let current = reload::until_stopped(config, reloader).await?;

    drain(&shutdown, servers, grace).await;
    heartbeat::finish(beats, storage.timeout() + Duration::from_secs(1)).await;
    stopped.notify();
    node::remove_link(created_link, &current).await;
    tracing::info!("stopped");
    Ok(())
}

/// Start-up phase: what serves requests: the storage, the upstreams (pull-through cache) and the
/// logins, with the health (and mount guard) the storage check updates.
fn build_app(
    config: &Config,
    storage: &Storage,
    guard: Option<MountGuard>,
) -> anyhow::Result<Arc<App>> {
    // One board per daemon: the upstreams report on it from here, the rest once the app is built.
    let board = crate::status::Board::new();
    let proxy = crate::proxy::Proxy::from_settings(&config.proxy_settings(), board)?;
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
    Ok(App::build(
        storage.clone(),
        Health::new(guard),
        config.http_settings(),
        proxy,
        auth,
        config.conn_limits(),
    ))
}

/// The bound listeners, and the TLS acceptor they share (none with TLS off).
struct Listeners {
    acceptor: Option<TlsAcceptor>,
    bound: Vec<(SocketAddr, TcpListener)>,
}

/// Start-up phase: binds every `server.listen` address; one that cannot be bound stops start-up.
async fn bind(listen: &[SocketAddr], tls: Option<&Tls>) -> anyhow::Result<Listeners> {
    let acceptor = match tls {
        Some(t) => Some(TlsAcceptor::from(
            t.server_config().context("TLS configuration")?,
        )),
        None => None,
    };
    let mut bound = Vec::new();
    for addr in listen {
        let l = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (server.listen / --listen): is another registry running, or the address missing?")
        })?;
        bound.push((*addr, l));
    }
    Ok(Listeners { acceptor, bound })
}

/// Start-up phase: one server task per listener, each stopping at `shutdown` and then draining
/// its connections for up to `grace`.
fn serve(
    listeners: Listeners,
    app: &Arc<App>,
    config: &Config,
    shutdown: &Notifier,
    grace: Duration,
) -> Vec<JoinHandle<()>> {
    let tls = listeners.acceptor.is_some();
    let root = &config.storage.root;
    let mut servers = Vec::new();
    for (addr, l) in listeners.bound {
        tracing::info!(address = %addr, tls, storage = %root.display(), "listening");
        servers.push(tokio::spawn(server::serve(
            l,
            app.clone(),
            listeners.acceptor.clone(),
            shutdown.subscribe(),
            grace,
        )));
    }
    servers
}

/// Stop phase: says `STOPPING=1`, tells every task to stop, and waits for the listeners to finish
/// their in-flight requests (each gives up after `grace`).
async fn drain(shutdown: &Notifier, servers: Vec<JoinHandle<()>>, grace: Duration) {
    systemd::stopping(&format!(
        "draining in-flight requests (up to {}s)",
        grace.as_secs()
    ));
    shutdown.notify();
    for t in servers {
        let _ = t.await;
    }
}
