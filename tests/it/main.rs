//! The integration tests, built as one binary: each file here was a test crate of its own, and
//! each of those linked the whole library again (a minute of every CI run). Run one group with
//! `cargo test --profile quick --test it conformance::`.

// Test code: its helpers fail a test by panicking too (clippy.toml exempts only #[test] items).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cluster_status;
mod common;
mod conformance;
mod error_bodies;
mod hostile_input;
mod hosts_concurrent;
mod lifecycle;
mod retention;
mod s3_client;
mod shape;
mod summary;
mod ui;
mod upload_abuse;
