//! Listings: the repositories of the registry (catalog), the tags of a repository, and the referrers
//! of a manifest.

use std::sync::Arc;

use super::{Driver, Result, Storage};
use crate::registry::{Digest, RepoName};

impl Storage {
    /// One page of the catalog: up to `n` repositories after `last` in lexical order, and whether
    /// more follow. A directory is a repository when it holds `_layers` or `_manifests`, as
    /// Distribution's catalog walk decides.
    pub async fn list_repositories(
        &self,
        last: Option<String>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        match self.driver() {
            Driver::Fs(fs) => fs.list_repositories(last, n).await,
            Driver::S3(s3) => s3.list_repositories(last, n).await,
        }
    }

    /// The tags of `name`, sorted lexically; `NameUnknown` when the repository does not exist.
    pub async fn list_tags(&self, name: &RepoName) -> Result<Arc<[String]>> {
        match self.driver() {
            Driver::Fs(fs) => fs.list_tags(name).await,
            Driver::S3(s3) => s3.list_tags(name).await,
        }
    }

    /// The descriptors of the manifests in `name` whose subject is `subject`, sorted by digest.
    /// Entries whose manifest was deleted behind registryd's back are skipped.
    pub async fn list_referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>> {
        match self.driver() {
            Driver::Fs(fs) => fs.list_referrers(name, subject).await,
            Driver::S3(s3) => s3.list_referrers(name, subject).await,
        }
    }
}
