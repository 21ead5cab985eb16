//! The node's link-local registry address (default `169.254.254.254/32`), via netlink.
//!
//! If any interface already holds the address, registryd uses it (a `lo` alias, a veth, a dummy made
//! by the operator). Otherwise, when allowed, it creates a `dummy` link (default `registry0`), brings
//! it up and adds the address. An address that already exists is success; the kernel answers
//! `EEXIST` when two starts race.

use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkDummy, new_connection};

/// What `ensure` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The address was already on this interface.
    Existing { interface: String },
    /// registryd created the dummy link and added the address.
    Created { interface: String },
}

/// Why the address could not be set up; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error(
        "cannot configure {address} on {interface}: permission denied; registryd needs CAP_NET_ADMIN \
         (run as root, or set AmbientCapabilities=CAP_NET_ADMIN), or put the address on an interface \
         beforehand: ip link add {interface} type dummy && ip addr add {address} dev {interface} && ip link set {interface} up"
    )]
    PermissionDenied { address: String, interface: String },
    #[error(
        "cannot create dummy interface {interface}: this kernel has no dummy link support ({source}); \
         run `modprobe dummy`, or put the address on an existing interface beforehand \
         (e.g. ip addr add {address} dev lo), or set node.create_interface = false"
    )]
    NoDummySupport {
        address: String,
        interface: String,
        source: io::Error,
    },
    #[error(
        "no interface holds {address} and node.create_interface = false: add it beforehand \
         (e.g. ip addr add {address} dev lo)"
    )]
    NotPresent { address: String },
    #[error("netlink error while setting up {address} on {interface}: {source}")]
    Netlink {
        address: String,
        interface: String,
        source: io::Error,
    },
}

fn io_of(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

async fn interface_name(handle: &Handle, index: u32) -> Option<String> {
    let mut links = handle.link().get().match_index(index).execute();
    let link = links.try_next().await.ok()??;
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The interface holding `ip`, if any.
async fn holder(handle: &Handle, ip: IpAddr) -> Result<Option<String>, io::Error> {
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.map_err(io_of)? {
        let has = msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip),
        );
        if has {
            return Ok(Some(
                interface_name(handle, msg.header.index)
                    .await
                    .unwrap_or_else(|| format!("ifindex {}", msg.header.index)),
            ));
        }
    }
    Ok(None)
}

/// The interface that holds `ip` on this node, if any (read-only; for `registryd doctor`).
pub async fn find(ip: IpAddr) -> io::Result<Option<String>> {
    let (conn, handle, _) = new_connection()?;
    let conn_task = tokio::spawn(conn);
    let found = holder(&handle, ip).await;
    conn_task.abort();
    found
}

/// Makes sure `ip/prefix` is on this node, creating `interface` (a dummy link) if allowed.
pub async fn ensure(
    ip: IpAddr,
    prefix: u8,
    interface: &str,
    create: bool,
) -> Result<Outcome, NetifError> {
    let address = format!("{ip}/{prefix}");
    let netlink = |source: io::Error| {
        if source.raw_os_error() == Some(libc::EPERM) || source.raw_os_error() == Some(libc::EACCES)
        {
            NetifError::PermissionDenied {
                address: address.clone(),
                interface: interface.to_string(),
            }
        } else {
            NetifError::Netlink {
                address: address.clone(),
                interface: interface.to_string(),
                source,
            }
        }
    };
    let (conn, handle, _) = new_connection().map_err(netlink)?;
    let conn_task = tokio::spawn(conn);
    let result = async {
        if let Some(existing) = holder(&handle, ip).await.map_err(netlink)? {
            return Ok(Outcome::Existing {
                interface: existing,
            });
        }
        if !create {
            return Err(NetifError::NotPresent {
                address: address.clone(),
            });
        }
        let mut links = handle
            .link()
            .get()
            .match_name(interface.to_string())
            .execute();
        let index = match links.try_next().await {
            Ok(Some(link)) => link.header.index,
            _ => {
                let add = handle
                    .link()
                    .add(LinkDummy::new(interface).up().build())
                    .execute()
                    .await;
                match add.map_err(io_of) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => {
                        return Err(NetifError::NoDummySupport {
                            address: address.clone(),
                            interface: interface.to_string(),
                            source: e,
                        });
                    }
                    Err(e) => return Err(netlink(e)),
                }
                let mut links = handle
                    .link()
                    .get()
                    .match_name(interface.to_string())
                    .execute();
                match links.try_next().await.map_err(|e| netlink(io_of(e)))? {
                    Some(l) => l.header.index,
                    None => return Err(netlink(io::Error::other("link vanished after creation"))),
                }
            }
        };
        handle
            .link()
            .change(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink(io_of(e)))?;
        match handle
            .address()
            .add(index, ip, prefix)
            .execute()
            .await
            .map_err(io_of)
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(netlink(e)),
        }
        Ok(Outcome::Created {
            interface: interface.to_string(),
        })
    }
    .await;
    conn_task.abort();
    result
}

/// Removes the dummy link registryd created (when configured to on stop).
pub async fn remove(interface: &str) -> Result<(), io::Error> {
    let (conn, handle, _) = new_connection()?;
    let conn_task = tokio::spawn(conn);
    let result = async {
        let mut links = handle
            .link()
            .get()
            .match_name(interface.to_string())
            .execute();
        if let Some(link) = links.try_next().await.map_err(io_of)? {
            handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(io_of)?;
        }
        Ok(())
    }
    .await;
    conn_task.abort();
    result
}
