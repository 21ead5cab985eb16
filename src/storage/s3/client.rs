//! A small S3 client: the object operations the S3 driver needs, signed with SigV4 by `rusty-s3`
//! (query-string signatures) and sent with reqwest. Requests that are safe to repeat are retried
//! with backoff on throttling, 5xx answers and transport errors; what still fails becomes
//! [`StorageError::Unavailable`] with the endpoint's own words, which the HTTP edge answers as 503.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rusty_s3::actions::{
    CompleteMultipartUploadResponse, CreateMultipartUpload, ListObjectsV2, S3Action as _,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::super::{BlobStream, Result, StorageError};

/// How long a signature stays valid: requests are sent at once, so this only covers clock skew
/// and a slow send.
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);

/// Tries per request that may be repeated (the first one included).
const TRIES: u32 = 4;

/// The largest object AWS copies in one request.
const SINGLE_COPY_MAX: u64 = 5 << 30;
/// Part size of a multipart copy (10,000 parts of 1 GiB: objects up to ~9.7 TiB).
const COPY_PART: u64 = 1 << 30;

/// Where and how to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// PEM file of extra CA certificates to trust for the endpoint; `None`: the system store.
    pub ca: Option<std::path::PathBuf>,
    /// Bound on each request (connect, send and the answer's head).
    pub timeout: Duration,
    /// Answer blob GETs with a redirect to a presigned URL of the object instead of the bytes.
    pub redirect_blobs: bool,
}

/// Where a part of a [`S3Client::compose`]d object comes from.
#[derive(Debug, Clone)]
pub enum PartSource {
    /// The object `key`, or its bytes `first..=last`, copied inside the store. (Garage refuses
    /// to copy from the smallest objects, which it keeps inline: send those as bytes.)
    Copy {
        key: String,
        range: Option<(u64, u64)>,
    },
    /// Bytes sent with the request.
    Bytes(Bytes),
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// When it was written, by the store's clock (the epoch when the store did not say).
    pub modified: std::time::SystemTime,
}

/// A listing: objects directly under the prefix and, with a delimiter, the "directories".
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<Object>,
    pub prefixes: Vec<String>,
}

pub struct S3Client {
    /// After this long, a failing request is not tried again (each try is bounded by it too).
    retry_for: Duration,
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
    endpoint: String,
}

/// What one attempt came to: a final answer, or a failure worth another try.
enum Attempt {
    Done(reqwest::Response),
    Retry(String),
}

