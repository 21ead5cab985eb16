//! The settings the request path reads: those a reload may change while requests are in flight
//! ([`Settings`], swapped whole on reload) and the connection limits the listeners fix at start
//! ([`ConnLimits`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::cors::{HeaderSettings, ResponseHeaders};

/// Settings a reload may change while requests are in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub delete_enabled: bool,
    pub max_manifest_bytes: u64,
    /// Largest blob accepted; 0: no limit.
    pub max_blob_bytes: u64,
    /// How long a request body may stall before the request fails.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average over each `body_timeout` of waiting.
    pub body_min_rate: u64,
    pub max_concurrent_uploads: u64,
    pub headers: ResponseHeaders,
    /// `storage.read_only`: pushes and deletes refused.
    pub read_only: bool,
    /// `storage.min_free_bytes`: under it, pushes refused.
    pub min_free_bytes: u64,
    /// `[metrics]`: where and for whom `/metrics` answers.
    pub metrics: MetricsSettings,
    /// `[ui]`: whether and where the web UI answers.
    pub ui: UiSettings,
    /// `[[retention]]` and `[[immutable]]`: which tags may never move, and what GC keeps.
    pub rules: std::sync::Arc<crate::retention::Rules>,
    /// `gc.grace_secs`: what retention never touches, for the web UI's preview of the next pass.
    pub gc_grace: Duration,
}

impl Settings {
    /// The shipped defaults (`etc/registryd/config.toml`; the configuration's tests check that
    /// they agree), with deletes and the manifest limit as given (in-process tests).
    pub fn basic(delete_enabled: bool, max_manifest_bytes: u64) -> Settings {
        Settings {
            delete_enabled,
            max_manifest_bytes,
            max_blob_bytes: 0,
            body_timeout: Duration::from_secs(60),
            body_min_rate: 4096,
            max_concurrent_uploads: 128,
            headers: ResponseHeaders::from_settings(&HeaderSettings::basic()),
            read_only: false,
            min_free_bytes: 0,
            metrics: MetricsSettings::basic(),
            ui: UiSettings::basic(),
            rules: std::sync::Arc::default(),
            gc_grace: Duration::from_secs(3600),
        }
    }
}

/// Connection limits, fixed at start (the listeners apply them).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to take its next bytes.
    pub send_stall_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    /// The shipped defaults (the configuration's tests check that they agree).
    fn default() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            send_stall_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// `[metrics]`: where and for whom `/metrics` answers, as the daemon hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// The path it answers on; empty: nowhere.
    pub path: String,
    pub listeners: Vec<MetricsListener>,
    /// Users who may read the metrics (`*`: any); empty: anyone who reaches a listener.
    pub users: Vec<String>,
}

impl MetricsSettings {
    /// The shipped defaults: `/metrics` on loopback and link-local listeners, to anyone.
    pub fn basic() -> MetricsSettings {
        MetricsSettings {
            path: "/metrics".into(),
            listeners: vec![MetricsListener::Local],
            users: Vec::new(),
        }
    }
}

/// One `metrics.listeners` entry: which listeners serve `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListener {
    /// `"all"`: every listener.
    All,
    /// `"local"`: loopback and link-local listeners (the node itself and its containers).
    Local,
    /// `ADDRESS:PORT`: the listener bound to it.
    Address(SocketAddr),
}

impl std::str::FromStr for MetricsListener {
    type Err = ();
    fn from_str(s: &str) -> Result<MetricsListener, ()> {
        match s {
            "all" => Ok(MetricsListener::All),
            "local" => Ok(MetricsListener::Local),
            addr => addr.parse().map(MetricsListener::Address).map_err(|_| ()),
        }
    }
}

/// `[ui]`: the web UI under `/ui/`, as the daemon hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSettings {
    pub enabled: bool,
    /// Which listeners serve it (`metrics.listeners`' grammar).
    pub listeners: Vec<MetricsListener>,
    /// A login session unused this long is over (`ui.session_idle_secs`).
    pub session_idle: Duration,
    /// A login session this old is over (`ui.session_max_secs`).
    pub session_max: Duration,
}

impl UiSettings {
    /// The shipped defaults: on, on every listener, sessions of an hour idle and 12 h in all.
    pub fn basic() -> UiSettings {
        UiSettings {
            enabled: true,
            listeners: vec![MetricsListener::All],
            session_idle: Duration::from_secs(3600),
            session_max: Duration::from_secs(12 * 3600),
        }
    }
}
