//! The node's own set-up: the link-local address on a dummy link and the hosts entries pointing at
//! it, made only when a listener serves `node.address` (and never under `serve --dev`), kept in
//! step on reload, and the link removed on stop when registryd created it.

use std::net::IpAddr;

use anyhow::{Context, bail};

use super::NodeSetup;
use crate::config::{Config, parse_cidr};
use crate::node::{hosts, netif};

/// The node's registry address and prefix (`node.address`).
pub fn node_ip(config: &Config) -> anyhow::Result<(IpAddr, u8)> {
    parse_cidr(&config.node.address).with_context(|| {
        format!(
            "node.address {:?} is not ADDRESS/PREFIX",
            config.node.address
        )
    })
}

/// The hosts-file entries for the configured hostnames.
pub fn hosts_entries(config: &Config, ip: IpAddr) -> Vec<(IpAddr, String)> {
    config
        .node
        .hostnames
        .iter()
        .map(|h| (ip, h.clone()))
        .collect()
}

/// Whether a listener serves `node.address` (the address itself, not a wildcard). Only then is
/// the node's set-up registryd's business: the link-local address and the hosts entries pointing
/// at it. A serve on other addresses (`serve --dev`, a loopback test) changes no system file.
pub fn serves_node_address(config: &Config, ip: IpAddr) -> bool {
    config.listen_addrs().iter().any(|a| a.ip() == ip)
}

/// Writes the hosts entries for `ip`; a failure is logged, not fatal (clients may resolve the
/// registry name another way).
pub(super) fn apply_hosts(config: &Config, ip: IpAddr) {
    let path = &config.node.hosts_file;
    match hosts::apply(path, &hosts_entries(config, ip)) {
        Ok(hosts::Written::Unchanged) => {}
        Ok(hosts::Written::Replaced) => {
            tracing::info!(hosts_file = %path.display(), hostnames = ?config.node.hostnames, "hosts entries updated")
        }
        Ok(hosts::Written::InPlace) => tracing::info!(
            hosts_file = %path.display(),
            "hosts file is a bind mount (rename refused with EBUSY): rewrote it in place"
        ),
        Err(e) => {
            tracing::warn!(hosts_file = %path.display(), error = %e, "cannot update the hosts file; clients must resolve the registry name another way");
            return;
        }
    }
    warn_damaged_hosts(path);
}

/// Says in the log what in the hosts file looks like registryd's block but is not one (a `BEGIN`
/// without its `END`, a commented-out marker): registryd leaves those lines alone, and only the
/// operator can tell what they were meant to be.
fn warn_damaged_hosts(path: &std::path::Path) {
    let Ok(found) = hosts::inspect(path) else {
        return;
    };
    if !found.is_empty() {
        let damage: Vec<String> = found.iter().map(|d| d.to_string()).collect();
        tracing::warn!(
            hosts_file = %path.display(),
            damage = %damage.join("; "),
            "the hosts file holds a damaged registryd block: those lines are left as they are and registryd keeps its entries in a well-formed block of its own; fix or delete them by hand"
        );
    }
}

/// The node set-up, when a listener serves `node.address`: the link-local address and the hosts
/// entries. Otherwise nothing: a developer's machine is not changed by a serve on loopback.
/// `registryd setup` runs this alone with full privileges (systemd `ExecStartPre=+`), so the
/// long-running process only finds the address present. Returns whether it created the link.
pub async fn node_setup(config: &Config) -> anyhow::Result<bool> {
    let (ip, prefix) = node_ip(config)?;
    if !serves_node_address(config, ip) {
        tracing::info!(
            address = %ip,
            "no listener serves node.address: the hosts file and the link-local address are left alone"
        );
        return Ok(false);
    }
    let created = match netif::ensure(
        ip,
        prefix,
        &config.node.interface,
        config.node.create_interface,
    )
    .await
    {
        Ok(netif::Outcome::Existing { interface }) => {
            tracing::info!(address = %config.node.address, interface = %interface, "link-local address already present, using it");
            false
        }
        Ok(netif::Outcome::Created { interface }) => {
            tracing::info!(address = %config.node.address, interface = %interface, "created dummy interface with the link-local address");
            true
        }
        Err(e) => bail!("{e}"),
    };
    apply_hosts(config, ip);
    Ok(created)
}

/// Start-up phase: the link-local address and the hosts entries, as `node` allows. Returns whether
/// the link was created here (and so may be removed on stop).
pub(super) async fn prepare(config: &Config, node: NodeSetup) -> anyhow::Result<bool> {
    match node {
        NodeSetup::Managed => node_setup(config).await,
        NodeSetup::Off => {
            tracing::info!(
                "development mode: the hosts file and the link-local address are left alone"
            );
            Ok(false)
        }
    }
}

/// Stop phase: removes the dummy link, when this daemon created it and the configuration in force
/// asks for it.
pub(super) async fn remove_link(created_link: bool, config: &Config) {
    if !(created_link && config.node.remove_interface_on_stop) {
        return;
    }
    match netif::remove(&config.node.interface).await {
        Ok(()) => {
            tracing::info!(interface = %config.node.interface, "removed the dummy interface")
        }
        Err(e) => {
            tracing::warn!(interface = %config.node.interface, error = %e, "cannot remove the dummy interface")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A serve whose listeners all miss node.address (here `serve --dev`'s) sets up nothing: the
    /// hosts file keeps every byte, and no netlink call is made (this runs unprivileged).
    #[tokio::test]
    async fn node_setup_leaves_the_node_alone_when_no_listener_serves_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1\tlocalhost").unwrap();
        let mut config = Config::defaults();
        config.server.listen = vec!["127.0.0.1:5000".into()];
        config.node.hosts_file = hosts.clone();
        assert!(!node_setup(&config).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            "127.0.0.1\tlocalhost"
        );
        // A wildcard listener serves node.address only by accident: still nothing.
        config.server.listen = vec!["0.0.0.0:8443".into()];
        assert!(!node_setup(&config).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            "127.0.0.1\tlocalhost"
        );
    }
}
