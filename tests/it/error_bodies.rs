//! A server-side failure tells the client what kind of thing failed and a request id to quote,
//! never the inside of the registry: no storage path, no OS error text. The log has those.

use crate::common::{TestRegistry, assert_oci_error, skipped_on_s3};

#[tokio::test]
async fn a_corrupt_link_answers_500_without_the_path() {
    if skipped_on_s3(
        "the corruption below is a file on disk; tests/system/s3.sh covers the bucket's own errors",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    reg.push_image("app/one", "v1", "seed").await;
    let link = reg
        .root
        .join("docker/registry/v2/repositories/app/one/_manifests/tags/v1/current/link");
    assert!(
        link.exists(),
        "the layout put the tag link at {}",
        link.display()
    );
    std::fs::write(&link, "not a digest").unwrap();

    let r = reg.send("GET", "/v2/app/one/manifests/v1").await;
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("a request id header");
    let body = assert_oci_error!(r, 500, "UNKNOWN");
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains(&id), "{message}");
    let root = dir.path().to_string_lossy().to_string();
    assert!(
        !message.contains(&root),
        "the storage root leaked: {message}"
    );
    assert!(
        !message.contains("corrupt link"),
        "the internal error leaked: {message}"
    );
    assert!(!message.contains('/'), "a path leaked: {message}");
    reg.stop().await;
}
