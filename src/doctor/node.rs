//! The node's own set-up as clients meet it: the link-local address, the hosts entries, the
//! certificate (its names, chain and expiry) and the clock it is judged by.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use super::Report;
use crate::config::Config;
use crate::node::tls::CertInfo;

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

pub(super) async fn address(r: &mut Report, config: &Config, ip: Option<IpAddr>) {
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

pub(super) fn hosts(r: &mut Report, config: &Config, ip: Option<IpAddr>) {
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

pub(super) fn certificate(r: &mut Report, config: &Config, ip: Option<IpAddr>) -> Option<CertInfo> {
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

pub(super) fn clock(r: &mut Report, cert: Option<&CertInfo>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

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
}
