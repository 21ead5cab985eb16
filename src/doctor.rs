//! `registryd doctor`: checks this node the way an operator would by hand, and prints one verdict
//! per line with how to fix what fails. Exit code 1 when anything fails (warnings do not), so it
//! fits a monitoring check or a deployment step.
//!
//! It reads and probes only: it changes nothing on the node except a probe file in the storage
//! root (written, fsynced and removed, as the daemon's own health check does).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::node::tls::CertInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &'static str, verdict: Verdict, message: String, fix: Option<String>) {
        self.0.push(Finding {
            check,
            verdict,
            message,
            fix,
        });
    }
    fn ok(&mut self, check: &'static str, message: String) {
        self.add(check, Verdict::Ok, message, None);
    }
    fn warn(&mut self, check: &'static str, message: String, fix: String) {
        self.add(check, Verdict::Warn, message, Some(fix));
    }
    fn fail(&mut self, check: &'static str, message: String, fix: String) {
        self.add(check, Verdict::Fail, message, Some(fix));
    }
    fn skip(&mut self, check: &'static str, message: String) {
        self.add(check, Verdict::Skip, message, None);
    }
}

/// Runs every check; `extra_ca` is trusted besides the system store and the usual CA files when
/// the listeners are tried.
pub async fn run(config: &Config, extra_ca: Option<&Path>) -> Vec<Finding> {
    let mut r = Report::default();
    let ip = crate::config::parse_cidr(&config.node.address).map(|(ip, _)| ip);
    address(&mut r, config, ip).await;
    hosts(&mut r, config, ip);
    let cert = certificate(&mut r, config, ip);
    clock(&mut r, cert.as_ref());
    if config.storage.driver == crate::config::StorageDriver::S3 {
        bucket(&mut r, config).await;
    } else {
        storage(&mut r, config);
    }
    listeners(&mut r, config, ip, extra_ca).await;
    systemd(&mut r);
    r.0
}

/// Skips a node check when no listener serves `node.address`: registryd then sets up nothing on
/// the node (a loopback or development serve), so there is nothing to find.
fn node_unused(r: &mut Report, check: &'static str, config: &Config, ip: Option<IpAddr>) -> bool {
    let unused = ip.is_some_and(|ip| !crate::daemon::serves_node_address(config, ip));
    if unused {
        r.skip(
            check,
            format!(
                "no listener serves node.address ({}): registryd leaves the node alone",
                config.node.address
            ),
        );
    }
    unused
}

async fn address(r: &mut Report, config: &Config, ip: Option<IpAddr>) {
    if node_unused(r, "address", config, ip) {
        return;
    }
    let Some(ip) = ip else {
        r.fail(
            "address",
            format!(
                "node.address {:?} is not ADDRESS/PREFIX",
                config.node.address
            ),
            "set node.address = \"169.254.254.254/32\" in /etc/registryd/config.toml".into(),
        );
        return;
    };
    match crate::node::netif::find(ip).await {
        Ok(Some(link)) => r.ok("address", format!("{ip} is on {link}")),
        Ok(None) => r.fail(
            "address",
            format!("{ip} is on no interface of this node"),
            format!(
                "run `registryd setup` (systemctl restart registryd does it), or by hand: ip link add {0} type dummy && ip addr add {ip}/32 dev {0} && ip link set {0} up (kernels without dummy: ip addr add {ip}/32 dev lo)",
                config.node.interface
            ),
        ),
        Err(e) => r.fail(
            "address",
            format!("cannot read the node's addresses: {e}"),
            "run registryd doctor as root".into(),
        ),
    }
}

fn hosts(r: &mut Report, config: &Config, ip: Option<IpAddr>) {
    if node_unused(r, "hosts", config, ip) {
        return;
    }
    let path = &config.node.hosts_file;
    if config.node.hostnames.is_empty() {
        r.skip("hosts", "node.hostnames is empty".into());
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                "hosts",
                format!("cannot read {}: {e}", path.display()),
                "check node.hosts_file".into(),
            );
            return;
        }
    };
    let mut missing = Vec::new();
    for h in &config.node.hostnames {
        let found = text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            let mut f = l.split_whitespace();
            let addr = f.next().and_then(|a| a.parse::<IpAddr>().ok());
            addr.is_some() && addr == ip && f.any(|n| n == h)
        });
        if !found {
            missing.push(h.as_str());
        }
    }
    let addr = ip.map(|i| i.to_string()).unwrap_or_default();
    if missing.is_empty() {
        r.ok(
            "hosts",
            format!(
                "{} maps {} to {addr}",
                path.display(),
                config.node.hostnames.join(", ")
            ),
        );
    } else {
        r.fail(
            "hosts",
            format!(
                "{} does not map {} to {addr}",
                path.display(),
                missing.join(", ")
            ),
            "run `registryd hosts` (the daemon also writes them at start)".into(),
        );
    }
}

