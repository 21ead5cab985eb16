//! The configuration's shape: one serde struct per `[section]`, one per `[[table]]` entry, closed
//! sets as enums (see [`super::closed`]). Field names are the keys of `etc/registryd/config.toml`;
//! `check-config` prints these structs back as TOML, so every secret has a serializer that hides it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::closed::{AnonymousPolicy, LogFormat, StorageDriver};
/// `[[access]]` and `[[group]]` are the access policy's own vocabulary: the policy defines them.
pub use crate::auth::policy::{AccessRule, Group};
/// `[[retention]]` and `[[immutable]]` are the retention rules' own vocabulary.
pub use crate::retention::{ImmutableRule, RetentionRule};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub storage: StorageConfig,
    pub node: Node,
    pub limits: Limits,
    pub gc: Gc,
    pub auth: AuthConfig,
    pub cors: Cors,
    pub proxy: Proxy,
    pub metrics: MetricsConfig,
    pub ui: UiConfig,
    pub s3: S3Config,
    pub log: Log,
    /// Upstream registries of the pull-through cache (`[[upstream]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<Upstream>,
    /// Per-repository access rules (`[[access]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessRule>,
    /// Named groups of users for the access rules (`[[group]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<Group>,
    /// Which tags of pushed repositories GC untags (`[[retention]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionRule>,
    /// Tags that may never move or be deleted (`[[immutable]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable: Vec<ImmutableRule>,
    /// Things worth telling the operator that do not stop start-up (printed once logging starts).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Vec<String>,
    pub shutdown_grace_secs: u64,
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub enabled: bool,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub expiry_warning_days: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The filesystem under `root`, or the `[s3]` bucket.
    pub driver: StorageDriver,
    pub root: PathBuf,
    pub delete_enabled: bool,
    pub require_mount: String,
    pub require_fstype: String,
    pub check_interval_secs: u64,
    pub check_failures: u64,
    pub operation_timeout_secs: u64,
    pub read_only: bool,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub address: String,
    pub interface: String,
    pub create_interface: bool,
    pub remove_interface_on_stop: bool,
    pub hostnames: Vec<String>,
    pub hosts_file: PathBuf,
    /// This node's name in the cluster (its heartbeat file's name); empty: the hostname.
    pub name: String,
    /// Seconds between heartbeats on the shared storage; 0: none.
    pub heartbeat_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_blob_bytes: u64,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
    /// Bytes per second a request body must average over each `body_read_timeout_secs` of waiting
    /// for it; 0: only the stall rule.
    pub body_min_bytes_per_sec: u64,
    pub idle_timeout_secs: u64,
    /// Seconds a response may wait for the client to take its next bytes (PINGs do not count).
    pub send_stall_timeout_secs: u64,
    pub max_connections: u64,
    pub max_concurrent_uploads: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gc {
    pub interval_secs: u64,
    pub grace_secs: u64,
    pub delete_untagged: bool,
    pub upload_max_age_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub htpasswd: PathBuf,
    pub realm: String,
    /// Listeners without an `anonymous_by_listener` entry: "auto", or one policy for all.
    pub anonymous: AnonymousPolicy,
    /// `ADDRESS:PORT=none|pull|all` entries, in the grammar of
    /// [`crate::auth::policy::parse_listener_policy`].
    pub anonymous_by_listener: Vec<String>,
    pub cache_secs: u64,
    pub max_failures_per_minute: u64,
    pub allow_plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub path: String,
    /// "local", "all" or one of `server.listen`, in the grammar of
    /// [`crate::http::handlers::MetricsListener`].
    pub listeners: Vec<String>,
    pub users: Vec<String>,
}

/// `[ui]`: the web UI under `/ui/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    pub enabled: bool,
    /// Which listeners serve it, in `metrics.listeners`' grammar.
    pub listeners: Vec<String>,
    /// A login session unused this long is over.
    pub session_idle_secs: u64,
    /// A login session this old is over, however busy.
    pub session_max_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub default_upstream: String,
    pub default_patterns: Vec<String>,
    pub tag_ttl_secs: u64,
    pub upstream_timeout_secs: u64,
    pub fetch_deadline_secs: u64,
    pub fetch_min_bytes_per_sec: u64,
    pub max_cache_bytes: u64,
    pub evict_interval_secs: u64,
}

/// One upstream registry of the pull-through cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    #[serde(default)]
    pub username: String,
    #[serde(default, serialize_with = "redacted")]
    pub password: String,
    #[serde(default)]
    pub password_file: PathBuf,
    #[serde(default)]
    pub ca: PathBuf,
    /// Repository prefixes this upstream serves; empty means its name.
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub push: bool,
    /// Hosts (`host` or `host:port`) a Bearer token realm may be on to receive the credentials
    /// over plain `http`, besides the upstream's own host.
    #[serde(default)]
    pub token_realm_hosts: Vec<String>,
}

impl Upstream {
    /// The prefixes this upstream serves (its name when none are configured).
    pub fn prefixes(&self) -> Vec<String> {
        if self.prefixes.is_empty() {
            vec![self.name.clone()]
        } else {
            self.prefixes.clone()
        }
    }
}

/// The bucket of `storage.driver = "s3"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(serialize_with = "redacted_url")]
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub path_style: bool,
    pub access_key_id: String,
    #[serde(serialize_with = "redacted")]
    pub secret_access_key: String,
    pub credentials_file: PathBuf,
    pub profile: String,
    pub ca: PathBuf,
    pub redirect_blobs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A level name or an `EnvFilter` directive list (`info,registryd::proxy=debug`): not a
    /// closed set, so a string checked by validation.
    pub level: String,
    pub format: LogFormat,
}

/// `check-config` prints the configuration; a password never appears in it.
fn redacted<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { "" } else { "<redacted>" })
}

/// A URL as `check-config` and error messages show it: a password in it (`https://u:pw@host`)
/// replaced, the rest as written.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(_) => u.to_string(),
        // Not a URL, but user info may be in it: show none of it.
        Err(_) if u.contains('@') => "<unparsable URL with user info, redacted>".into(),
        Err(_) => u.to_string(),
    }
}

fn redacted_url<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(v))
}
