//! The S3 answers the S3 driver reads (`storage::s3::client`): `ListObjectsV2` pages,
//! `CreateMultipartUpload`'s upload id, an `UploadPartCopy`'s ETag, error bodies and
//! `LastModified` times, from an S3 service that may be any implementation, or broken.
//!
//! Invariants: no panic; an error body always yields a one-line cause of bounded length when it
//! has no `<Code>` (the first 200 characters); a `<name>` field found is the text between the
//! first `<name>` and the `</name>` after it; a page's continuation token is never empty (an
//! empty one would list the first page forever).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryd::fuzzing::{s3_error_code, s3_list_page, s3_time, s3_upload_id, s3_xml_field};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Ok((objects, _prefixes, next)) = s3_list_page(&body) {
        assert_ne!(next.as_deref(), Some(""), "an empty continuation token");
        let _ = objects.iter().map(|o| o.1).max();
    }
    let _ = s3_upload_id(&body);
    for name in ["ETag", "Code", "Message"] {
        if let Some(v) = s3_xml_field(&body, name) {
            assert!(body.contains(&format!("<{name}>{v}</{name}>")));
            assert!(!v.contains(&format!("</{name}>")));
        }
    }
    let cause = s3_error_code(&body);
    if s3_xml_field(&body, "Code").is_none() {
        assert!(cause.chars().count() <= 200);
    }
    let _ = s3_time(&body);
    for line in body.lines().take(4) {
        let _ = s3_time(line.trim());
    }
});
