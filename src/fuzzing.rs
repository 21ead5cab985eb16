//! What the cargo-fuzz targets (`tests/fuzz/`) call and the public API does not already offer:
//! thin wrappers over the parsers that are private to their modules, so each target runs the
//! daemon's own code rather than a copy of it. Hidden from the docs; nothing in the daemon uses it.

use std::path::Path;

use crate::archive::{import, scan::Source};
use crate::registry::RepoName;
use crate::storage::s3::client;

/// `auth`'s split of an `Authorization: Basic base64(user:password)` header.
pub fn parse_basic(header: &str) -> Result<(String, String), String> {
    crate::auth::parse_basic(header).map_err(|e| format!("{e:?}"))
}

/// The objects, prefixes and continuation token of one `ListObjectsV2` page, as the S3 driver
/// reads them: (key, size, modified) per object.
pub type ListPage = (
    Vec<(String, u64, std::time::SystemTime)>,
    Vec<String>,
    Option<String>,
);

/// One `ListObjectsV2` answer read as the S3 driver's listing does.
pub fn s3_list_page(xml: &str) -> Result<ListPage, String> {
    let mut out = client::Listing::default();
    let next = client::list_page(xml, &mut out)?;
    let objects = out
        .objects
        .into_iter()
        .map(|o| (o.key, o.size, o.modified))
        .collect();
    Ok((objects, out.prefixes, next))
}

/// The upload id of a `CreateMultipartUpload` answer.
pub fn s3_upload_id(xml: &str) -> Result<String, String> {
    client::upload_id(xml)
}

/// The first `<name>` element's text, as an `UploadPartCopy` answer's ETag is read.
pub fn s3_xml_field(body: &str, name: &str) -> Option<String> {
    client::xml_field(body, name)
}

/// The one-line cause the S3 driver logs for an error answer.
pub fn s3_error_code(body: &str) -> String {
    client::error_code(body)
}

/// A listing's `LastModified`.
pub fn s3_time(s: &str) -> Option<std::time::SystemTime> {
    client::parse_rfc3339(s)
}

/// What `registryd import` would store from the archive at `path` (a tar, tar.gz or directory):
/// the number of manifests, of blobs, and the layout's name. Reads the archive as an import does
/// and stops before storage.
pub fn archive_plan(
    path: &Path,
    repo_override: Option<&RepoName>,
) -> anyhow::Result<(usize, usize, &'static str)> {
    let source = Source::open(path)?;
    let scan = source.scan(&mut |_| {})?;
    let (plan, layout) = import::plan(&source, scan, path, repo_override)?;
    Ok((plan.manifests.len(), plan.blobs.len(), layout))
}
