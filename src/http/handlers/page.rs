//! `n` and `last` pagination of the listings (`_catalog`, `tags/list`), and the `Link` header that
//! points at the next page.

use std::collections::HashMap;

use http::StatusCode;

use crate::http::error::{ApiError, Code};

/// The page size `n` of a listing request, if given.
pub fn page_size(query: &HashMap<String, String>) -> Result<Option<usize>, ApiError> {
    query
        .get("n")
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::PaginationNumberInvalid,
                    format!("n={v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

/// `n` and `last` pagination over a sorted list: the page, and whether more follows.
pub fn paginate<'a>(
    items: &'a [String],
    query: &HashMap<String, String>,
) -> Result<(&'a [String], bool), ApiError> {
    let n = page_size(query)?;
    // Listings are sorted, so the entries after `last` start where `last` would be inserted.
    let items = match query.get("last") {
        Some(last) => items
            .get(items.partition_point(|i| i.as_str() <= last.as_str())..)
            .unwrap_or_default(),
        None => items,
    };
    Ok(match n.and_then(|n| items.split_at_checked(n)) {
        Some((page, rest)) if !rest.is_empty() => (page, !page.is_empty()),
        _ => (items, false),
    })
}

/// A `Link` header for the next page: `</v2/...?n=N&last=X>; rel="next"`.
pub fn next_link(path: &str, n: &str, last: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", n)
        .append_pair("last", last)
        .finish();
    format!("<{path}?{q}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn pagination() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let pg = |items: &[String], q: &HashMap<String, String>| {
            paginate(items, q).map(|(page, more)| (page.to_vec(), more))
        };
        assert_eq!(pg(&items, &q(&[])).unwrap(), (items.clone(), false));
        assert_eq!(
            pg(&items, &q(&[("n", "2")])).unwrap(),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            pg(&items, &q(&[("n", "2"), ("last", "b")])).unwrap(),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(pg(&items, &q(&[("last", "d")])).unwrap(), (vec![], false));
        assert_eq!(pg(&items, &q(&[("n", "0")])).unwrap(), (vec![], false));
        assert!(pg(&items, &q(&[("n", "-1")])).is_err());
        assert_eq!(
            next_link("/v2/_catalog", "2", "b/c"),
            "</v2/_catalog?n=2&last=b%2Fc>; rel=\"next\""
        );
    }
}