fn certificate(r: &mut Report, config: &Config, ip: Option<IpAddr>) -> Option<CertInfo> {
    if !config.tls.enabled {
        r.warn(
            "certificate",
            "TLS is off: clients must list this registry as insecure".into(),
            "run `registryd cert init` and set tls.enabled = true".into(),
        );
        return None;
    }
    let loaded = match crate::node::tls::load_pair(&config.tls.certificate, &config.tls.key) {
        Ok(l) => l,
        Err(e) => {
            r.fail(
                "certificate",
                format!("{e}"),
                format!(
                    "put a certificate chain and its key at {} and {}, or run `registryd cert init --hosts {}`",
                    config.tls.certificate.display(),
                    config.tls.key.display(),
                    config.node.hostnames.join(",")
                ),
            );
            return None;
        }
    };
    let info = loaded.info;
    let mut wanted: Vec<String> = config.node.hostnames.clone();
    if let Some(ip) = ip {
        wanted.push(ip.to_string());
    }
    let uncovered: Vec<&String> = wanted.iter().filter(|h| !info.covers(h)).collect();
    let days = info.days_left();
    let chain = pem_count(&config.tls.certificate);
    let what = format!(
        "{} ({} certificate{} in the chain) for {}, expires {} ({days} days)",
        config.tls.certificate.display(),
        chain,
        if chain == 1 { "" } else { "s" },
        info.names.join(", "),
        info.expiry_date()
    );
    if days < 0 {
        r.fail(
            "certificate",
            format!("{what}: expired"),
            "renew it (registryd cert init --days 825 makes a new one from the cluster CA); the daemon reloads it".into(),
        );
    } else if !uncovered.is_empty() {
        r.fail(
            "certificate",
            format!(
                "{what}: does not cover {}",
                uncovered
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "issue one that covers them: registryd cert init --hosts {}",
                config.node.hostnames.join(",")
            ),
        );
    } else if days < config.tls.expiry_warning_days as i64 {
        r.warn(
            "certificate",
            format!("{what}: expires within tls.expiry_warning_days"),
            "renew it soon; the daemon reloads the files when they change".into(),
        );
    } else {
        r.ok("certificate", format!("{what}; key matches"));
    }
    Some(info)
}

fn pem_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches("-----BEGIN CERTIFICATE-----").count())
        .unwrap_or(0)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn clock(r: &mut Report, cert: Option<&CertInfo>) {
    let Some(info) = cert else {
        r.skip("clock", "no certificate to compare with".into());
        return;
    };
    let now = now_secs();
    if now < info.not_before {
        r.fail(
            "clock",
            format!(
                "this node's clock is {} s before the certificate's start: clients with a correct clock are fine, but this node's own clients refuse it",
                info.not_before - now
            ),
            "synchronise the clock: timedatectl set-ntp true (and check systemd-timesyncd or chrony)".into(),
        );
    } else {
        r.ok(
            "clock",
            format!(
                "the certificate started {} h ago by this node's clock",
                (now - info.not_before) / 3600
            ),
        );
    }
}

/// The S3 bucket: reachable with the configured credentials, a write read back, the store's
/// clock against this node's.
async fn bucket(r: &mut Report, config: &Config) {
    let where_ = config.storage_description();
    let timeout = std::time::Duration::from_secs(config.storage.operation_timeout_secs);
    let opened = config
        .storage_settings()
        .and_then(|s| crate::storage::Storage::from_settings(&s, 4));
    let storage = match opened {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "storage",
                e,
                "set the [s3] section (endpoint, bucket, credentials) or AWS_* variables".into(),
            );
            return;
        }
    };
    if let Err(e) = storage.check().await {
        r.fail(
            "storage",
            format!("{where_}: {e}"),
            "check the endpoint, the bucket name and that the key may read and write it".into(),
        );
        return;
    }
    r.ok("storage", format!("{where_}: a write read back"));
    if let Ok(stamped) = tokio::time::timeout(timeout, storage.clock())
        .await
        .unwrap_or_else(|_| {
            Err(crate::storage::StorageError::Unavailable(
                "timed out".into(),
            ))
        })
    {
        let skew = match stamped.duration_since(std::time::SystemTime::now()) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        };
        if skew.abs() > 60 {
            r.warn(
                "clock",
                format!("the object store's clock is {skew} s from this node's"),
                "sync both with NTP (SigV4 requests fail beyond 15 minutes of skew)".into(),
            );
        }
    }
}

