//! The listeners, tried as a client on this node would: each address connected to, over TLS
//! with the CA files such a client trusts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Report;
use crate::config::Config;

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

pub(super) async fn check(
    r: &mut Report,
    config: &Config,
    ip: Option<IpAddr>,
    extra_ca: Option<&Path>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Finding, Verdict, render};

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
