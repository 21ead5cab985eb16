//! `Range` (blob GETs) and `Content-Range` (upload PATCHes) headers (`http::range`).
//!
//! Invariants: no panic; a `Range` that parses against a blob of `size` bytes yields a non-empty
//! span inside the blob (start <= end < size), so a reply never reads past the blob or sends a
//! negative length; a `Content-Range` that parses has start <= end and a length that fits a u64;
//! a well-formed `S-E` (S <= E, length not overflowing) is accepted as exactly that span, also as
//! `bytes S-E/*` and `bytes=S-E`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use registryd::http::range::{RangeRequest, parse_content_range, parse_range};

#[derive(Arbitrary, Debug)]
struct Input {
    header: String,
    size: u64,
    start: u64,
    end: u64,
    form: u8,
}

fuzz_target!(|i: Input| {
    for size in [i.size, i.size % 4096, 0, 1, u64::MAX] {
        if let RangeRequest::Partial(r) = parse_range(Some(&i.header), size) {
            assert!(
                r.start <= r.end && r.end < size,
                "{:?} on {size}: {r:?}",
                i.header
            );
            assert!(!r.is_empty() && r.len() == r.end - r.start + 1);
        }
    }
    if let Some(r) = parse_content_range(&i.header) {
        assert!(r.start <= r.end, "{:?}: {r:?}", i.header);
        assert!((r.end - r.start).checked_add(1).is_some());
    }
    let (s, e) = (i.start.min(i.end), i.start.max(i.end));
    let text = match i.form % 3 {
        0 => format!("{s}-{e}"),
        1 => format!("bytes {s}-{e}/*"),
        _ => format!("bytes={s}-{e}"),
    };
    let parsed = parse_content_range(&text);
    if (e - s).checked_add(1).is_some() {
        let r = parsed.unwrap_or_else(|| panic!("{text:?} refused"));
        assert_eq!((r.start, r.end), (s, e), "{text:?}");
    } else {
        assert!(parsed.is_none(), "{text:?}: its length wraps");
    }
    // Every suffix and open range of a blob with a byte in it is inside it.
    if i.size > 0 {
        for h in [format!("bytes=-{}", i.start), format!("bytes={}-", i.start)] {
            if let RangeRequest::Partial(r) = parse_range(Some(&h), i.size) {
                assert!(
                    r.start <= r.end && r.end < i.size,
                    "{h:?} on {}: {r:?}",
                    i.size
                );
            }
        }
    }
});