fn storage(r: &mut Report, config: &Config) {
    let root = &config.storage.root;
    if !config.storage.require_mount.is_empty() {
        let guard = crate::node::mount::MountGuard::new(
            &config.storage.require_mount,
            Some(config.storage.require_fstype.clone()),
        );
        if let Err(e) = guard.check() {
            r.fail(
                "storage",
                e,
                format!(
                    "mount it (mount {} or check /etc/fstab and systemctl status {}.mount)",
                    config.storage.require_mount,
                    config
                        .storage
                        .require_mount
                        .trim_start_matches('/')
                        .replace('/', "-")
                ),
            );
            return;
        }
    }
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            r.fail(
                "storage",
                format!("{} is not a directory", root.display()),
                "set storage.root to a directory".into(),
            );
            return;
        }
        Err(e) => {
            r.fail(
                "storage",
                format!("{}: {e}", root.display()),
                format!(
                    "create it: mkdir -p {} (the package makes /var/lib/registryd)",
                    root.display()
                ),
            );
            return;
        }
    }
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|mi| crate::node::gluster::mount_of(&mi, root));
    let on = mount
        .as_ref()
        .map(|(mp, fs)| format!("on {} ({fs})", mp.display()))
        .unwrap_or_else(|| "on an unknown mount".into());
    // Writable and durable: the daemon's own probe, by hand.
    let probe = root.join(format!(".registryd-doctor-{}", std::process::id()));
    let written = (|| -> std::io::Result<SystemTime> {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"registryd doctor\n")?;
        f.sync_all()?;
        let m = std::fs::metadata(&probe)?.modified()?;
        std::fs::remove_file(&probe)?;
        Ok(m)
    })();
    let mtime = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&probe);
            r.fail(
                "storage",
                format!("{} {on}: cannot write: {e}", root.display()),
                "check the mount (read-only? full? the registryd user's permissions: chown -R registryd: on the root)".into(),
            );
            return;
        }
    };
    let free = crate::daemon::free_bytes(root).unwrap_or(0);
    let gib = free as f64 / (1u64 << 30) as f64;
    if config.storage.min_free_bytes > 0 && free < config.storage.min_free_bytes {
        r.fail(
            "storage",
            format!(
                "{} {on}: {gib:.1} GiB free, under storage.min_free_bytes: pushes are refused",
                root.display()
            ),
            "free space: registryd gc (and docker image prune on the nodes)".into(),
        );
    } else {
        r.ok(
            "storage",
            format!("{} {on}: writable, {gib:.1} GiB free", root.display()),
        );
    }
    // A clock far from the storage servers' breaks GC grace and upload expiry.
    let skew = match mtime.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    if skew.abs() > 5.0 {
        r.warn(
            "clock",
            format!("files written on the storage get times {skew:+.0} s from this node's clock"),
            "synchronise every node and storage server with NTP (timedatectl set-ntp true)".into(),
        );
    }
    match crate::node::gluster::check(root) {
        None => {}
        Some(Err(e)) => r.warn(
            "glusterfs",
            format!("cannot read the volume's options: {e}"),
            "mount with the glusterfs FUSE client (not NFS) so registryd can check coherence"
                .into(),
        ),
        Some(Ok(problems)) if problems.is_empty() => r.ok(
            "glusterfs",
            "coherence options are as registryd needs them".into(),
        ),
        Some(Ok(problems)) => {
            for p in problems {
                r.warn("glusterfs", p.what, p.fix);
            }
        }
    }
}

