//! OCI error responses: `{"errors":[{"code","message","detail"}]}` with the status the spec gives
//! each code. Every failure a handler meets becomes exactly one `ApiError`.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::route::RouteError;
use super::{Body, full};
use crate::registry::manifest::ManifestError;
use crate::storage::StorageError;

/// The error codes of the OCI Distribution Spec, plus Distribution's for what the spec leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    PaginationNumberInvalid,
    RangeInvalid,
    Unavailable,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// One error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (e.g. `Range` on a 416 upload chunk, `Content-Range` on a 416 blob read).
    pub headers: Vec<(header::HeaderName, String)>,
    /// What went wrong inside (storage paths, an upstream's address, the OS error): for the log
    /// only, never the response.
    pub private: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            private: None,
        }
    }

    /// Keeps `detail` for the log; the client sees only the message.
    pub fn private(mut self, detail: impl Into<String>) -> ApiError {
        self.private = Some(detail.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// 503: storage must not be used now, and why.
    ///
    /// The reason is the operator's (the mount guard, the storage check, the object store): the
    /// client gets it without the locations in it (paths, the store's URL), the log gets it whole.
    pub fn storage_unavailable(reason: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            format!("storage unavailable: {}", without_locations(reason)),
        )
        .private(reason)
    }

    pub fn unsupported(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, Code::Unsupported, message)
    }

    pub fn into_response(self, head_only: bool) -> Response<Body> {
        let mut err = json!({"code": self.code.as_str(), "message": self.message});
        if let (Some(d), Some(fields)) = (self.detail, err.as_object_mut()) {
            fields.insert("detail".to_string(), d);
        }
        let body = format!("{}\n", json!({"errors": [err]}));
        let len = body.len();
        let mut resp = Response::new(if head_only {
            super::empty()
        } else {
            full(body)
        });
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        match e {
            RouteError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, Code::Unsupported, "no such endpoint")
            }
            RouteError::NameInvalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, Code::NameInvalid, m)
            }
            RouteError::DigestInvalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, Code::DigestInvalid, m)
            }
            RouteError::UploadUnknown => ApiError::new(
                StatusCode::NOT_FOUND,
                Code::BlobUploadUnknown,
                "upload id is not known to this registry",
            ),
        }
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::ManifestInvalid,
            e.to_string(),
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        let msg = e.to_string();
        match e {
            StorageError::BlobUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, Code::BlobUnknown, msg)
            }
            StorageError::UploadUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, Code::BlobUploadUnknown, msg)
            }
            StorageError::ManifestUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, Code::ManifestUnknown, msg)
            }
            StorageError::NameUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, Code::NameUnknown, msg)
            }
            StorageError::RangeMismatch(offset) => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, Code::RangeInvalid, msg)
                    .header(header::RANGE, upload_range(offset))
            }
            // The spec's RANGE_INVALID: "the provided range is checked against the uploaded
            // chunk"; `Range` says where the upload still stands.
            StorageError::ChunkLength { offset, .. } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, Code::RangeInvalid, msg)
                    .header(header::RANGE, upload_range(offset))
            }
            StorageError::DigestMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, Code::DigestInvalid, msg)
            }
            StorageError::Body(ref e) => match e.kind() {
                std::io::ErrorKind::FileTooLarge => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Code::SizeInvalid, msg)
                }
                std::io::ErrorKind::TimedOut => {
                    ApiError::new(StatusCode::REQUEST_TIMEOUT, Code::BlobUploadInvalid, msg)
                }
                _ => ApiError::new(StatusCode::BAD_REQUEST, Code::BlobUploadInvalid, msg),
            },
            StorageError::Unavailable(ref reason) => ApiError::storage_unavailable(reason),
            StorageError::Io(ref io) => match io.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    Code::Unknown,
                    "storage is full, nothing was stored; free space and retry",
                ),
                Some(libc::ENOTCONN) | Some(libc::ESTALE) | Some(libc::EIO) | Some(libc::EROFS) => {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Code::Unavailable,
                        "storage is unavailable, retry later",
                    )
                }
                _ if io.kind() == std::io::ErrorKind::TimedOut => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "storage is unavailable, retry later",
                ),
                _ => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Unknown,
                    "storage error",
                ),
            }
            .private(msg),
        }
    }
}

impl From<crate::proxy::ProxyError> for ApiError {
    fn from(e: crate::proxy::ProxyError) -> ApiError {
        use crate::proxy::{ProxyError, UpstreamError};
        let msg = e.to_string();
        // The upstream's name is the operator's label; its address and the connection error stay
        // in the log.
        match e {
            ProxyError::Storage(e) => e.into(),
            ProxyError::Upstream(UpstreamError::NotFound(_)) => ApiError::new(
                StatusCode::NOT_FOUND,
                Code::ManifestUnknown,
                format!("not cached here, and {msg}"),
            ),
            ProxyError::Upstream(UpstreamError::Unreachable(name, _)) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                Code::Unavailable,
                format!("not cached here, and upstream {name} is unreachable"),
            )
            .private(msg),
            ProxyError::Upstream(UpstreamError::Unauthorized(name, _)) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                Code::Unauthorized,
                format!(
                    "not cached here, and upstream {name} refused the credentials registryd has for it"
                ),
            )
            .private(msg),
            // registryd's own account of what the upstream did (a status, a digest mismatch, a
            // limit it passed), without its address.
            ProxyError::Upstream(UpstreamError::Failed(..)) | ProxyError::BadManifest { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, Code::Unavailable, msg)
            }
        }
    }
}

/// `text` with every URL written as `<url>` and every absolute path as `<path>`: what a client may
/// see of a reason meant for the operator.
pub fn without_locations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(char::is_whitespace) {
        let body = word.trim_end_matches(char::is_whitespace);
        let space = &word[body.len()..];
        let core = body.trim_start_matches(['(', '"', '\'', '[', '{']);
        let lead = &body[..body.len() - core.len()];
        let inner = core.trim_end_matches([')', '"', '\'', ']', '}', ',', ':', ';', '.']);
        let trail = &core[inner.len()..];
        let replaced = if inner.contains("://") {
            Some("<url>")
        } else if inner.starts_with('/') && inner.len() > 1 {
            Some("<path>")
        } else {
            None
        };
        match replaced {
            Some(r) => {
                out.push_str(lead);
                out.push_str(r);
                out.push_str(trail);
            }
            None => out.push_str(body),
        }
        out.push_str(space);
    }
    out
}

/// The `Range` header value for an upload holding `offset` bytes: `0-<offset-1>`, and `0-0` when
/// empty (as Distribution answers, and Docker expects).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

#[cfg(test)]
mod location_tests {
    use super::without_locations;

    #[test]
    fn locations_are_left_out() {
        assert_eq!(
            without_locations(
                "/mnt/shared is not mounted (storage.require_mount); nothing is written until it is"
            ),
            "<path> is not mounted (storage.require_mount); nothing is written until it is"
        );
        assert_eq!(
            without_locations(
                "object storage https://s3.internal:3900/ (bucket reg): PUT: refused"
            ),
            "object storage <url> (bucket reg): PUT: refused"
        );
        assert_eq!(
            without_locations("cannot stat \"/srv/x y\": denied, retry"),
            "cannot stat \"<path> y\": denied, retry"
        );
        assert_eq!(without_locations("a / b and 1/2"), "a / b and 1/2");
        assert_eq!(without_locations(""), "");
        assert_eq!(without_locations("über /ä/ö."), "über <path>.");
    }
}
