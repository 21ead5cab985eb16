//! What each part of the daemon is handed: a [`Config`] turned into the settings types storage,
//! http, auth and proxy define for themselves. Those parts never see a `Config`, so a key can be
//! renamed or regrouped here without touching them, and each part's settings say, in its own terms,
//! all it depends on.
//!
//! The conversions live in configuration rather than in the daemon because more than the daemon
//! needs them (`gc`, `fsck`, `import`, `export`, `pull` and `doctor` open the same storage and
//! proxy), and because they are where key names meet the parts' types: the direction stays one way,
//! configuration to parts. Values here are already validated; a list entry that would not parse
//! cannot occur, and is skipped rather than trusted.

use std::time::Duration;

use super::closed::{AnonymousPolicy, StorageDriver};
use super::schema::Config;
use crate::auth::policy::parse_listener_policy;
use crate::auth::{Anonymous, AuthSettings, Policy};
use crate::http::cors::{HeaderSettings, ResponseHeaders, parse_header_line};
use crate::http::handlers::{ConnLimits, MetricsSettings, Settings, UiSettings};
use crate::proxy::{ProxySettings, UpstreamSettings};
use crate::storage::{Location, StorageSettings};

impl Config {
    /// The storage to open: the filesystem under `storage.root`, or the `[s3]` bucket with its
    /// credentials resolved (which may fail: a credentials file that cannot be read, none found).
    pub fn storage_settings(&self) -> Result<StorageSettings, String> {
        let timeout = Duration::from_secs(self.storage.operation_timeout_secs);
        let location = match self.storage.driver {
            StorageDriver::Filesystem => Location::Filesystem(self.storage.root.clone()),
            StorageDriver::S3 => Location::S3 {
                client: self.s3.settings(timeout)?,
                prefix: self.s3.prefix.clone(),
            },
        };
        Ok(StorageSettings { location, timeout })
    }

    /// Where the data lives, for logs and messages: the root directory or the bucket, as
    /// configured (nothing resolved, so it can be said before the storage opens, or when it fails
    /// to).
    pub fn storage_description(&self) -> String {
        match self.storage.driver {
            StorageDriver::S3 => {
                let prefix = self.s3.prefix.trim_matches('/');
                format!(
                    "s3 bucket {}{}{} at {}",
                    self.s3.bucket,
                    if prefix.is_empty() { "" } else { "/" },
                    prefix,
                    self.s3.endpoint
                )
            }
            StorageDriver::Filesystem => self.storage.root.display().to_string(),
        }
    }

    /// The request-path settings a reload may change.
    pub fn http_settings(&self) -> Settings {
        Settings {
            delete_enabled: self.storage.delete_enabled,
            max_manifest_bytes: self.limits.max_manifest_bytes,
            max_blob_bytes: self.limits.max_blob_bytes,
            body_timeout: Duration::from_secs(self.limits.body_read_timeout_secs),
            body_min_rate: self.limits.body_min_bytes_per_sec,
            max_concurrent_uploads: self.limits.max_concurrent_uploads,
            headers: ResponseHeaders::from_settings(&self.header_settings()),
            read_only: self.storage.read_only,
            min_free_bytes: self.storage.min_free_bytes,
            metrics: MetricsSettings {
                path: self.metrics.path.clone(),
                listeners: self
                    .metrics
                    .listeners
                    .iter()
                    .filter_map(|l| l.parse().ok())
                    .collect(),
                users: self.metrics.users.clone(),
            },
            ui: UiSettings {
                enabled: self.ui.enabled,
                listeners: self
                    .ui
                    .listeners
                    .iter()
                    .filter_map(|l| l.parse().ok())
                    .collect(),
                session_idle: Duration::from_secs(self.ui.session_idle_secs),
                session_max: Duration::from_secs(self.ui.session_max_secs),
            },
            rules: std::sync::Arc::new(self.rules()),
            gc_grace: Duration::from_secs(self.gc.grace_secs),
        }
    }

    /// `[[retention]]` and `[[immutable]]`, compiled (validation has reported any that do not
    /// compile; none of those reach here).
    pub fn rules(&self) -> crate::retention::Rules {
        crate::retention::Rules::compile(&self.retention, &self.immutable).unwrap_or_default()
    }

    /// `server.headers` and `[cors]`, parsed.
    fn header_settings(&self) -> HeaderSettings {
        let cors = &self.cors;
        HeaderSettings {
            extra: self
                .server
                .headers
                .iter()
                .filter_map(|h| parse_header_line(h))
                .collect(),
            allowed_origins: cors.allowed_origins.clone(),
            allowed_methods: cors
                .allowed_methods
                .iter()
                .filter_map(|m| m.parse().ok())
                .collect(),
            allowed_headers: cors.allowed_headers.clone(),
            exposed_headers: cors.exposed_headers.clone(),
            allow_credentials: cors.allow_credentials,
            max_age_secs: cors.max_age_secs,
        }
    }

