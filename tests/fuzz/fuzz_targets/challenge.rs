//! The upstream's `WWW-Authenticate` challenge (`proxy::upstream::parse_challenge`), read from
//! whatever registry the pull-through cache is pointed at.
//!
//! Invariants: no panic; the scheme is the header's first word; and a challenge written by the
//! rules (`Bearer k1="v1",k2=v2`, quoted values escaped with `\`, keys in any case, blanks after
//! commas) parses back to exactly those lower-cased keys and values. The first byte picks a raw
//! header (even) or a built one (odd, through `arbitrary`).
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use registryd::proxy::upstream::parse_challenge;

#[derive(Arbitrary, Debug)]
struct Built {
    scheme: bool,
    params: Vec<(String, String, bool, bool)>,
}

/// A key as RFC 9110's token grammar allows: letters, digits and `-_.`.
fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let h = String::from_utf8_lossy(rest);
        let (scheme, _) = parse_challenge(&h);
        assert!(h.trim().starts_with(&scheme), "scheme {scheme:?} of {h:?}");
        return;
    }
    let Ok(b) = Built::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let scheme = if b.scheme { "Bearer" } else { "Basic" };
    let mut want = HashMap::new();
    let mut parts = Vec::new();
    for (k, v, quoted, blank) in &b.params {
        let key = token(k);
        if key.is_empty() {
            continue;
        }
        let value = if *quoted {
            let escaped: String = v
                .chars()
                .flat_map(|c| {
                    let esc = matches!(c, '"' | '\\');
                    esc.then_some('\\').into_iter().chain([c])
                })
                .collect();
            want.insert(key.to_ascii_lowercase(), v.clone());
            format!("\"{escaped}\"")
        } else {
            // A token value: what the grammar allows unquoted.
            let t = token(v);
            want.insert(key.to_ascii_lowercase(), t.clone());
            t
        };
        parts.push(format!("{}{key}={value}", if *blank { " " } else { "" }));
    }
    let h = format!("{scheme} {}", parts.join(","));
    let (s, params) = parse_challenge(&h);
    assert_eq!(s, scheme);
    assert_eq!(params, want, "{h:?}");
});
