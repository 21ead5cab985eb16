//! The settings the request path reads: those a reload may change while requests are in flight
//! ([`Settings`], swapped whole on reload) and the connection limits the listeners fix at start
//! ([`ConnLimits`]).

use std::time::Duration;

use super::cors::ResponseHeaders;
use crate::config::{Config, MetricsConfig};

/// Settings a reload may change while requests are in flight.
#[derive(Debug, Clone)]
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
    pub metrics: MetricsConfig,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            delete_enabled: c.storage.delete_enabled,
            max_manifest_bytes: c.limits.max_manifest_bytes,
            max_blob_bytes: c.limits.max_blob_bytes,
            body_timeout: Duration::from_secs(c.limits.body_read_timeout_secs),
            body_min_rate: c.limits.body_min_bytes_per_sec,
            max_concurrent_uploads: c.limits.max_concurrent_uploads,
            headers: ResponseHeaders::from_config(c),
            read_only: c.storage.read_only,
            min_free_bytes: c.storage.min_free_bytes,
            metrics: c.metrics.clone(),
        }
    }

    /// The defaults, with deletes and the manifest limit as given (in-process tests).
    pub fn basic(delete_enabled: bool, max_manifest_bytes: u64) -> Settings {
        let mut s = Settings::from_config(&Config::defaults());
        s.delete_enabled = delete_enabled;
        s.max_manifest_bytes = max_manifest_bytes;
        s
    }
}

/// Connection limits, fixed at start (the listeners apply them).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to take its next bytes.
    pub send_stall_timeout: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_config(c: &Config) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(c.limits.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(c.limits.idle_timeout_secs),
            send_stall_timeout: Duration::from_secs(c.limits.send_stall_timeout_secs),
            max_connections: c.limits.max_connections as usize,
        }
    }
}
