//! Configuration: TOML with serde, built-in defaults embedded from `etc/registryd/config.toml`.
//!
//! Layers, later wins: embedded defaults, the config file, `REGISTRYD_<SECTION>_<KEY>` environment
//! variables, command-line flags. Because the embedded defaults name every key, they are also the
//! schema: a key they lack is unknown, a value of another type is wrong, and both are reported with
//! the key and where it came from (file line, variable or flag), all at once rather than one per run.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The commented configuration file the package installs; parsed, it is the built-in defaults.
pub const DEFAULTS_TOML: &str = include_str!("../etc/registryd/config.toml");

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
    /// "filesystem" (under `root`) or "s3" (the `[s3]` bucket).
    pub driver: String,
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
    pub anonymous: String,
    pub anonymous_by_listener: Vec<String>,
    pub cache_secs: u64,
    pub max_failures_per_minute: u64,
    pub allow_plain_http: bool,
}

/// One `[[access]]` rule: who may pull and push under a repository prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub prefix: String,
    #[serde(default)]
    pub pull: Vec<String>,
    #[serde(default)]
    pub push: Vec<String>,
}

/// One `[[group]]`: a name the access rules use as `@name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
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
    pub listeners: Vec<String>,
    pub users: Vec<String>,
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

/// The keys an array-of-tables entry may hold, with a value of each one's type.
type KeyType = (&'static str, fn() -> Value);
const ACCESS_KEYS: &[KeyType] = &[
    ("prefix", || Value::String(String::new())),
    ("pull", || Value::Array(Vec::new())),
    ("push", || Value::Array(Vec::new())),
];
const GROUP_KEYS: &[KeyType] = &[
    ("name", || Value::String(String::new())),
    ("members", || Value::Array(Vec::new())),
];
/// The arrays of tables the configuration has: name, keys, required keys, what one describes.
const TABLE_ARRAYS: &[(&str, &[KeyType], &[&str], &str)] = &[
    (
        "upstream",
        UPSTREAM_KEYS,
        &["name", "url"],
        "one per upstream registry",
    ),
    (
        "access",
        ACCESS_KEYS,
        &["prefix"],
        "one per repository prefix",
    ),
    ("group", GROUP_KEYS, &["name"], "one per group of users"),
];
const UPSTREAM_KEYS: &[KeyType] = &[
    ("name", || Value::String(String::new())),
    ("url", || Value::String(String::new())),
    ("username", || Value::String(String::new())),
    ("password", || Value::String(String::new())),
    ("password_file", || Value::String(String::new())),
    ("ca", || Value::String(String::new())),
    ("prefixes", || Value::Array(Vec::new())),
    ("push", || Value::Boolean(false)),
    ("token_realm_hosts", || Value::Array(Vec::new())),
];

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

/// A TOML syntax error without the source line the `toml` crate quotes (a password, perhaps):
/// where it is and what is wrong.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "TOML syntax error at line {line}, column {column}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    }
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

impl S3Config {
    /// The settings the S3 client needs, with credentials and region taken from the config, then
    /// the credentials file, then the `AWS_*` environment variables.
    pub fn settings(
        &self,
        timeout: std::time::Duration,
    ) -> Result<crate::storage::s3::S3Settings, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (mut key, mut secret) = (self.access_key_id.clone(), self.secret_access_key.clone());
        if (key.is_empty() || secret.is_empty()) && !self.credentials_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&self.credentials_file).map_err(|e| {
                format!(
                    "s3.credentials_file {}: {e}",
                    self.credentials_file.display()
                )
            })?;
            let (k, s) = aws_credentials(&text, &self.profile).ok_or_else(|| {
                format!(
                    "s3.credentials_file {}: no aws_access_key_id and aws_secret_access_key under [{}]",
                    self.credentials_file.display(),
                    self.profile
                )
            })?;
            (key, secret) = (k, s);
        }
        if key.is_empty() || secret.is_empty() {
            key = env("AWS_ACCESS_KEY_ID").unwrap_or_default();
            secret = env("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
        }
        if key.is_empty() || secret.is_empty() {
            return Err(
                "s3: no credentials: set s3.access_key_id and s3.secret_access_key, \
                 s3.credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            );
        }
        let endpoint = match &self.endpoint {
            e if !e.is_empty() => e.clone(),
            _ => env("AWS_ENDPOINT_URL_S3")
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .ok_or("s3.endpoint is required (e.g. https://s3.eu-west-1.amazonaws.com)")?,
        };
        let region = match &self.region {
            r if !r.is_empty() => r.clone(),
            _ => env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        };
        if self.bucket.is_empty() {
            return Err("s3.bucket is required".into());
        }
        Ok(crate::storage::s3::S3Settings {
            endpoint,
            region,
            bucket: self.bucket.clone(),
            path_style: self.path_style,
            access_key_id: key,
            secret_access_key: secret,
            ca: match &self.ca {
                ca if !ca.as_os_str().is_empty() => Some(ca.clone()),
                _ => env("AWS_CA_BUNDLE").map(PathBuf::from),
            },
            timeout,
            redirect_blobs: self.redirect_blobs,
        })
    }
}