impl S3Client {
    pub fn new(s: &S3Settings) -> std::result::Result<S3Client, String> {
        let endpoint: url::Url = s
            .endpoint
            .parse()
            .map_err(|e| format!("storage.s3.endpoint {:?}: {e}", s.endpoint))?;
        let style = if s.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, s.bucket.clone(), s.region.clone())
            .map_err(|e| format!("storage.s3: bucket {:?} at {}: {e}", s.bucket, s.endpoint))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(s.timeout)
            .read_timeout(s.timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(ca) = &s.ca {
            let pem =
                std::fs::read(ca).map_err(|e| format!("storage.s3.ca {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("storage.s3.ca {}: {e}", ca.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("storage.s3: cannot build the HTTP client: {e}"))?;
        Ok(S3Client {
            retry_for: s.timeout,
            bucket,
            credentials: Credentials::new(s.access_key_id.clone(), s.secret_access_key.clone()),
            http,
            endpoint: s.endpoint.clone(),
        })
    }

    /// A presigned GET URL of the object, valid for `valid_for`.
    pub fn presigned_get(&self, key: &str, valid_for: Duration) -> String {
        self.bucket
            .get_object(self.creds(), key)
            .sign(valid_for)
            .to_string()
    }

    fn creds(&self) -> Option<&Credentials> {
        Some(&self.credentials)
    }

    fn unavailable(&self, what: &str, why: impl std::fmt::Display) -> StorageError {
        StorageError::Unavailable(format!(
            "object storage {} (bucket {}): {what}: {why}",
            self.endpoint,
            self.bucket.name()
        ))
    }

    /// Sends the request `make` builds, again after a pause when the store is busy or failing
    /// (429, 500, 502, 503, 504, transport errors), as long as the storage timeout allows: a hung
    /// store costs a request about one timeout, not one per try. Every other answer is returned
    /// as it is.
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut last = String::new();
        let give_up = tokio::time::Instant::now() + self.retry_for;
        let mut tries = 0;
        for attempt in 0..TRIES {
            if attempt > 0 {
                let pause = Duration::from_millis(100 << (2 * attempt));
                if tokio::time::Instant::now() + pause >= give_up {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            tries += 1;
            // No try outlives the budget: a store that accepts connections and never answers
            // (a listener that stopped accepting, a half-dead peer) costs one timeout in all.
            let outcome = match tokio::time::timeout_at(give_up, make().send()).await {
                Err(_) => Attempt::Retry("no answer within the storage timeout".into()),
                Ok(Ok(r)) if matches!(r.status().as_u16(), 429 | 500 | 502 | 503 | 504) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    Attempt::Retry(format!("{status} {}", error_code(&body)))
                }
                Ok(Ok(r)) => Attempt::Done(r),
                Ok(Err(e)) => Attempt::Retry(root_cause(&e)),
            };
            match outcome {
                Attempt::Done(r) => return Ok(r),
                Attempt::Retry(why) => {
                    tracing::debug!(what, attempt, %why, "object storage request failed");
                    last = why;
                }
            }
        }
        Err(self.unavailable(what, format!("{last} (after {tries} tries)")))
    }

    /// Turns a non-success answer into an error naming the store's error code.
    async fn fail(&self, what: &str, r: reqwest::Response) -> StorageError {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        self.unavailable(what, format!("{status} {}", error_code(&body)))
    }

    /// The answer's status and body text.
    async fn read(
        &self,
        what: &str,
        r: reqwest::Response,
    ) -> Result<(reqwest::StatusCode, String)> {
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| self.unavailable(what, root_cause(&e)))?;
        Ok((status, text))
    }

    /// The body of a successful answer; otherwise an error naming the store's error code.
    async fn success_body(&self, what: &str, r: reqwest::Response) -> Result<String> {
        let (status, text) = self.read(what, r).await?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(self.unavailable(what, format!("{status} {}", error_code(&text))))
        }
    }

    /// The object's bytes; `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let url = self.bucket.get_object(self.creds(), key).sign(SIGN_FOR);
        let what = format!("GET {key}");
        let r = self.send(&what, || self.http.get(url.clone())).await?;
        match r.status().as_u16() {
            200 => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| self.unavailable(&what, root_cause(&e)))?,
            )),
            404 => Ok(None),
            _ => Err(self.fail(&what, r).await),
        }
    }

    /// `len` bytes of the object from `start`, streamed; `None` when there is no such object.
    pub async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<BlobStream>> {
        let url = self.bucket.get_object(self.creds(), key).sign(SIGN_FOR);
        let what = format!("GET {key}");
        if len == 0 {
            return Ok(Some(Box::pin(futures_util::stream::empty())));
        }
        let range = format!("bytes={}-{}", start, start + len - 1);
        let r = self
            .send(&what, || {
                self.http
                    .get(url.clone())
                    .header(reqwest::header::RANGE, range.clone())
            })
            .await?;
        match r.status().as_u16() {
            200 | 206 => {}
            404 => return Ok(None),
            _ => return Err(self.fail(&what, r).await),
        }
        let stream = r
            .bytes_stream()
            .map(|c| c.map_err(|e| std::io::Error::other(root_cause(&e))));
        Ok(Some(Box::pin(stream)))
    }

    /// The object's size; `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<u64>> {
        let url = self.bucket.head_object(self.creds(), key).sign(SIGN_FOR);
        let what = format!("HEAD {key}");
        let r = self.send(&what, || self.http.head(url.clone())).await?;
        match r.status().as_u16() {
            200 => Ok(Some(
                r.headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(self.fail(&what, r).await),
        }
    }

    /// Stores `body` as the object `key`, whole: readers see the old object or the new one.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let url = self.bucket.put_object(self.creds(), key).sign(SIGN_FOR);
        let what = format!("PUT {key}");
        let r = self
            .send(&what, || self.http.put(url.clone()).body(body.clone()))
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, r).await)
        }
    }

    /// The `x-amz-copy-source` value naming the object `from` of this bucket.
    fn copy_source(&self, from: &str) -> String {
        format!("/{}/{}", self.bucket.name(), encode_key(from))
    }

    /// Copies the object `from` to `to` inside the bucket (a server-side copy).
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let source = self.copy_source(from);
        let mut action = self.bucket.put_object(self.creds(), to);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(SIGN_FOR);
        let what = format!("COPY {from} to {to}");
        let r = self
            .send(&what, || {
                self.http
                    .put(url.clone())
                    .header("x-amz-copy-source", source.clone())
            })
            .await?;
        // A copy can fail after its 200 has been sent: the error is then in the body.
        let (status, body) = self.read(&what, r).await?;
        if status.is_success() && !body.contains("<Error>") {
            Ok(())
        } else {
            Err(self.unavailable(&what, error_code(&body)))
        }
    }

    /// Deletes the object; deleting one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let url = self.bucket.delete_object(self.creds(), key).sign(SIGN_FOR);
        let what = format!("DELETE {key}");
        let r = self.send(&what, || self.http.delete(url.clone())).await?;
        if r.status().is_success() || r.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(self.fail(&what, r).await)
        }
    }

    /// Every object under `prefix`; with `delimited`, only those directly under it, and the
    /// sub-prefixes ("directories", ending in `/`) beside them. All pages, in key order.
    pub async fn list(&self, prefix: &str, delimited: bool) -> Result<Listing> {
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        let what = format!("LIST {prefix}");
        loop {
            let mut action: ListObjectsV2<'_> = self.bucket.list_objects_v2(self.creds());
            action.with_prefix(prefix);
            if delimited {
                action.with_delimiter("/");
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGN_FOR);
            let r = self.send(&what, || self.http.get(url.clone())).await?;
            let text = self.success_body(&what, r).await?;
            let next = list_page(&text, &mut out)
                .map_err(|e| self.unavailable(&what, format!("unreadable listing: {e}")))?;
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// The object `key` itself (size and time written), if there is one.
    pub async fn stat(&self, key: &str) -> Result<Option<Object>> {
        Ok(self
            .list(key, true)
            .await?
            .objects
            .into_iter()
            .find(|o| o.key == key))
    }

    /// Starts a multipart upload to `key`; returns its upload id.
    pub async fn create_multipart(&self, key: &str) -> Result<String> {
        let url = self
            .bucket
            .create_multipart_upload(self.creds(), key)
            .sign(SIGN_FOR);
        let what = format!("CREATE MULTIPART {key}");
        let r = self.send(&what, || self.http.post(url.clone())).await?;
        let text = self.success_body(&what, r).await?;
        upload_id(&text).map_err(|e| self.unavailable(&what, format!("unreadable answer: {e}")))
    }

    /// Uploads part `number` (from 1); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: Bytes,
    ) -> Result<String> {
        let url = self
            .bucket
            .upload_part(self.creds(), key, number, upload_id)
            .sign(SIGN_FOR);
        let what = format!("UPLOAD PART {number} of {key}");
        let r = self
            .send(&what, || self.http.put(url.clone()).body(body.clone()))
            .await?;
        if !r.status().is_success() {
            return Err(self.fail(&what, r).await);
        }
        r.headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| self.unavailable(&what, "the answer has no ETag"))
    }

    /// Uploads part `number` (from 1) of a multipart upload as a server-side copy of `from`, or of
    /// the bytes `first..=last` of it; returns the part's ETag. The bytes never pass through here.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        from: &str,
        range: Option<(u64, u64)>,
    ) -> Result<String> {
        let source = self.copy_source(from);
        let range = range.map(|(first, last)| format!("bytes={first}-{last}"));
        let mut action = self
            .bucket
            .upload_part(self.creds(), key, number, upload_id);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        if let Some(r) = &range {
            action
                .headers_mut()
                .insert("x-amz-copy-source-range", r.clone());
        }
        let url = action.sign(SIGN_FOR);
        let what = format!("UPLOAD PART {number} of {key} as a copy of {from}");
        let r = self
            .send(&what, || {
                let req = self
                    .http
                    .put(url.clone())
                    .header("x-amz-copy-source", source.clone());
                match &range {
                    Some(r) => req.header("x-amz-copy-source-range", r.clone()),
                    None => req,
                }
            })
            .await?;
        // Like a copy, this can fail after its 200: the error is then in the body.
        let (status, body) = self.read(&what, r).await?;
        if !status.is_success() || body.contains("<Error>") {
            return Err(self.unavailable(&what, error_code(&body)));
        }
        xml_field(&body, "ETag")
            .map(|e| e.replace("&quot;", "\""))
            .ok_or_else(|| self.unavailable(&what, "the answer has no ETag"))
    }

    /// Copies the object `from` (of `size` bytes) to `to` inside the bucket. A single copy is
    /// limited to 5 GiB on AWS; larger objects are copied as a multipart upload of ranged part
    /// copies, which completes whole or not at all.
    pub async fn copy_sized(&self, from: &str, to: &str, size: u64) -> Result<()> {
        if size <= SINGLE_COPY_MAX {
            return self.copy(from, to).await;
        }
        self.copy_in_parts(from, to, size, COPY_PART).await
    }

    /// [`S3Client::copy_sized`]'s multipart copy, in parts of `part` bytes (at least 5 MiB).
    pub async fn copy_in_parts(&self, from: &str, to: &str, size: u64, part: u64) -> Result<()> {
        let mut ranges = Vec::new();
        let mut first = 0u64;
        while first < size {
            let last = (first + part.max(1)).min(size) - 1;
            ranges.push(PartSource::Copy {
                key: from.to_string(),
                range: Some((first, last)),
            });
            first = last + 1;
        }
        self.compose(to, &ranges, size).await
    }

    /// Writes `to` as the concatenation of `sources` (every one but the last at least 5 MiB) by a
    /// multipart upload that completes whole or not at all; `size` is the result's size. Copied
    /// parts never pass through here.
    pub async fn compose(&self, to: &str, sources: &[PartSource], size: u64) -> Result<()> {
        let upload_id = self.create_multipart(to).await?;
        let mut copied = async {
            let mut etags = Vec::with_capacity(sources.len());
            for (i, source) in sources.iter().enumerate() {
                let number = u16::try_from(i + 1).map_err(|_| {
                    self.unavailable(&format!("COMPOSE {to}"), "more than 10,000 parts")
                })?;
                etags.push(match source {
                    PartSource::Copy { key, range } => {
                        self.upload_part_copy(to, &upload_id, number, key, *range)
                            .await?
                    }
                    PartSource::Bytes(b) => {
                        self.upload_part(to, &upload_id, number, b.clone()).await?
                    }
                });
            }
            self.complete_multipart(to, &upload_id, &etags).await
        }
        .await;
        if copied.is_err() {
            // A lost answer to the completion: the object is there, whole, with its size.
            if self.head(to).await.ok().flatten() == Some(size) {
                copied = Ok(());
            } else {
                let _ = self.abort_multipart(to, &upload_id).await;
            }
        }
        copied
    }

    /// Completes a multipart upload from its parts' ETags, in part order: the object appears whole.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<()> {
        let action = self.bucket.complete_multipart_upload(
            self.creds(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGN_FOR);
        let body = action.body();
        let what = format!("COMPLETE MULTIPART {key}");
        let r = self
            .send(&what, || self.http.post(url.clone()).body(body.clone()))
            .await?;
        let (status, text) = self.read(&what, r).await?;
        if status.is_success() && CompleteMultipartUploadResponse::parse(&text).is_ok() {
            Ok(())
        } else {
            Err(self.unavailable(&what, error_code(&text)))
        }
    }

    /// Aborts a multipart upload and frees its parts; one already gone is not an error.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(self.creds(), key, upload_id)
            .sign(SIGN_FOR);
        let what = format!("ABORT MULTIPART {key}");
        let r = self.send(&what, || self.http.delete(url.clone())).await?;
        if r.status().is_success() || r.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(self.fail(&what, r).await)
        }
    }
}

