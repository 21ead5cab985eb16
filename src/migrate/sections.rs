//! One method per section of Distribution's configuration (storage, http, auth, health, proxy,
//! log): what it becomes in registryd's TOML, and a warning for what has no equivalent.

use serde_json::Value as Yaml;
use toml::{Table, Value};

use super::Migration;
use super::yaml::{duration_secs, scalar, truthy};

impl Migration {
    /// Distribution's S3 driver parameters: the same bucket, prefix and key layout.
    fn s3(&mut self, p: &Yaml, redirect: Option<&Yaml>) {
        let text = |k: &str| p.get(k).and_then(Yaml::as_str).map(str::to_string);
        self.set("storage", "driver", Value::String("s3".into()));
        for (from, to) in [
            ("bucket", "bucket"),
            ("region", "region"),
            ("accesskey", "access_key_id"),
            ("secretkey", "secret_access_key"),
        ] {
            if let Some(v) = text(from) {
                self.set("s3", to, Value::String(v));
            }
        }
        if let Some(root) = text("rootdirectory") {
            self.set("s3", "prefix", Value::String(root.trim_matches('/').into()));
        }
        let secure = p.get("secure").is_none_or(truthy);
        match text("regionendpoint") {
            Some(e) => {
                let e = if e.contains("://") {
                    e
                } else if secure {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                };
                self.set("s3", "endpoint", Value::String(e));
                // Distribution 2.8 uses path-style requests whenever an endpoint is given.
                let path = p.get("forcepathstyle").is_none_or(truthy);
                self.set("s3", "path_style", Value::Boolean(path));
            }
            None => {
                let region = text("region").unwrap_or_else(|| "us-east-1".into());
                self.set(
                    "s3",
                    "endpoint",
                    Value::String(format!("https://s3.{region}.amazonaws.com")),
                );
                self.set("s3", "path_style", Value::Boolean(false));
            }
        }
        // Distribution redirects blob downloads to the bucket unless told not to.
        let disabled = redirect.and_then(|r| r.get("disable")).is_some_and(truthy);
        self.set("s3", "redirect_blobs", Value::Boolean(!disabled));
        if !disabled {
            self.warn("storage.redirect: Distribution sent blob downloads to the bucket; s3.redirect_blobs = true does the same (clients must reach the store; set it false to serve blobs through registryd)".into());
        }
        if text("accesskey").is_none() {
            self.warn("storage.s3.accesskey: none given; registryd takes AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or s3.credentials_file (no instance-role credentials)".into());
        }
        for k in [
            "encrypt",
            "keyid",
            "storageclass",
            "objectacl",
            "skipverify",
            "accelerate",
            "usedualstack",
            "sessiontoken",
            "multipartcopychunksize",
            "multipartcopymaxconcurrency",
            "multipartcopythresholdsize",
        ] {
            if p.get(k).is_some() {
                self.warn(format!(
                    "storage.s3.{k}: not supported; registryd writes with the bucket's defaults"
                ));
            }
        }
        if p.get("chunksize").is_some() {
            self.warn("storage.s3.chunksize: registryd uploads in parts of 5 to 10 MiB".into());
        }
        if p.get("v4auth").is_some_and(|v| !truthy(v)) {
            self.warn("storage.s3.v4auth = false: registryd always signs with SigV4".into());
        }
    }

