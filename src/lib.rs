//! registryd: a per-node container registry daemon (OCI Distribution v1.1) on Distribution's
//! storage layout, built for small clusters sharing a replicated mount.
//!
//! Module map (ARCHITECTURE.md): `registry` is the pure vocabulary (names, digests, manifests),
//! `storage` the on-disk layout and durability, `http` the API edge, `auth` who may do what, `daemon` the wiring.

pub mod archive;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod doctor;
// Parsers the fuzz targets (tests/fuzz/) reach that are private to their modules.
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod logtext;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod proxy;
pub mod registry;
pub mod retention;
pub mod shutdown;
pub mod status;
pub mod storage;
