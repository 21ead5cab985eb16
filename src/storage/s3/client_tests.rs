//! The S3 client's own tests (beside it: the client is long enough).

use super::*;

#[test]
fn error_bodies_are_summarised() {
    let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce \
                your request rate.</Message></Error>";
    assert_eq!(
        error_code(body),
        "SlowDown: Please reduce your request rate."
    );
    assert_eq!(
        error_code("<Error><Code>NoSuchKey</Code></Error>"),
        "NoSuchKey"
    );
    assert_eq!(error_code("plain"), "plain");
}

#[test]
fn listing_times_parse() {
    let t = parse_rfc3339("2026-11-23T02:10:00.500Z").expect("parses");
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis();
    assert_eq!(ms, 1_795_399_800_500);
    assert!(parse_rfc3339("yesterday").is_none());
}

/// A store that answers every request with a 503 only after most of the storage timeout:
/// the second try is cut at the timeout, not left to run its course.
#[tokio::test]
async fn no_try_outlives_the_storage_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                    if c.write_all(answer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let client = S3Client::new(&S3Settings {
        endpoint: format!("http://{addr}"),
        region: "garage".into(),
        bucket: "b".into(),
        path_style: true,
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
        ca: None,
        timeout: Duration::from_secs(2),
        redirect_blobs: false,
    })
    .expect("client");
    let started = std::time::Instant::now();
    let err = client.get("some/key").await.expect_err("no answer");
    let took = started.elapsed();
    // Without the cap the second try ends at about 3.4 s.
    assert!(took < Duration::from_millis(2900), "took {took:?}: {err}");
    let err = err.to_string();
    // On a machine too slow for a second try inside the budget, one try is all there is.
    assert!(
        err.contains("no answer within the storage timeout (after 2 tries)")
            || err.contains("(after 1 tries)"),
        "{err}"
    );
}

#[test]
fn copy_sources_are_encoded_but_keep_slashes() {
    assert_eq!(
        encode_key("docker/registry/v2/repositories/a b/_uploads/x+y"),
        "docker/registry/v2/repositories/a%20b/_uploads/x%2By"
    );
}
