//! Byte ranges: `Range` on blob GET (RFC 9110, one range) and `Content-Range` on upload PATCH
//! (the OCI spec's `<start>-<end>`).

/// A satisfiable byte range, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Bytes covered; never zero, since both ends are inclusive. Every `ByteRange` this module
    /// hands out covers at most `u64::MAX` bytes (see [`parse_content_range`]), so this cannot
    /// wrap; it saturates rather than panic should one be built by hand from `0` to `u64::MAX`.
    pub fn len(&self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// How a `Range` header applies to a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed or multi-range): send the whole blob with 200.
    Full,
    /// Send this part with 206.
    Partial(ByteRange),
    /// Well-formed but outside the blob: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interprets a `Range` header against a blob of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match num(b) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
        },
        // bytes=S-
        (false, true) => match num(a) {
            None => RangeRequest::Full,
            Some(s) if s >= size => RangeRequest::Unsatisfiable,
            Some(s) => RangeRequest::Partial(ByteRange {
                start: s,
                end: size - 1,
            }),
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(ByteRange {
                        start: s,
                        end: e.min(size - 1),
                    })
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Parses an upload chunk's `Content-Range`: `<start>-<end>` (also accepting `bytes S-E/T`).
/// `None` for anything else, which the caller answers with 416; also for a range whose length
/// does not fit in a `u64` (`0-18446744073709551615`): its length would wrap to 0 and pass for a
/// chunk of `Content-Length: 0`.
pub fn parse_content_range(header: &str) -> Option<ByteRange> {
    let s = header.trim();
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = s.split('/').next()?;
    let (a, b) = s.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = b.trim().parse().ok()?;
    // Both ends inclusive: the length is end - start + 1, which must not wrap.
    end.checked_sub(start)?.checked_add(1)?;
    Some(ByteRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), p(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), p(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), p(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), p(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), p(8, 9));
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=10-20"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=0-0"), 0),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), RangeRequest::Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("0-99"),
            Some(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ByteRange {
                start: 100,
                end: 199
            })
        );
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("abc"), None);
        assert_eq!(parse_content_range("-4"), None);
        // The length of 0-u64::MAX is 2^64, which wrapped to 0 and matched `Content-Length: 0`.
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        let last = parse_content_range("1-18446744073709551615").unwrap();
        assert_eq!(last.len(), u64::MAX);
        assert_eq!(parse_content_range("0-18446744073709551616"), None);
    }
}
