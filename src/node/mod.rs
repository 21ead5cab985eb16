//! The node agent: what registryd sets up on its node and how it talks to systemd. `netif` owns the
//! link-local address, `tls` the certificate and its hot reload, `hosts` the `/etc/hosts` block,
//! `systemd` the sd_notify protocol, `mount` the storage mount guard, `gluster` the coherence of a
//! GlusterFS storage mount, `watch` the inotify watch on files operators replace live.

pub mod certgen;
pub mod gluster;
pub mod hosts;
pub mod mount;
pub mod netif;
pub mod systemd;
pub mod tls;
pub mod watch;
