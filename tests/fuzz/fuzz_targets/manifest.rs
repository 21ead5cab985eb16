//! Manifest and index parsing and validation (`registry::manifest`), as a push meets it: a
//! `Content-Type` header and a body.
//!
//! Invariants: no panic; a manifest accepted on push is read back the same later: what
//! `references` finds in the stored bytes (garbage collection, the inventory and the referrers
//! API all read stored manifests with it, without the push's header) is exactly what the push
//! validated, so nothing it names is collected as unreferenced. The input is the header up to the
//! first newline (none: no header), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryd::registry::manifest::{detect_media_type, essence, parse, references};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            Some(String::from_utf8_lossy(&data[..i]).into_owned()),
            &data[i + 1..],
        ),
        None => (None, data),
    };
    let _ = header.as_deref().map(essence);
    let served_as = detect_media_type(body);
    let Ok(m) = parse(header.as_deref(), body) else {
        return;
    };
    let (refs, subject) = references(body)
        .unwrap_or_else(|e| panic!("accepted with {header:?} but unreadable when stored: {e}"));
    let want: Vec<_> = m
        .blobs
        .iter()
        .chain(m.manifests.iter())
        .map(|d| d.digest.clone())
        .collect();
    assert_eq!(
        refs, want,
        "stored form references other digests than the push did"
    );
    assert_eq!(subject, m.subject.map(|s| s.digest));
    // What it will be served as parses too (a client re-pushing what it pulled).
    assert!(
        parse(Some(served_as.as_str()), body).is_ok(),
        "accepted as {} but refused as {served_as}, the type it is served with",
        m.media_type
    );
});