/// Adds one page of a `ListObjectsV2` answer to `out`; the continuation token of the next page,
/// if there is one. Apart from [`S3Client::list`] so the fuzz target reads pages as it does.
pub(crate) fn list_page(
    text: &str,
    out: &mut Listing,
) -> std::result::Result<Option<String>, String> {
    let page = ListObjectsV2::parse_response(text).map_err(|e| e.to_string())?;
    out.objects.extend(page.contents.into_iter().map(|c| {
        Object {
            modified: c
                .last_modified
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(std::time::UNIX_EPOCH),
            key: c.key,
            size: c.size.unwrap_or(0),
        }
    }));
    out.prefixes
        .extend(page.common_prefixes.into_iter().map(|p| p.prefix));
    Ok(page.next_continuation_token.filter(|t| !t.is_empty()))
}

/// The upload id in a `CreateMultipartUpload` answer.
pub(crate) fn upload_id(text: &str) -> std::result::Result<String, String> {
    CreateMultipartUpload::parse_response(text)
        .map(|parsed| parsed.upload_id().to_string())
        .map_err(|e| e.to_string())
}

/// The text of the first `<name>` element of a small XML answer.
pub(crate) fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(body[start..end].to_string())
}

/// The `<Code>` and `<Message>` of an S3 error body, or the body's start when it has none.
pub(crate) fn error_code(body: &str) -> String {
    let field = |name: &str| xml_field(body, name);
    match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => body.chars().take(200).collect(),
    }
}

/// A listing's `LastModified` (RFC 3339, e.g. `2026-11-23T02:10:00.000Z`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(std::time::SystemTime::from)
}

/// The innermost cause of a reqwest error (the "connection refused" under "error sending request").
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        format!("timed out ({cause})")
    } else {
        cause.to_string()
    }
}

/// Percent-encodes a key for the copy-source header, keeping `/`.
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