/// Where a client on this node reaches a listener: wildcard addresses through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// CA files a client of this node would trust for `host:port`, besides the system store.
fn trusted_cas(hostport: &str) -> Vec<PathBuf> {
    [
        PathBuf::from(format!("/etc/docker/certs.d/{hostport}/ca.crt")),
        PathBuf::from("/etc/registryd/ca/ca.crt"),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .collect()
}

async fn listeners(r: &mut Report, config: &Config, ip: Option<IpAddr>, extra_ca: Option<&Path>) {
    let addrs = config.listen_addrs();
    if addrs.is_empty() {
        r.fail(
            "listener",
            "server.listen has no address".into(),
            "set server.listen = [\"169.254.254.254:8443\"]".into(),
        );
        return;
    }
    for addr in addrs {
        let target = reachable(addr);
        // Only this node is probed: an address it does not hold would lead elsewhere.
        if !target.ip().is_loopback() {
            match crate::node::netif::find(target.ip()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    r.fail(
                        "listener",
                        format!("{addr}: {} is not an address of this node, so nothing here listens on it", target.ip()),
                        "see the address check above, or remove it from server.listen".into(),
                    );
                    continue;
                }
                Err(e) => {
                    r.fail(
                        "listener",
                        format!("{addr}: cannot read the node's addresses: {e}"),
                        "run registryd doctor as root".into(),
                    );
                    continue;
                }
            }
        }
        // The name clients use where it leads to this address, else the address itself.
        let host = if Some(addr.ip()) == ip || addr.ip().is_unspecified() {
            config.node.hostnames.first().cloned()
        } else {
            None
        };
        let (name, url) = match (&host, config.tls.enabled) {
            (Some(h), true) => (
                format!("{h}:{}", addr.port()),
                format!("https://{h}:{}/v2/", addr.port()),
            ),
            (_, true) => (target.to_string(), format!("https://{target}/v2/")),
            (_, false) => (target.to_string(), format!("http://{target}/v2/")),
        };
        let mut cas = trusted_cas(&name);
        cas.extend(extra_ca.map(Path::to_path_buf));
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(h) = &host {
            b = b.resolve(h, target);
        }
        for ca in &cas {
            if let Ok(pem) = std::fs::read(ca)
                && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
            {
                b = b.tls_certs_merge(certs);
            }
        }
        let client = match b.build() {
            Ok(c) => c,
            Err(e) => {
                r.fail(
                    "listener",
                    format!("{addr}: cannot set up a client: {e}"),
                    "report this".into(),
                );
                continue;
            }
        };
        let trust = if cas.is_empty() {
            "the system CA store".to_string()
        } else {
            format!(
                "the system store and {}",
                cas.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        match client.get(&url).send().await {
            Ok(resp)
                if resp.status().is_success()
                    || resp.status() == reqwest::StatusCode::UNAUTHORIZED =>
            {
                let login = if resp.status().is_success() {
                    ""
                } else {
                    ", login required"
                };
                r.ok(
                    "listener",
                    format!(
                        "{url} answers {}{login} ({:?}), trusted through {trust}",
                        resp.status().as_u16(),
                        resp.version()
                    ),
                );
            }
            Ok(resp) => r.fail(
                "listener",
                format!("{url} answers {}", resp.status()),
                "see journalctl -u registryd -n 50".into(),
            ),
            Err(e) => {
                let text = format!("{e:?}");
                let fix = if text.contains("Connect")
                    && (text.contains("refused") || text.contains("Refused"))
                {
                    "nothing listens there: is registryd running? systemctl status registryd"
                        .to_string()
                } else if text.contains("certificate")
                    || text.contains("Certificate")
                    || text.contains("UnknownIssuer")
                {
                    format!(
                        "clients here do not trust the certificate: install the CA (registryd cert init --install-trust, or copy it to /etc/docker/certs.d/{name}/ca.crt)"
                    )
                } else {
                    "see journalctl -u registryd -n 50".to_string()
                };
                r.fail("listener", format!("{url}: {}", error_chain(&e)), fix);
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn systemd(r: &mut Report) {
    if !Path::new("/run/systemd/system").is_dir() {
        r.skip("systemd", "this system does not run systemd".into());
        return;
    }
    let ask = |what: &str| {
        std::process::Command::new("systemctl")
            .args([what, "registryd.service"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let (active, enabled) = (ask("is-active"), ask("is-enabled"));
    if active == "active" && enabled == "enabled" {
        r.ok("systemd", "registryd.service is active and enabled".into());
    } else if active == "active" {
        r.warn(
            "systemd",
            format!("registryd.service is active but {enabled}: it will not start at boot"),
            "systemctl enable registryd".into(),
        );
    } else {
        r.fail(
            "systemd",
            format!("registryd.service is {active} ({enabled})"),
            "systemctl enable --now registryd; journalctl -u registryd -n 50 says why it stopped"
                .into(),
        );
    }
}

/// The report as text lines: `ok    check  message`, with `      fix: ...` under what fails.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let v = match f.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        out.push_str(&format!("{v:<5} {:<12} {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("{:<18} fix: {fix}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hosts_check_when_no_listener_serves_the_node_address() {
        let mut config = Config::defaults();
        config.server.listen = vec!["127.0.0.1:5000".into()];
        let ip = "169.254.254.254".parse().ok();
        let mut r = Report::default();
        hosts(&mut r, &config, ip);
        assert_eq!(r.0.len(), 1);
        assert_eq!(r.0[0].verdict, Verdict::Skip, "{:?}", r.0[0].message);
    }

    #[test]
    fn wildcards_go_through_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8443".parse().unwrap()),
            "127.0.0.1:8443".parse().unwrap()
        );
        assert_eq!(
            reachable("169.254.254.254:8443".parse().unwrap()),
            "169.254.254.254:8443".parse().unwrap()
        );
        let text = render(&[Finding {
            check: "hosts",
            verdict: Verdict::Fail,
            message: "missing".into(),
            fix: Some("run registryd hosts".into()),
        }]);
        assert!(text.starts_with("FAIL  hosts        missing\n"));
        assert!(text.contains("fix: run registryd hosts"));
    }
}
