//! Uploads that do not send what they said, or send it a byte at a time (issue 21): a chunk is
//! held to its `Content-Range`, and a body trickled under the minimum rate is cut off although
//! it never falls silent for the stall time.

use std::time::{Duration, Instant};

use crate::common::{TestRegistry, assert_oci_error};
use bytes::Bytes;
use registryd::health::Health;
use registryd::http::handlers::{App, Settings};
use registryd::http::server;
use registryd::registry::Digest;
use registryd::shutdown::Notifier;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// A body sent in `parts` with no Content-Length (chunked), `gap` apart.
fn chunked(parts: Vec<&'static [u8]>, gap: Duration) -> reqwest::Body {
    let s = futures_util::stream::unfold(parts.into_iter(), move |mut it| async move {
        let part = it.next()?;
        tokio::time::sleep(gap).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(part)), it))
    });
    reqwest::Body::wrap_stream(s)
}

#[tokio::test]
async fn a_chunk_is_held_to_its_content_range() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), false).await;
    let loc = reg.start_upload("r").await;

    // `0-1` declares 2 bytes; the chunked body brings 10. Refused, and none of it is kept.
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-1")
        .body(chunked(vec![b"01234", b"56789"], Duration::ZERO))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    assert_oci_error!(r, 416, "RANGE_INVALID");

    // An end of 2^64-1 with Content-Length 0: the range's length wrapped to 0 and matched.
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-18446744073709551615")
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // A body shorter than its range is refused too.
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-9")
        .body(chunked(vec![b"0123"], Duration::ZERO))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // The upload is where it was: the same 10 bytes as `0-9` start at offset 0 and are taken.
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-9")
        .body(chunked(vec![b"01234", b"56789"], Duration::ZERO))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9"));
    let d = Digest::sha256_of(b"0123456789");
    let r = reg.send("PUT", &format!("{loc}?digest={d}")).await;
    assert_eq!(r.status(), 201);
    reg.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_and_keeps_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::basic(false, 4 << 20);
    // One byte every 300 ms never stalls for a second, the per-read rule that let it through.
    settings.body_timeout = Duration::from_secs(1);
    settings.body_min_rate = 100;
    let app = App::with_health(
        crate::common::open_storage(dir.path()),
        Health::always(),
        settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = Notifier::new();
    let task = tokio::spawn(server::serve(
        listener,
        app,
        None,
        stop.subscribe(),
        Duration::from_secs(1),
    ));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("{base}/v2/t/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location").unwrap();

    let started = Instant::now();
    let r = client
        .patch(format!("{base}{loc}"))
        .body(chunked(vec![b"x"; 40], Duration::from_millis(300)))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 408);
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    assert!(
        r.text().await.unwrap().contains("body_min_bytes_per_sec"),
        "the error names the limit"
    );
    // What arrived before the cut is acknowledged: the upload resumes from there.
    let r = client.get(format!("{base}{loc}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let range = header(&r, "range").unwrap();
    assert!(range.starts_with("0-"), "{range}");

    stop.notify();
    let _ = task.await;
}
