//! Shared helpers for in-process integration tests: a registry on 127.0.0.1 with its own storage.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use registryd::http::handlers::App;
use registryd::http::server;
use registryd::registry::Digest;
use registryd::shutdown::Notifier;
use registryd::storage::Storage;

pub struct TestRegistry {
    pub base: String,
    pub root: PathBuf,
    pub client: reqwest::Client,
    stop: Notifier,
    task: tokio::task::JoinHandle<()>,
}

/// The S3 bucket to run against instead of the filesystem, when `REGISTRYD_TEST_S3_ENDPOINT` is set
/// (tests/system/s3.sh sets it, with `_BUCKET`, `_KEY_ID`, `_SECRET` and a Garage cluster).
pub fn s3_settings() -> Option<registryd::storage::s3::S3Settings> {
    let var = |k: &str| std::env::var(format!("REGISTRYD_TEST_S3_{k}")).ok();
    Some(registryd::storage::s3::S3Settings {
        endpoint: var("ENDPOINT")?,
        region: var("REGION").unwrap_or_else(|| "garage".into()),
        bucket: var("BUCKET")?,
        path_style: true,
        access_key_id: var("KEY_ID")?,
        secret_access_key: var("SECRET")?,
        ca: None,
        timeout: Duration::from_secs(10),
        redirect_blobs: false,
    })
}

/// The storage of the tests for `root`: that directory, or with `REGISTRYD_TEST_S3_*` set, a key
/// prefix of its own in the bucket (so tests do not see each other).
pub fn open_storage(root: &Path) -> Storage {
    match s3_settings() {
        Some(settings) => {
            let prefix = root.to_string_lossy().trim_matches('/').replace('/', "-");
            Storage::open_s3(&settings, &prefix, Duration::from_secs(30)).unwrap()
        }
        None => Storage::open(root).unwrap(),
    }
}

impl TestRegistry {
    pub async fn start(root: &Path, delete_enabled: bool) -> TestRegistry {
        let storage = open_storage(root);
        let app = App::new(storage, delete_enabled, 4 * 1024 * 1024);
        TestRegistry::serve(root, app).await
    }

    /// A registry with these request-path settings (rules, limits) instead of the defaults.
    pub async fn start_with(
        root: &Path,
        settings: registryd::http::settings::Settings,
    ) -> TestRegistry {
        let storage = open_storage(root);
        let app = App::with_health(storage, registryd::health::Health::always(), settings);
        TestRegistry::serve(root, app).await
    }

    async fn serve(root: &Path, app: std::sync::Arc<App>) -> TestRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Notifier::new();
        let task = tokio::spawn(server::serve(
            listener,
            app,
            None,
            stop.subscribe(),
            Duration::from_secs(5),
        ));
        TestRegistry {
            base: format!("http://{addr}"),
            root: root.to_path_buf(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.notify();
        let _ = self.task.await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.client.request(m, self.url(path))
    }

    /// Sends a request without headers or body.
    pub async fn send(&self, method: &str, path: &str) -> reqwest::Response {
        self.req(method, path).send().await.unwrap()
    }

    /// Opens an upload session in `repo` and returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .send("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_string()
    }

    /// Pushes a blob monolithically and returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        d
    }

    /// Pushes a minimal image (config + one layer) and its manifest under `reference`.
    pub async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (Digest, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer-{seed}");
        let c = self.push_blob(repo, config.as_bytes()).await;
        let l = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = image_manifest(&c, config.len(), &[(&l, layer.len())], None, None);
        let d = self
            .put_manifest(repo, reference, OCI_MANIFEST, &manifest)
            .await;
        (d, manifest)
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Digest {
        let r = self
            .req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let digest = r
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(status, 201, "put manifest: {}", r.text().await.unwrap());
        digest.unwrap().parse().unwrap()
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn image_manifest(
    config: &Digest,
    config_size: usize,
    layers: &[(&Digest, usize)],
    artifact_type: Option<&str>,
    subject: Option<(&Digest, usize)>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s
        })).collect::<Vec<_>>(),
    });
    if let Some(a) = artifact_type {
        m["artifactType"] = serde_json::json!(a);
    }
    if let Some((d, s)) = subject {
        m["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s});
    }
    serde_json::to_vec(&m).unwrap()
}

/// The OCI error code of an error response body (`errors[0].code`); a body without one fails the
/// test, showing the body.
pub async fn error_code(r: reqwest::Response) -> String {
    let body = r.text().await.unwrap();
    oci_code(&body).unwrap_or_else(|| panic!("not an OCI error body: {body}"))
}

/// `errors[0].code` of an OCI error body, if it is one.
fn oci_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v["errors"][0]["code"].as_str()?.to_string())
}

/// `assert_oci_error!(response, status, "CODE")`: the response has that HTTP status and an OCI
/// error body whose `errors[0].code` is `CODE`; a failure shows the body. Format arguments after
/// the code say which request it was, as `assert_eq!`'s do. Evaluates to the parsed body, for
/// checks of the message. Use it in an async test (it awaits the body).
#[allow(unused_macros)]
macro_rules! assert_oci_error {
    ($r:expr, $status:expr, $code:expr $(,)?) => {
        $crate::common::check_oci_error($r, $status, $code, String::new()).await
    };
    ($r:expr, $status:expr, $code:expr, $($what:tt)+) => {
        $crate::common::check_oci_error($r, $status, $code, format!($($what)+)).await
    };
}
#[allow(unused_imports)]
pub(crate) use assert_oci_error;

/// What `assert_oci_error!` runs: `what` names the request in the failure message.
pub async fn check_oci_error(
    r: reqwest::Response,
    status: u16,
    code: &str,
    what: String,
) -> serde_json::Value {
    let got = r.status().as_u16();
    let url = r.url().to_string();
    let body = r.text().await.unwrap();
    let what = if what.is_empty() {
        url
    } else {
        format!("{what} ({url})")
    };
    assert_eq!(got, status, "{what}: status {got}, body {body}");
    assert_eq!(
        oci_code(&body).as_deref(),
        Some(code),
        "{what}: OCI error code, body {body}"
    );
    serde_json::from_str(&body).unwrap()
}

/// True when the tests run against an S3 bucket (`REGISTRYD_TEST_S3_*` set, by tests/system/s3.sh)
/// and the calling test needs the filesystem: it then prints on stderr that it skipped and `why`,
/// instead of returning as if it had passed.
pub fn skipped_on_s3(why: &str) -> bool {
    let on_s3 = s3_settings().is_some();
    if on_s3 {
        eprintln!("skipped: {why}");
    }
    on_s3
}