    pub(super) fn storage(&mut self, doc: &Yaml) -> Result<(), String> {
        let Some(s) = doc.get("storage") else {
            return Ok(());
        };
        if let Some(root) = s
            .get("filesystem")
            .and_then(|f| f.get("rootdirectory"))
            .and_then(Yaml::as_str)
        {
            // registryd reads the same layout: the same directory serves the same images.
            self.set("storage", "root", Value::String(root.into()));
        } else if s.get("filesystem").is_some() {
            self.set("storage", "root", Value::String("/var/lib/registry".into()));
        }
        if let Some(s3) = s.get("s3") {
            self.s3(s3, s.get("redirect"));
        }
        for driver in ["azure", "gcs", "swift", "oss", "inmemory"] {
            if s.get(driver).is_some() {
                self.warn(format!(
                    "storage.{driver}: registryd stores on a filesystem (a shared mount in a cluster) or in S3; copy the data to a directory and set storage.root"
                ));
            }
        }
        if let Some(d) = s.get("delete").and_then(|d| d.get("enabled")) {
            self.set("storage", "delete_enabled", Value::Boolean(truthy(d)));
        } else {
            // Distribution refuses deletes unless enabled; registryd allows them by default.
            self.set("storage", "delete_enabled", Value::Boolean(false));
        }
        if s.get("cache").is_some() {
            self.warn(
                "storage.cache: not needed; registryd caches manifests in memory by itself".into(),
            );
        }
        if let Some(m) = s.get("maintenance") {
            if let Some(up) = m.get("uploadpurging") {
                if up.get("enabled").is_some_and(|e| !truthy(e)) {
                    self.warn("storage.maintenance.uploadpurging.enabled = false: registryd always removes abandoned uploads; set gc.upload_max_age_secs high to keep them longer".into());
                }
                if let Some(age) = up.get("age") {
                    let secs = duration_secs(age)
                        .map_err(|e| format!("storage.maintenance.uploadpurging.age: {e}"))?;
                    self.set("gc", "upload_max_age_secs", Value::Integer(secs as i64));
                }
                if let Some(iv) = up.get("interval") {
                    let secs = duration_secs(iv)
                        .map_err(|e| format!("storage.maintenance.uploadpurging.interval: {e}"))?;
                    self.set("gc", "interval_secs", Value::Integer(secs as i64));
                    self.warn("storage.maintenance.uploadpurging.interval became gc.interval_secs: registryd's garbage collection runs online on that schedule and also removes unreferenced blobs (Distribution needed `registry garbage-collect` offline for that)".into());
                }
            }
            if let Some(ro) = m.get("readonly").and_then(|r| r.get("enabled")) {
                self.set("storage", "read_only", Value::Boolean(truthy(ro)));
            }
        }
        Ok(())
    }

