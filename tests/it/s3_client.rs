//! The S3 client's server-side copies against a real store: run by tests/system/s3.sh with
//! `REGISTRYD_TEST_S3_*` pointing at its Garage cluster. Without a store they are ignored, and
//! `cargo test` lists them as ignored, with why, instead of counting them as passed.

use bytes::Bytes;
use registryd::storage::s3::client::{PartSource, S3Client};

const NEEDS_STORE: &str = "needs an S3 store: REGISTRYD_TEST_S3_* (tests/system/s3.sh sets them)";

fn client() -> S3Client {
    let settings = crate::common::s3_settings().expect(NEEDS_STORE);
    S3Client::new(&settings).expect("client")
}

/// Deterministic bytes that do not repeat within a part.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| ((i * 31 + i / 7919) as u8) ^ seed)
        .collect::<Vec<_>>()
        .into()
}

#[tokio::test]
#[ignore = "needs an S3 store: REGISTRYD_TEST_S3_* (tests/system/s3.sh sets them)"]
async fn a_copy_in_ranged_parts_is_byte_identical() {
    let c = client();
    let data = pattern(12 * 1024 * 1024 + 123, 7);
    c.put("tmp-s3client/copy/src", data.clone()).await.unwrap();
    // 5 MiB parts: three of them, the last one short (what a > 5 GiB blob gets in 1 GiB parts).
    c.copy_in_parts(
        "tmp-s3client/copy/src",
        "tmp-s3client/copy/dst",
        data.len() as u64,
        5 << 20,
    )
    .await
    .unwrap();
    let back = c.get("tmp-s3client/copy/dst").await.unwrap().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the copied object differs");
    // Through copy_sized, an object under the single-copy limit is copied in one request.
    c.copy_sized(
        "tmp-s3client/copy/src",
        "tmp-s3client/copy/one",
        data.len() as u64,
    )
    .await
    .unwrap();
    assert!(c.get("tmp-s3client/copy/one").await.unwrap().unwrap() == data);
}

#[tokio::test]
#[ignore = "needs an S3 store: REGISTRYD_TEST_S3_* (tests/system/s3.sh sets them)"]
async fn compose_joins_objects_in_order_and_a_missing_source_leaves_nothing() {
    let c = client();
    let a = pattern(6 << 20, 1);
    let b = pattern(5 << 20, 2);
    let tail = pattern(1000, 3);
    c.put("tmp-s3client/compose/a", a.clone()).await.unwrap();
    c.put("tmp-s3client/compose/b", b.clone()).await.unwrap();
    let copy = |key: &str| PartSource::Copy {
        key: key.to_string(),
        range: None,
    };
    // Two objects copied inside the store, then bytes sent with the last part.
    let sources = [
        copy("tmp-s3client/compose/a"),
        copy("tmp-s3client/compose/b"),
        PartSource::Bytes(tail.clone()),
    ];
    let size = (a.len() + b.len() + tail.len()) as u64;
    c.compose("tmp-s3client/compose/out", &sources, size)
        .await
        .unwrap();
    let back = c.get("tmp-s3client/compose/out").await.unwrap().unwrap();
    let want: Vec<u8> = [a.as_ref(), b.as_ref(), tail.as_ref()].concat();
    assert!(back.as_ref() == want.as_slice(), "composed object differs");

    let missing = [
        copy("tmp-s3client/compose/a"),
        copy("tmp-s3client/compose/nope"),
    ];
    let err = c
        .compose("tmp-s3client/compose/bad", &missing, 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("compose/nope"), "{err}");
    assert_eq!(c.head("tmp-s3client/compose/bad").await.unwrap(), None);
}
