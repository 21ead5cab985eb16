//! `GET /v2/<name>/referrers/<digest>` (end-12a/12b): an image index of the manifests whose
//! `subject` is `<digest>`; an empty index (never 404) when there are none, optionally filtered by
//! `artifactType` (then `OCI-Filters-Applied: artifactType`).

use http::{Method, StatusCode, header};
use serde_json::json;

use super::{App, HandlerResult, Req, method_not_allowed};
use crate::registry::manifest::OCI_INDEX;
use crate::registry::{Digest, RepoName};

pub async fn get(app: &App, name: &RepoName, digest: &Digest, req: &Req) -> HandlerResult {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(method_not_allowed(&req.method));
    }
    let mut manifests = app
        .proxy
        .repository(name, req.query.get("ns").map(String::as_str))
        .referrers(digest)
        .await?;
    let filter = req.query.get("artifactType").filter(|f| !f.is_empty());
    if let Some(f) = filter {
        manifests.retain(|m| m.get("artifactType").and_then(|a| a.as_str()) == Some(f.as_str()));
    }
    let body =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string();
    let mut headers = vec![
        (header::CONTENT_TYPE, OCI_INDEX.to_string()),
        (header::CONTENT_LENGTH, body.len().to_string()),
    ];
    if filter.is_some() {
        headers.push((
            header::HeaderName::from_static("oci-filters-applied"),
            "artifactType".into(),
        ));
    }
    let b = if req.method == Method::HEAD {
        crate::http::empty()
    } else {
        crate::http::full(body)
    };
    Ok(super::response(StatusCode::OK, &headers, b))
}
