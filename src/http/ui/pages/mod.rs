//! One file per page of the web UI, each turning a visitor's request into reads through the
//! storage, the pull-through cache and the status board, and those into a template; `inspect`
//! reads manifests and image configs for them.

pub mod delete;
pub mod inspect;
pub mod login;
pub mod manifest;
pub mod repositories;
pub mod repository;
pub mod status;
pub mod uploads;