    pub(super) fn http(&mut self, doc: &Yaml) -> Result<(), String> {
        let Some(h) = doc.get("http") else {
            return Ok(());
        };
        let tls = h.get("tls");
        let cert = tls
            .and_then(|t| t.get("certificate"))
            .and_then(Yaml::as_str);
        let key = tls.and_then(|t| t.get("key")).and_then(Yaml::as_str);
        if let Some(addr) = h.get("addr").and_then(Yaml::as_str) {
            let addr = if addr.starts_with(':') {
                format!("0.0.0.0{addr}")
            } else {
                addr.to_string()
            };
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("http.addr {addr:?} is not ADDRESS:PORT"));
            }
            self.set("server", "listen", Value::Array(vec![Value::String(addr)]));
            self.warn("http.addr: kept as server.listen; on a cluster node registryd's own address is 169.254.254.254:8443 (add it to server.listen), the same on every node".into());
        }
        match (cert, key) {
            (Some(c), Some(k)) => {
                self.set("tls", "enabled", Value::Boolean(true));
                self.set("tls", "certificate", Value::String(c.into()));
                self.set("tls", "key", Value::String(k.into()));
            }
            _ => {
                self.set("tls", "enabled", Value::Boolean(false));
                if tls.and_then(|t| t.get("letsencrypt")).is_some() {
                    self.warn("http.tls.letsencrypt: no ACME client in registryd; use certbot or `registryd cert init` and point tls.certificate/tls.key at the files (they are reloaded when they change)".into());
                } else {
                    self.warn("no http.tls: this registry serves plain HTTP, and clients need it listed as insecure".into());
                }
            }
        }
        if tls.and_then(|t| t.get("clientcas")).is_some() {
            self.warn("http.tls.clientcas: client certificates are not checked by registryd; use auth.htpasswd".into());
        }
        if let Some(d) = h.get("draintimeout") {
            let secs = duration_secs(d).map_err(|e| format!("http.draintimeout: {e}"))?;
            self.set("server", "shutdown_grace_secs", Value::Integer(secs as i64));
        }
        if h.get("prefix")
            .and_then(Yaml::as_str)
            .is_some_and(|p| !p.is_empty() && p != "/")
        {
            self.warn("http.prefix: registryd serves the API at /v2/ only; put a path-rewriting proxy in front if clients use a prefix".into());
        }
        for k in ["secret", "host", "relativeurls"] {
            if h.get(k).is_some() {
                self.warn(format!("http.{k}: not needed (registryd signs nothing with a secret and answers with relative Location URLs)"));
            }
        }
        if let Some(p) = h.get("debug").and_then(|d| d.get("prometheus"))
            && p.get("enabled").is_some_and(truthy)
        {
            let path = p.get("path").and_then(Yaml::as_str).unwrap_or("/metrics");
            self.set("metrics", "path", Value::String(path.into()));
            self.warn("http.debug.prometheus: metrics are served on the registry listeners (metrics.listeners), not on a separate debug address".into());
        }
        if let Some(headers) = h.get("headers").and_then(Yaml::as_object) {
            self.headers(headers)?;
        }
        if h.get("http2")
            .and_then(|x| x.get("disabled"))
            .is_some_and(truthy)
        {
            self.warn(
                "http.http2.disabled: registryd always offers HTTP/2 (by ALPN) and HTTP/1.1".into(),
            );
        }
        Ok(())
    }

    /// `http.headers`: CORS headers become `[cors]` (answered per allowed origin, preflight
    /// included); the rest stay fixed response headers.
    fn headers(&mut self, headers: &serde_json::Map<String, Yaml>) -> Result<(), String> {
        let mut fixed = Vec::new();
        for (name, values) in headers {
            let vals: Vec<String> = match values {
                Yaml::Array(s) => s.iter().map(scalar).collect(),
                other => vec![scalar(other)],
            };
            let split = || -> Vec<Value> {
                vals.iter()
                    .flat_map(|v| v.split(','))
                    .map(|v| Value::String(v.trim().to_string()))
                    .filter(|v| v.as_str() != Some(""))
                    .collect()
            };
            match name.to_ascii_lowercase().as_str() {
                "access-control-allow-origin" => {
                    self.set("cors", "allowed_origins", Value::Array(split()))
                }
                "access-control-allow-methods" => {
                    self.set("cors", "allowed_methods", Value::Array(split()))
                }
                "access-control-allow-headers" => {
                    self.set("cors", "allowed_headers", Value::Array(split()))
                }
                "access-control-expose-headers" => {
                    self.set("cors", "exposed_headers", Value::Array(split()))
                }
                "access-control-allow-credentials" => self.set(
                    "cors",
                    "allow_credentials",
                    Value::Boolean(vals.iter().any(|v| v.eq_ignore_ascii_case("true"))),
                ),
                "access-control-max-age" => {
                    let secs = vals.first().and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| {
                        format!("http.headers.Access-Control-Max-Age: {vals:?} is not a number of seconds")
                    })?;
                    self.set("cors", "max_age_secs", Value::Integer(secs));
                }
                _ => fixed.push(Value::String(format!("{name}: {}", vals.join(", ")))),
            }
        }
        if !fixed.is_empty() {
            self.set("server", "headers", Value::Array(fixed));
        }
        Ok(())
    }

    pub(super) fn auth(&mut self, doc: &Yaml) -> Result<(), String> {
        let Some(a) = doc.get("auth") else {
            return Ok(());
        };
        if let Some(h) = a.get("htpasswd") {
            let path = h
                .get("path")
                .and_then(Yaml::as_str)
                .ok_or("auth.htpasswd.path is missing")?;
            self.set("auth", "htpasswd", Value::String(path.into()));
            if let Some(realm) = h.get("realm").and_then(Yaml::as_str) {
                self.set("auth", "realm", Value::String(realm.into()));
            }
            // Distribution asks every client to log in once htpasswd is set.
            self.set("auth", "anonymous", Value::String("none".into()));
            let tls = self
                .out
                .get("tls")
                .and_then(|t| t.get("enabled"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !tls {
                self.set("auth", "allow_plain_http", Value::Boolean(true));
                self.warn("auth.htpasswd without http.tls: passwords cross the network in clear text, as they did with Distribution (auth.allow_plain_http = true); set up TLS and remove that line".into());
            }
            self.warn("auth.htpasswd: every client must log in, as with Distribution (auth.anonymous = \"none\"); registryd's \"auto\" would let the node's own containers pull without a login on the link-local address".into());
        }
        if a.get("token").is_some() {
            self.warn("auth.token: an external token server is not supported; registryd issues its own tokens from auth.htpasswd accounts".into());
        }
        if a.get("silly").is_some() {
            self.warn("auth.silly: a test-only scheme, dropped".into());
        }
        Ok(())
    }

    pub(super) fn health(&mut self, doc: &Yaml) -> Result<(), String> {
        let Some(sd) = doc.get("health").and_then(|h| h.get("storagedriver")) else {
            return Ok(());
        };
        if sd.get("enabled").is_some_and(|e| !truthy(e)) {
            self.warn(
                "health.storagedriver.enabled = false: registryd always checks its storage".into(),
            );
            return Ok(());
        }
        if let Some(iv) = sd.get("interval") {
            let secs =
                duration_secs(iv).map_err(|e| format!("health.storagedriver.interval: {e}"))?;
            self.set(
                "storage",
                "check_interval_secs",
                Value::Integer(secs.max(1) as i64),
            );
        }
        if let Some(t) = sd.get("threshold").and_then(Yaml::as_u64) {
            self.set("storage", "check_failures", Value::Integer(t.max(1) as i64));
        }
        Ok(())
    }

    pub(super) fn proxy(&mut self, doc: &Yaml) -> Result<(), String> {
        let Some(p) = doc.get("proxy") else {
            return Ok(());
        };
        let Some(url) = p.get("remoteurl").and_then(Yaml::as_str) else {
            return Ok(());
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("proxy.remoteurl {url:?} is not a URL"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("proxy.remoteurl {url:?} has no host"))?;
        let name = match host {
            "registry-1.docker.io" | "index.docker.io" => "docker.io".to_string(),
            h => h.to_ascii_lowercase(),
        };
        let mut up = Table::new();
        up.insert("name".into(), Value::String(name.clone()));
        up.insert(
            "url".into(),
            Value::String(url.trim_end_matches('/').into()),
        );
        if let Some(u) = p.get("username").and_then(Yaml::as_str) {
            up.insert("username".into(), Value::String(u.into()));
            let pw = p.get("password").map(scalar).unwrap_or_default();
            up.insert("password".into(), Value::String(pw));
            self.warn("proxy.password: copied into this file; consider password_file = \"/etc/registryd/upstream.password\" (mode 0600) instead".into());
        }
        self.out
            .insert("upstream".into(), Value::Array(vec![Value::Table(up)]));
        self.set("proxy", "default_upstream", Value::String(name));
        // Distribution's proxy mode mirrors every name.
        self.set(
            "proxy",
            "default_patterns",
            Value::Array(vec![Value::String("**".into())]),
        );
        if p.get("ttl").is_some() {
            self.warn("proxy.ttl: cached content is kept until the cache is over proxy.max_cache_bytes (least recently pulled first); cached tags are checked with the upstream every proxy.tag_ttl_secs".into());
        }
        self.warn("proxy: Distribution in proxy mode refused pushes; registryd also stores pushed images (under names the default upstream does not serve)".into());
        Ok(())
    }

    pub(super) fn log(&mut self, doc: &Yaml) {
        let Some(l) = doc.get("log") else { return };
        if let Some(level) = l.get("level").and_then(Yaml::as_str) {
            let level = match level {
                "warning" => "warn",
                "panic" | "fatal" => "error",
                other => other,
            };
            self.set("log", "level", Value::String(level.into()));
        }
        match l.get("formatter").and_then(Yaml::as_str) {
            Some("json") | Some("logstash") => {
                self.set("log", "format", Value::String("json".into()))
            }
            Some("text") => self.set("log", "format", Value::String("auto".into())),
            _ => {}
        }
        if l.get("fields").is_some() || l.get("hooks").is_some() {
            self.warn(
                "log.fields / log.hooks: no equivalent (the journal adds the unit and host)".into(),
            );
        }
        if l.get("accesslog")
            .and_then(|a| a.get("disabled"))
            .is_some_and(|d| !truthy(d))
        {
            self.warn(
                "log.accesslog: registryd logs failed requests; request counts are in the metrics"
                    .into(),
            );
        }
    }
}
