//! Checks of values beyond their types: addresses, names, URLs, and the keys that must agree with
//! each other. Every problem is collected, as (key, message), so the operator fixes them in one go.
//! Where a value is in a part's grammar (an `anonymous_by_listener` entry, a `server.headers` line,
//! a `metrics.listeners` entry), that part's own pure parser judges it, so the two cannot disagree.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::closed::StorageDriver;
use super::schema::{Config, redact_url};
use crate::http::handlers::MetricsListener;

/// Problems found, each with the key it is about.
type Problems = Vec<(&'static str, String)>;

impl Config {
    /// Checks values beyond their types; returns (key, problem) pairs. Closed sets are not here:
    /// they were checked while the layers were merged.
    pub(super) fn validate(&self) -> Problems {
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
        if !self.node.name.is_empty()
            && let Err(e) = crate::status::NodeName::parse(&self.node.name)
        {
            p.push(("node.name", e));
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
        if let Err(problems) = crate::retention::Rules::compile(&self.retention, &self.immutable) {
            p.extend(problems);
        }
        if !self.storage.require_fstype.is_empty() && self.storage.require_mount.is_empty() {
            p.push((
                "storage.require_fstype",
                "needs storage.require_mount".to_string(),
            ));
        }
        p
    }

    fn validate_storage_driver(&self, p: &mut Problems) {
        match self.storage.driver {
            StorageDriver::Filesystem => {}
            StorageDriver::S3 => {
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
        }
    }

    fn validate_proxy(&self, p: &mut Problems) {
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
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

    fn validate_metrics(&self, p: &mut Problems) {
        let m = &self.metrics;
        if !m.path.is_empty()
            && (!m.path.starts_with('/')
                || m.path.starts_with("/v2")
                || m.path == "/"
                || m.path == "/ui"
                || m.path.starts_with("/ui/")
                || ["/healthz", "/readyz", "/auth/token"].contains(&m.path.as_str()))
        {
            p.push((
                "metrics.path",
                format!(
                    "{:?} must start with / and be outside /v2, /ui and the probe and token paths",
                    m.path
                ),
            ));
        }
        let listen = self.listen_addrs();
        for l in &m.listeners {
            match l.parse::<MetricsListener>() {
                Ok(MetricsListener::Local | MetricsListener::All) => {}
                Ok(MetricsListener::Address(a)) if listen.contains(&a) => {}
                _ => p.push((
                    "metrics.listeners",
                    format!("{l:?} is not \"local\", \"all\" or one of server.listen"),
                )),
            }
        }
        for l in &self.ui.listeners {
            match l.parse::<MetricsListener>() {
                Ok(MetricsListener::Local | MetricsListener::All) => {}
                Ok(MetricsListener::Address(a)) if listen.contains(&a) => {}
                _ => p.push((
                    "ui.listeners",
                    format!("{l:?} is not \"local\", \"all\" or one of server.listen"),
                )),
            }
        }
        if self.ui.session_idle_secs == 0 || self.ui.session_idle_secs > self.ui.session_max_secs {
            p.push((
                "ui.session_idle_secs",
                format!(
                    "{} must be greater than 0 and at most ui.session_max_secs ({})",
                    self.ui.session_idle_secs, self.ui.session_max_secs
                ),
            ));
        }
        if !m.users.is_empty() && self.auth.htpasswd.as_os_str().is_empty() {
            p.push((
                "metrics.users",
                "names users but auth.htpasswd is not set, so nobody can log in".into(),
            ));
        }
    }

    fn validate_access(&self, p: &mut Problems) {
        let a = &self.auth;
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
        let groups: HashSet<&str> = self.group.iter().map(|g| g.name.as_str()).collect();
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
        let mut prefixes = HashSet::new();
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

    fn validate_http(&self, p: &mut Problems) {
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
