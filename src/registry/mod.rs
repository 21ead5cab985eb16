//! The registry's vocabulary, parsed once at the edge: repository names, tags, digests, references and
//! manifests. Everything here is pure (no I/O), so it is where unit tests and fuzzing aim; once a value
//! of these types exists it passed the OCI Distribution grammar and the rest of the code trusts it.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest};
pub use name::RepoName;
pub use reference::{Reference, Tag};