/// The key pair under `[profile]` of an AWS shared credentials file.
fn aws_credentials(text: &str, profile: &str) -> Option<(String, String)> {
    let (mut in_profile, mut key, mut secret) = (false, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_profile = section == profile || section == format!("profile {profile}");
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => key = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((key?, secret?))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub level: String,
    pub format: String,
}

/// Command-line overrides, the top layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub storage: Option<PathBuf>,
    pub plain_http: bool,
}

/// One problem with the configuration: which key, where it was set, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.origin, self.message)
    }
}

/// Every problem found, so the operator fixes them in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// The built-in defaults.
    pub fn defaults() -> Config {
        // The embedded file is checked by the `defaults_parse` test; it cannot fail at run time.
        #[allow(clippy::expect_used)]
        toml::from_str(DEFAULTS_TOML).expect("embedded defaults parse")
    }

    /// Loads the effective configuration from `file` (if any), the process environment and flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("REGISTRYD_"))
            .collect();
        let text = match file {
            Some(p) => Some((
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        key: "-".into(),
                        origin: p.display().to_string(),
                        message: format!("cannot read config file: {e}"),
                    }])
                })?,
            )),
            None => None,
        };
        Self::from_layers(
            text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
            &env,
            overrides,
        )
    }

    /// Builds the configuration from explicit layers (testable without touching the process).
    pub fn from_layers(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigErrors> {
        let schema: Table = toml::from_str(DEFAULTS_TOML).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: "-".into(),
                origin: "embedded defaults".into(),
                message: e.to_string(),
            }])
        })?;
        let mut merged = schema.clone();
        let mut origins: HashMap<String, String> = HashMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        if let Some((fname, text)) = file {
            match toml::from_str::<Table>(text) {
                Err(e) => errors.push(ConfigError {
                    key: "-".into(),
                    origin: fname.to_string(),
                    message: syntax_error(text, &e),
                }),
                Ok(table) => {
                    let lines = key_lines(text);
                    for (section, value) in table {
                        let origin_of = |key: &str| match lines.get(key) {
                            Some(l) => format!("{fname} line {l}"),
                            None => fname.to_string(),
                        };
                        if let Some(spec) = TABLE_ARRAYS.iter().find(|t| t.0 == section) {
                            match check_table_array(spec, &value) {
                                Ok(()) => {
                                    merged.insert(section.clone(), value);
                                }
                                Err(e) => {
                                    errors.extend(e.into_iter().map(|(key, message)| ConfigError {
                                        key,
                                        origin: fname.to_string(),
                                        message,
                                    }))
                                }
                            }
                            continue;
                        }
                        let Some(Value::Table(schema_sec)) = schema.get(&section) else {
                            errors.push(ConfigError {
                                key: section.clone(),
                                origin: origin_of(&section),
                                message: format!("unknown section [{section}]"),
                            });
                            continue;
                        };
                        let Value::Table(values) = value else {
                            errors.push(ConfigError {
                                key: section.clone(),
                                origin: origin_of(&section),
                                message: "must be a [section] table".into(),
                            });
                            continue;
                        };
                        for (key, v) in values {
                            let full = format!("{section}.{key}");
                            let origin = origin_of(&full);
                            match check_type(schema_sec.get(&key), &v) {
                                Err(message) => errors.push(ConfigError {
                                    key: full,
                                    origin,
                                    message,
                                }),
                                Ok(()) => {
                                    set(&mut merged, &section, &key, v);
                                    origins.insert(full, origin);
                                }
                            }
                        }
                    }
                }
            }
        }

        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("REGISTRYD_") else {
                continue;
            };
            let origin = format!("environment variable {var}");
            let found = schema.iter().find_map(|(section, sec)| {
                let prefix = format!("{}_", section.to_uppercase());
                let key = rest.strip_prefix(&prefix)?.to_lowercase();
                let Value::Table(sec) = sec else { return None };
                sec.get(&key)
                    .map(|default| (section.clone(), key, default.clone()))
            });
            let Some((section, key, default)) = found else {
                // A known section with an unknown key is a typo worth stopping for; a variable
                // outside every section (REGISTRYD_HOME, say) may belong to someone else.
                let in_section = schema
                    .keys()
                    .any(|s| rest.starts_with(&format!("{}_", s.to_uppercase())));
                if in_section {
                    errors.push(ConfigError {
                        key: var.clone(),
                        origin,
                        message: "no such configuration key (REGISTRYD_<SECTION>_<KEY>, e.g. REGISTRYD_STORAGE_ROOT)".into(),
                    });
                } else {
                    warnings.push(format!(
                        "ignoring environment variable {var}: not a configuration key"
                    ));
                }
                continue;
            };
            let full = format!("{section}.{key}");
            match value_from_env(&default, raw) {
                Ok(v) => {
                    set(&mut merged, &section, &key, v);
                    origins.insert(full, origin);
                }
                Err(message) => errors.push(ConfigError {
                    key: full,
                    origin,
                    message,
                }),
            }
        }

        if !overrides.listen.is_empty() {
            let v = Value::Array(
                overrides
                    .listen
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            );
            set(&mut merged, "server", "listen", v);
            origins.insert("server.listen".into(), "flag --listen".into());
        }
        if let Some(root) = &overrides.storage {
            set(
                &mut merged,
                "storage",
                "root",
                Value::String(root.display().to_string()),
            );
            origins.insert("storage.root".into(), "flag --storage".into());
        }
        if overrides.plain_http {
            set(&mut merged, "tls", "enabled", Value::Boolean(false));
            origins.insert("tls.enabled".into(), "flag --plain-http".into());
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut config: Config =
            Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigErrors(vec![ConfigError {
                        key: "-".into(),
                        origin: "merged configuration".into(),
                        message: e.to_string(),
                    }])
                })?;
        let origin = |k: &str| origins.get(k).cloned().unwrap_or_else(|| "default".into());
        config.warnings = warnings;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(
                problems
                    .into_iter()
                    .map(|(key, message)| ConfigError {
                        origin: origin(key),
                        key: key.into(),
                        message,
                    })
                    .collect(),
            ))
        }
    }

    /// Checks values beyond their types; returns (key, problem) pairs.
    fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.server.listen.is_empty() {
            p.push((
                "server.listen",
                "at least one address is needed".to_string(),
            ));
        }
        for a in &self.server.listen {
            if a.parse::<SocketAddr>().is_err() {
                p.push((
                    "server.listen",
                    format!("{a:?} is not ADDRESS:PORT (e.g. 0.0.0.0:8443 or [::1]:5000)"),
                ));
            }
        }
        if parse_cidr(&self.node.address).is_none() {
            p.push((
                "node.address",
                format!(
                    "{:?} is not ADDRESS/PREFIX (e.g. 169.254.254.254/32)",
                    self.node.address
                ),
            ));
        }
        if self.node.interface.is_empty()
            || self.node.interface.len() > 15
            || self.node.interface.contains(['/', ' '])
        {
            p.push((
                "node.interface",
                format!(
                    "{:?} is not a valid interface name (1-15 characters, no '/' or space)",
                    self.node.interface
                ),
            ));
        }
        for h in &self.node.hostnames {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                p.push(("node.hostnames", format!("{h:?} is not a valid hostname")));
            }
        }
        if self.limits.max_manifest_bytes == 0 {
            p.push((
                "limits.max_manifest_bytes",
                "must be greater than 0".to_string(),
            ));
        }
        let plain_level =
            ["error", "warn", "info", "debug", "trace", "off"].contains(&self.log.level.as_str());
        let filter_ok = self.log.level.contains('=')
            && tracing_subscriber::EnvFilter::builder()
                .parse(&self.log.level)
                .is_ok();
        if !plain_level && !filter_ok {
            p.push((
                "log.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or filter",
                    self.log.level
                ),
            ));
        }
        if !["auto", "journald", "text", "json"].contains(&self.log.format.as_str()) {
            p.push((
                "log.format",
                format!(
                    "{:?} is not one of auto, journald, text, json",
                    self.log.format
                ),
            ));
        }
        if self.storage.check_interval_secs == 0 {
            p.push((
                "storage.check_interval_secs",
                "must be greater than 0".to_string(),
            ));
        }
        if self.storage.operation_timeout_secs == 0 {
            p.push((
                "storage.operation_timeout_secs",
                "must be greater than 0".to_string(),
            ));
        }
        if self.storage.check_failures == 0 {
            p.push((
                "storage.check_failures",
                "must be greater than 0".to_string(),
            ));
        }
        self.validate_proxy(&mut p);
        self.validate_storage_driver(&mut p);
        self.validate_access(&mut p);
        self.validate_metrics(&mut p);
        self.validate_http(&mut p);
        if !self.storage.require_fstype.is_empty() && self.storage.require_mount.is_empty() {
            p.push((
                "storage.require_fstype",
                "needs storage.require_mount".to_string(),
            ));
        }
        p
    }

    fn validate_storage_driver(&self, p: &mut Vec<(&'static str, String)>) {
        match self.storage.driver.as_str() {
            "filesystem" => {}
            "s3" => {
                if self.s3.bucket.is_empty() {
                    p.push((
                        "s3.bucket",
                        "is required with storage.driver = \"s3\"".into(),
                    ));
                }
                if !self.s3.endpoint.is_empty() && self.s3.endpoint.parse::<url::Url>().is_err() {
                    p.push((
                        "s3.endpoint",
                        format!(
                            "{:?} is not a URL (e.g. https://s3.eu-west-1.amazonaws.com)",
                            self.s3.endpoint
                        ),
                    ));
                }
                if !self.storage.require_mount.is_empty() {
                    p.push((
                        "storage.require_mount",
                        "is for a mounted filesystem; unset it with storage.driver = \"s3\"".into(),
                    ));
                }
            }
            other => p.push((
                "storage.driver",
                format!("{other:?} is not a storage driver (\"filesystem\" or \"s3\")"),
            )),
        }
    }

    fn validate_proxy(&self, p: &mut Vec<(&'static str, String)>) {
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for u in &self.upstream {
            if !valid_repo_name(&u.name) || u.name.contains('/') {
                p.push((
                    "upstream.name",
                    format!(
                        "{:?} is not a registry name such as docker.io or ghcr.io",
                        u.name
                    ),
                ));
            }
            if !names.insert(u.name.as_str()) {
                p.push(("upstream.name", format!("{:?} names two upstreams", u.name)));
            }
            let url_ok = (u.url.starts_with("https://") || u.url.starts_with("http://"))
                && u.url
                    .parse::<http::Uri>()
                    .is_ok_and(|uri| uri.host().is_some());
            if !url_ok {
                p.push((
                    "upstream.url",
                    format!(
                        "{:?} (upstream {}) is not an http:// or https:// URL",
                        redact_url(&u.url),
                        u.name
                    ),
                ));
            }
            if !u.password.is_empty() && !u.password_file.as_os_str().is_empty() {
                p.push((
                    "upstream.password",
                    format!(
                        "upstream {}: set password or password_file, not both",
                        u.name
                    ),
                ));
            }
            let has_secret = !u.password.is_empty() || !u.password_file.as_os_str().is_empty();
            if u.username.is_empty() == has_secret {
                p.push((
                    "upstream.username",
                    format!(
                        "upstream {}: username and a password (or password_file) go together",
                        u.name
                    ),
                ));
            }
            for prefix in u.prefixes() {
                if !valid_repo_name(&prefix) {
                    p.push((
                        "upstream.prefixes",
                        format!(
                            "{prefix:?} (upstream {}) is not a repository name prefix",
                            u.name
                        ),
                    ));
                }
                if !prefixes.insert(prefix.clone()) {
                    p.push((
                        "upstream.prefixes",
                        format!("prefix {prefix:?} is served by two upstreams"),
                    ));
                }
            }
        }
        let d = &self.proxy.default_upstream;
        if !d.is_empty() && !self.upstream.iter().any(|u| &u.name == d) {
            p.push((
                "proxy.default_upstream",
                format!("{d:?} is not the name of an [[upstream]]"),
            ));
        }
        for pat in &self.proxy.default_patterns {
            let ok = !pat.is_empty()
                && pat
                    .split('/')
                    .all(|c| c == "*" || c == "**" || valid_repo_name(c));
            if !ok {
                p.push((
                    "proxy.default_patterns",
                    format!(
                        "{pat:?} is not a name pattern (components, '*' for one, '**' for any number)"
                    ),
                ));
            }
        }
        if self.proxy.evict_interval_secs == 0 {
            p.push((
                "proxy.evict_interval_secs",
                "must be greater than 0".to_string(),
            ));
        }
        if self.proxy.upstream_timeout_secs == 0 {
            p.push((
                "proxy.upstream_timeout_secs",
                "must be greater than 0".to_string(),
            ));
        }
        if self.proxy.fetch_deadline_secs == 0 {
            p.push((
                "proxy.fetch_deadline_secs",
                "must be greater than 0".to_string(),
            ));
        }
    }

    fn validate_metrics(&self, p: &mut Vec<(&'static str, String)>) {
        let m = &self.metrics;
        if !m.path.is_empty()
            && (!m.path.starts_with('/')
                || m.path.starts_with("/v2")
                || ["/healthz", "/readyz", "/auth/token"].contains(&m.path.as_str()))
        {
            p.push((
                "metrics.path",
                format!(
                    "{:?} must start with / and be outside /v2 and the probe and token paths",
                    m.path
                ),
            ));
        }
        let listen = self.listen_addrs();
        for l in &m.listeners {
            if l == "local" || l == "all" {
                continue;
            }
            match l.parse::<SocketAddr>() {
                Ok(a) if listen.contains(&a) => {}
                _ => p.push((
                    "metrics.listeners",
                    format!("{l:?} is not \"local\", \"all\" or one of server.listen"),
                )),
            }
        }
        if !m.users.is_empty() && self.auth.htpasswd.as_os_str().is_empty() {
            p.push((
                "metrics.users",
                "names users but auth.htpasswd is not set, so nobody can log in".into(),
            ));
        }
    }

    fn validate_access(&self, p: &mut Vec<(&'static str, String)>) {
        let a = &self.auth;
        if a.anonymous != "auto" && a.anonymous.parse::<crate::auth::Anonymous>().is_err() {
            p.push((
                "auth.anonymous",
                format!("{:?} is not one of auto, none, pull, all", a.anonymous),
            ));
        }
        let listen = self.listen_addrs();
        for entry in &a.anonymous_by_listener {
            match crate::auth::policy::parse_listener_policy(entry) {
                Err(e) => p.push(("auth.anonymous_by_listener", e)),
                Ok((addr, _)) if !listen.contains(&addr) => p.push((
                    "auth.anonymous_by_listener",
                    format!("{addr} is not one of server.listen"),
                )),
                Ok(_) => {}
            }
        }
        if !a.htpasswd.as_os_str().is_empty() && !self.tls.enabled && !a.allow_plain_http {
            p.push((
                "auth.htpasswd",
                "logins need TLS (Basic auth over plain HTTP sends passwords in clear text): enable tls, or set auth.allow_plain_http = true for loopback tests".into(),
            ));
        }
        if a.htpasswd.as_os_str().is_empty()
            && self
                .access
                .iter()
                .flat_map(|r| r.pull.iter().chain(&r.push))
                .any(|e| e != "anonymous")
        {
            p.push((
                "access",
                "rules name users but auth.htpasswd is not set, so nobody can log in".into(),
            ));
        }
        let groups: std::collections::HashSet<&str> =
            self.group.iter().map(|g| g.name.as_str()).collect();
        if groups.len() != self.group.len() {
            p.push(("group.name", "a group name appears twice".into()));
        }
        for g in &self.group {
            if g.name.is_empty() || g.name.contains(['@', ':', ' ']) {
                p.push((
                    "group.name",
                    format!("{:?} is not a group name (no '@', ':' or space)", g.name),
                ));
            }
        }
        let mut prefixes = std::collections::HashSet::new();
        for r in &self.access {
            let prefix = r.prefix.trim_end_matches('/');
            if !prefix.is_empty() && !valid_repo_name(prefix) {
                p.push((
                    "access.prefix",
                    format!(
                        "{:?} is not a repository name prefix (\"\" covers all)",
                        r.prefix
                    ),
                ));
            }
            if !prefixes.insert(prefix) {
                p.push(("access.prefix", format!("{:?} has two rules", r.prefix)));
            }
            for e in r.pull.iter().chain(&r.push) {
                let ok = match e.strip_prefix('@') {
                    Some(g) => groups.contains(g),
                    None => !e.is_empty() && !e.contains([':', ' ']),
                };
                if !ok {
                    p.push((
                        "access.pull",
                        format!(
                            "{e:?} (prefix {:?}) is not a user, \"*\", \"anonymous\" or a defined @group",
                            r.prefix
                        ),
                    ));
                }
            }
        }
    }

    fn validate_http(&self, p: &mut Vec<(&'static str, String)>) {
        for h in &self.server.headers {
            if crate::http::cors::parse_header_line(h).is_none() {
                p.push((
                    "server.headers",
                    format!("{h:?} is not \"Name: value\" with a valid header name and value"),
                ));
            }
        }
        for o in &self.cors.allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.trim_end_matches('/').contains(['?', '#'])
                    && o.split("://")
                        .nth(1)
                        .is_some_and(|h| !h.is_empty() && !h.contains('/')));
            if !ok {
                p.push((
                    "cors.allowed_origins",
                    format!("{o:?} is not an origin (scheme://host[:port], or \"*\")"),
                ));
            }
        }
        for m in &self.cors.allowed_methods {
            if m.parse::<http::Method>().is_err() {
                p.push((
                    "cors.allowed_methods",
                    format!("{m:?} is not an HTTP method"),
                ));
            }
        }
        for h in self
            .cors
            .allowed_headers
            .iter()
            .chain(&self.cors.exposed_headers)
        {
            if h.parse::<http::HeaderName>().is_err() {
                p.push((
                    "cors.allowed_headers",
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        for (key, v) in [
            (
                "limits.header_read_timeout_secs",
                self.limits.header_read_timeout_secs,
            ),
            (
                "limits.body_read_timeout_secs",
                self.limits.body_read_timeout_secs,
            ),
            ("limits.idle_timeout_secs", self.limits.idle_timeout_secs),
            (
                "limits.send_stall_timeout_secs",
                self.limits.send_stall_timeout_secs,
            ),
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_concurrent_uploads",
                self.limits.max_concurrent_uploads,
            ),
        ] {
            if v == 0 {
                p.push((key, "must be greater than 0".to_string()));
            }
        }
    }

    /// The listen addresses, already validated.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .listen
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Checks `[[upstream]]`-style tables: known keys with values of the right type, required keys.
fn check_table_array(
    (name, keys, required, what): &(&str, &[KeyType], &[&str], &str),
    value: &Value,
) -> Result<(), Vec<(String, String)>> {
    let Value::Array(items) = value else {
        return Err(vec![(
            name.to_string(),
            format!("must be [[{name}]] tables ({what})"),
        )]);
    };
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            errors.push((
                format!("{name}[{i}]"),
                format!("must be a [[{name}]] table"),
            ));
            continue;
        };
        for (key, v) in t {
            let default = keys.iter().find(|(k, _)| k == key).map(|(_, make)| make());
            if let Err(message) = check_type(default.as_ref(), v) {
                errors.push((format!("{name}[{i}].{key}"), message));
            }
        }
        for r in *required {
            if !t.contains_key(*r) {
                errors.push((format!("{name}[{i}].{r}"), "is required".into()));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether `s` is a repository name (or prefix) by the OCI grammar.
fn valid_repo_name(s: &str) -> bool {
    s.parse::<crate::registry::RepoName>().is_ok()
}

/// Parses `ADDRESS/PREFIX`.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn set(table: &mut Table, section: &str, key: &str, v: Value) {
    if let Some(Value::Table(sec)) = table.get_mut(section) {
        sec.insert(key.to_string(), v);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean (true or false)",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

fn check_type(default: Option<&Value>, v: &Value) -> Result<(), String> {
    let Some(default) = default else {
        return Err("unknown key".into());
    };
    if std::mem::discriminant(default) != std::mem::discriminant(v) {
        return Err(format!(
            "must be {}, not {}",
            type_name(default),
            type_name(v)
        ));
    }
    if let (Value::Array(_), Value::Array(items)) = (default, v)
        && items.iter().any(|i| !i.is_str())
    {
        return Err("must be a list of strings".into());
    }
    if let Value::Integer(i) = v
        && *i < 0
    {
        return Err("must not be negative".into());
    }
    Ok(())
}

fn value_from_env(default: &Value, raw: &str) -> Result<Value, String> {
    let v = match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => return Err(format!("{raw:?} is not a boolean (true or false)")),
        },
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| format!("{raw:?} is not a non-negative integer"))?,
        ),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        other => {
            return Err(format!(
                "cannot be set from the environment ({})",
                type_name(other)
            ));
        }
    };
    Ok(v)
}

/// Line numbers of `section` and `section.key` in a TOML text, for error messages.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return lines;
    };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    for (section, value) in doc.get_ref() {
        let sname = section.get_ref().to_string();
        lines.insert(sname.clone(), line_of(section.span().start));
        if let toml::de::DeValue::Table(t) = value.get_ref() {
            for (k, _) in t {
                lines.insert(format!("{sname}.{}", k.get_ref()), line_of(k.span().start));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)], o: &Overrides) -> Result<Config, ConfigErrors> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_layers(Some(("test.toml", file)), &env, o)
    }

    #[test]
    fn defaults_parse() {
        let d = Config::defaults();
        assert_eq!(d.server.listen, vec!["169.254.254.254:8443"]);
        assert!(d.tls.enabled);
        assert_eq!(d.storage.root, PathBuf::from("/var/lib/registryd"));
        assert_eq!(
            Config::from_layers(None, &[], &Overrides::default()).unwrap(),
            d
        );
        // The shipped file is the defaults.
        assert_eq!(load(DEFAULTS_TOML, &[], &Overrides::default()).unwrap(), d);
    }

    #[test]
    fn layers_override_in_order() {
        let o = Overrides {
            listen: vec!["127.0.0.1:5000".into()],
            storage: None,
            plain_http: true,
        };
        let c = load(
            "[storage]\nroot = \"/from/file\"\ndelete_enabled = false\n",
            &[
                ("REGISTRYD_STORAGE_ROOT", "/from/env"),
                ("REGISTRYD_NODE_HOSTNAMES", "a.home, b.home"),
            ],
            &o,
        )
        .unwrap();
        assert_eq!(c.storage.root, PathBuf::from("/from/env"));
        assert!(!c.storage.delete_enabled);
        assert_eq!(c.server.listen, vec!["127.0.0.1:5000"]);
        assert!(!c.tls.enabled);
        assert_eq!(c.node.hostnames, vec!["a.home", "b.home"]);
    }

    #[test]
    fn s3_driver_settings() {
        let file = "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\
                    [profile ci]\naws_access_key_id=AK2\naws_secret_access_key=SK2\n";
        assert_eq!(
            aws_credentials(file, "default"),
            Some(("AK1".into(), "SK1".into()))
        );
        assert_eq!(
            aws_credentials(file, "ci"),
            Some(("AK2".into(), "SK2".into()))
        );
        assert_eq!(aws_credentials(file, "other"), None);
        let ok = "[storage]\ndriver = \"s3\"\n[s3]\nendpoint = \"http://127.0.0.1:3900\"\n\
                  bucket = \"b\"\nregion = \"garage\"\naccess_key_id = \"k\"\n\
                  secret_access_key = \"very-secret\"\n";
        let c = load(ok, &[], &Overrides::default()).unwrap();
        assert!(!c.to_toml().contains("very-secret"));
        let s = c.s3.settings(std::time::Duration::from_secs(1)).unwrap();
        assert_eq!((s.region.as_str(), s.bucket.as_str()), ("garage", "b"));
        let bad = "[storage]\ndriver = \"s4\"\n";
        let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
        assert_eq!(errs[0].key, "storage.driver");
        let bad = "[storage]\ndriver = \"s3\"\nrequire_mount = \"/mnt\"\n";
        let keys: Vec<_> = load(bad, &[], &Overrides::default())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert!(keys.contains(&"s3.bucket".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"storage.require_mount".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn upstreams() {
        let ok = "[proxy]\ndefault_upstream = \"docker.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\nusername = \"u\"\npassword = \"pw-1f8e\"\n";
        let c = load(ok, &[], &Overrides::default()).unwrap();
        assert_eq!(c.upstream.len(), 1);
        assert_eq!(c.upstream[0].prefixes(), vec!["docker.io".to_string()]);
        assert!(!c.to_toml().contains("pw-1f8e"), "{}", c.to_toml());
        let bad = "[proxy]\ndefault_upstream = \"quay.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"ftp://x\"\nuser = \"u\"\n[[upstream]]\nurl = \"https://x\"\n";
        let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"upstream[0].user"), "{keys:?}");
        assert!(keys.contains(&"upstream[1].name"), "{keys:?}");
        let bad = "[proxy]\ndefault_upstream = \"quay.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"ftp://x\"\npassword = \"p\"\n";
        let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "upstream.url",
            "upstream.username",
            "proxy.default_upstream",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_check_config() {
        let text = "[proxy]\ndefault_upstream = \"up\"\n[[upstream]]\nname = \"up\"\nurl = \"https://u:S3CRET-url@example.net\"\n";
        let c = load(text, &[], &Overrides::default()).unwrap();
        let shown = c.to_toml();
        assert!(!shown.contains("S3CRET"), "{shown}");
        assert!(shown.contains("https://u:REDACTED@example.net"), "{shown}");
        // A syntax error on a password's line names the place, not the line.
        let text = "[[upstream]]\nname = \"up\"\npassword = \"S3CRET-pw\n";
        let errs = load(text, &[], &Overrides::default()).unwrap_err().0;
        let all: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        assert!(!all.iter().any(|m| m.contains("S3CRET")), "{all:?}");
        assert!(all.iter().any(|m| m.contains("line 3")), "{all:?}");
        let bad = "[[upstream]]\nname = \"up\"\nurl = \"ftp://u:S3CRET@x\"\n";
        let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
        let all: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        assert!(!all.iter().any(|m| m.contains("S3CRET")), "{all:?}");
        assert_eq!(
            redact_url("https://registry-1.docker.io"),
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn reports_every_error_with_key_and_line() {
        let file = "[server]\nlisten = [\"nope\"]\nbogus = 1\n\n[storage]\ndelete_enabled = \"yes\"\n[extra]\nx=1\n";
        let env = [("REGISTRYD_TLS_NOPE", "1"), ("REGISTRYD_BIN", "/x")];
        let errs = load(file, &env, &Overrides::default()).unwrap_err().0;
        let keys: Vec<_> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.origin.as_str()))
            .collect();
        assert!(
            keys.contains(&("server.bogus", "test.toml line 3")),
            "{keys:?}"
        );
        assert!(
            keys.contains(&("storage.delete_enabled", "test.toml line 6")),
            "{keys:?}"
        );
        assert!(keys.contains(&("extra", "test.toml line 7")), "{keys:?}");
        assert!(
            keys.iter().any(|(k, _)| *k == "REGISTRYD_TLS_NOPE"),
            "{keys:?}"
        );
        // Outside every section: someone else's variable, a warning and no error.
        assert!(!keys.iter().any(|(k, _)| *k == "REGISTRYD_BIN"), "{keys:?}");
        let c = load("", &[("REGISTRYD_BIN", "/x")], &Overrides::default()).unwrap();
        assert_eq!(c.warnings.len(), 1);
        // semantic errors come after type errors are fixed, still with their origin
        let errs = load(
            "[server]\nlisten = [\"nope\"]\n[log]\nlevel = \"loud!\"\n",
            &[],
            &Overrides::default(),
        )
        .unwrap_err()
        .0;
        assert_eq!(errs[0].key, "server.listen");
        assert_eq!(errs[0].origin, "test.toml line 2");
        assert_eq!(errs[1].key, "log.level");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let errs = load(
            "",
            &[("REGISTRYD_STORAGE_DELETE_ENABLED", "maybe")],
            &Overrides::default(),
        )
        .unwrap_err()
        .0;
        assert_eq!(errs[0].key, "storage.delete_enabled");
        assert!(errs[0].origin.contains("REGISTRYD_STORAGE_DELETE_ENABLED"));
    }

    #[test]
    fn cidr() {
        assert!(parse_cidr("169.254.254.254/32").is_some());
        assert!(parse_cidr("169.254.254.254/33").is_none());
        assert!(parse_cidr("fe80::1/64").is_some());
        assert!(parse_cidr("x/1").is_none());
    }
}