    /// The connection limits the listeners apply (fixed at start).
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(self.limits.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.limits.idle_timeout_secs),
            send_stall_timeout: Duration::from_secs(self.limits.send_stall_timeout_secs),
            max_connections: self.limits.max_connections as usize,
        }
    }

    /// Logins and the access policy.
    pub fn auth_settings(&self) -> AuthSettings {
        let a = &self.auth;
        let anonymous = match a.anonymous {
            AnonymousPolicy::Auto => None,
            AnonymousPolicy::None => Some(Anonymous::None),
            AnonymousPolicy::Pull => Some(Anonymous::Pull),
            AnonymousPolicy::All => Some(Anonymous::All),
        };
        let by_listener = a
            .anonymous_by_listener
            .iter()
            .filter_map(|s| parse_listener_policy(s).ok())
            .collect();
        let accounts = !a.htpasswd.as_os_str().is_empty();
        AuthSettings {
            htpasswd: a.htpasswd.clone(),
            realm: a.realm.clone(),
            cache_ttl: Duration::from_secs(a.cache_secs),
            max_failures: a.max_failures_per_minute as u32,
            policy: Policy::new(anonymous, by_listener, &self.access, &self.group, accounts),
        }
    }

    /// The pull-through cache: its upstreams and bounds.
    pub fn proxy_settings(&self) -> ProxySettings {
        let p = &self.proxy;
        ProxySettings {
            upstreams: self
                .upstream
                .iter()
                .map(|u| UpstreamSettings {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    username: u.username.clone(),
                    password: u.password.clone(),
                    password_file: u.password_file.clone(),
                    ca: u.ca.clone(),
                    prefixes: u.prefixes(),
                    push: u.push,
                    token_realm_hosts: u.token_realm_hosts.clone(),
                })
                .collect(),
            default_upstream: p.default_upstream.clone(),
            default_patterns: p.default_patterns.clone(),
            tag_ttl: Duration::from_secs(p.tag_ttl_secs),
            timeout: Duration::from_secs(p.upstream_timeout_secs),
            max_manifest_bytes: self.limits.max_manifest_bytes,
            max_blob_bytes: self.limits.max_blob_bytes,
            fetch_deadline: Duration::from_secs(p.fetch_deadline_secs),
            min_rate: p.fetch_min_bytes_per_sec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn load(text: &str) -> Config {
        Config::from_layers(Some(("t.toml", text)), &[], &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The parts' own defaults (for in-process tests and `serve` before a config exists) are the
    /// shipped file's.
    #[test]
    fn the_parts_defaults_are_the_shipped_ones() {
        let c = Config::defaults();
        assert_eq!(c.http_settings(), Settings::basic(true, 4 << 20));
        assert_eq!(c.header_settings(), HeaderSettings::basic());
        assert_eq!(c.conn_limits(), ConnLimits::default());
    }

    #[test]
    fn storage_location_follows_the_driver() {
        let c = load("[storage]\nroot = \"/srv/r\"\noperation_timeout_secs = 7\n");
        let s = c.storage_settings().unwrap();
        assert!(matches!(&s.location, Location::Filesystem(r) if r.to_str() == Some("/srv/r")));
        assert_eq!(s.timeout, Duration::from_secs(7));
        assert_eq!(c.storage_description(), "/srv/r");
        let c = load(
            "[storage]\ndriver = \"s3\"\n[s3]\nendpoint = \"http://127.0.0.1:3900\"\n\
             bucket = \"b\"\nprefix = \"/reg/\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        );
        let s = c.storage_settings().unwrap();
        assert!(matches!(&s.location, Location::S3 { client, prefix }
            if client.bucket == "b" && prefix == "/reg/"));
        assert_eq!(
            c.storage_description(),
            "s3 bucket b/reg at http://127.0.0.1:3900"
        );
    }

    #[test]
    fn closed_sets_and_listener_entries_arrive_parsed() {
        let c = load(
            "[server]\nlisten = [\"127.0.0.1:5000\", \"0.0.0.0:8443\"]\n\
             [auth]\nhtpasswd = \"/etc/h\"\nanonymous = \"none\"\n\
             anonymous_by_listener = [\"0.0.0.0:8443=pull\"]\n\
             [metrics]\nlisteners = [\"local\", \"0.0.0.0:8443\"]\nusers = [\"prom\"]\n",
        );
        let a = c.auth_settings();
        let p = &a.policy;
        assert!(p.has_accounts());
        assert_eq!(
            p.anonymous_on("127.0.0.1:5000".parse().unwrap()),
            Anonymous::None
        );
        assert_eq!(
            p.anonymous_on("0.0.0.0:8443".parse().unwrap()),
            Anonymous::Pull
        );
        let m = c.http_settings().metrics;
        assert_eq!(
            m.listeners,
            [
                crate::http::handlers::MetricsListener::Local,
                crate::http::handlers::MetricsListener::Address("0.0.0.0:8443".parse().unwrap())
            ]
        );
        // "auto" is the policy's own default: with accounts, pull on loopback only.
        let c = load("[auth]\nhtpasswd = \"/etc/h\"\n");
        let p = c.auth_settings().policy;
        assert_eq!(
            p.anonymous_on("127.0.0.1:5000".parse().unwrap()),
            Anonymous::Pull
        );
        assert_eq!(
            p.anonymous_on("10.0.0.1:5000".parse().unwrap()),
            Anonymous::None
        );
    }

    #[test]
    fn upstreams_get_their_prefixes() {
        let c = load(
            "[proxy]\ndefault_upstream = \"docker.io\"\nupstream_timeout_secs = 3\n\
             [[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n\
             [[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nprefixes = [\"gh\"]\n",
        );
        let p = c.proxy_settings();
        let prefixes: Vec<_> = p.upstreams.iter().map(|u| u.prefixes.clone()).collect();
        assert_eq!(prefixes, [vec!["docker.io".to_string()], vec!["gh".into()]]);
        assert_eq!(p.timeout, Duration::from_secs(3));
        assert_eq!(p.max_manifest_bytes, 4 << 20);
        assert!(crate::proxy::Proxy::from_settings(&p, crate::status::Board::new()).is_ok());
    }
}
