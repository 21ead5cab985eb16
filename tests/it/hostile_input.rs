//! No input crashes the parsers that see raw client bytes: the router, the manifest parser and the
//! range parsers. A deterministic pseudo-random generator mixes grammar fragments with junk bytes,
//! so every run explores the same cases.

use registryd::http::range::{parse_content_range, parse_range};
use registryd::http::route;
use registryd::registry::manifest;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const FRAGMENTS: &[&str] = &[
    "/",
    "/v2/",
    "v2",
    "blobs",
    "uploads",
    "manifests",
    "tags",
    "list",
    "referrers",
    "_catalog",
    "..",
    ".",
    "%2F",
    "%2e",
    "%00",
    "%",
    "a",
    "A",
    "-",
    "_",
    "__",
    ":",
    "sha256:",
    "sha512:",
    "e3b0c44298fc1c14",
    "9afbf4c8996fb924",
    "\u{0}",
    "\u{ff}",
    "é",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    "mediaType",
    "schemaVersion",
    "2",
    "-1",
    "1e309",
    "null",
    "true",
    "config",
    "layers",
    "manifests",
    "subject",
    "digest",
    "size",
    "bytes=",
    "0",
    "18446744073709551615",
    "99999999999999999999",
];

fn sample(rng: &mut XorShift) -> String {
    let n = 1 + rng.next() % 24;
    (0..n)
        .map(|_| {
            if rng.next().is_multiple_of(8) {
                char::from_u32((rng.next() % 0x3000) as u32)
                    .unwrap_or('x')
                    .to_string()
            } else {
                rng.pick(FRAGMENTS).to_string()
            }
        })
        .collect()
}

#[test]
fn parsers_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..200_000 {
        let s = sample(&mut rng);
        let _ = route::parse(&s);
        let _ = route::parse(&format!("/v2/{s}"));
        let _ = manifest::parse(Some(&s), s.as_bytes());
        let _ = manifest::parse(Some(manifest::OCI_MANIFEST), s.as_bytes());
        let _ = manifest::detect_media_type(s.as_bytes());
        let _ = parse_range(Some(&s), rng.next() % 100);
        let _ = parse_content_range(&s);
    }
}

#[test]
fn parsed_names_never_escape() {
    let mut rng = XorShift(42);
    for _ in 0..200_000 {
        let s = sample(&mut rng);
        if let Ok(route::Route::Tags(name)) = route::parse(&format!("/v2/{s}/tags/list")) {
            let n = name.as_str();
            assert!(
                !n.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
                "{n:?} accepted"
            );
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
            );
        }
    }
}
