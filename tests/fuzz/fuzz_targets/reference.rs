//! Repository names, tags, digests and manifest references (`registry`).
//!
//! Invariants: no panic; whatever parses prints back byte for byte (`to_string() == input`), so
//! a name, tag or digest stored or sent in a header is exactly what the client sent; and valid
//! input is accepted: a name, tag and digest built from the distribution-spec grammar always
//! parse. The first byte picks the mode: even, the rest is one string tried as all four;
//! odd, the rest drives the grammar (through `arbitrary`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use registryd::registry::name::MAX_NAME_LEN;
use registryd::registry::{Digest, Reference, RepoName, Tag};

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const TAG_FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
const TAG_REST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
const HEX: &[u8] = b"0123456789abcdef";

fn pick(set: &[u8], b: u8) -> char {
    char::from(set[usize::from(b) % set.len()])
}

/// A component `[a-z0-9]+(sep[a-z0-9]+)*` with sep one of `.`, `_`, `__`, `-+`.
#[derive(Arbitrary, Debug)]
struct Component {
    first: Vec<u8>,
    rest: Vec<(u8, u8, Vec<u8>)>,
    head: u8,
}

impl Component {
    fn text(&self) -> String {
        let run = |head: u8, v: &[u8]| -> String {
            std::iter::once(head)
                .chain(v.iter().copied())
                .map(|b| pick(ALNUM, b))
                .collect()
        };
        let mut s = run(self.head, &self.first);
        for (sep, dashes, more) in &self.rest {
            s.push_str(match sep % 4 {
                0 => ".",
                1 => "_",
                2 => "__",
                _ => "",
            });
            if sep % 4 == 3 {
                s.extend(std::iter::repeat_n('-', 1 + usize::from(dashes % 4)));
            }
            s.push_str(&run(*dashes, more));
        }
        s
    }
}

#[derive(Arbitrary, Debug)]
struct Valid {
    name: Vec<Component>,
    last: Component,
    tag_first: u8,
    tag: Vec<u8>,
    sha512: bool,
    hex: Vec<u8>,
}

fn roundtrip(s: &str) {
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.to_string(), s);
        assert_eq!(n.as_str(), s);
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
        assert_eq!(Ok(Reference::Tag(t)), s.parse::<Reference>());
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(Ok(Reference::Digest(d)), s.parse::<Reference>());
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        roundtrip(&String::from_utf8_lossy(rest));
        return;
    }
    let Ok(v) = Valid::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let name = v
        .name
        .iter()
        .chain([&v.last])
        .map(Component::text)
        .collect::<Vec<_>>()
        .join("/");
    if name.len() <= MAX_NAME_LEN {
        let parsed = name.parse::<RepoName>();
        assert!(parsed.is_ok(), "valid name {name:?} refused");
    }
    let tag: String = std::iter::once(pick(TAG_FIRST, v.tag_first))
        .chain(v.tag.iter().take(127).map(|&b| pick(TAG_REST, b)))
        .collect();
    assert!(tag.parse::<Tag>().is_ok(), "valid tag {tag:?} refused");
    assert!(
        tag.parse::<Reference>().is_ok(),
        "valid tag {tag:?} refused as a reference"
    );
    let (alg, len) = if v.sha512 {
        ("sha512", 128)
    } else {
        ("sha256", 64)
    };
    let hex: String = v
        .hex
        .iter()
        .cycle()
        .take(len)
        .map(|&b| pick(HEX, b))
        .collect();
    if hex.len() == len {
        let d = format!("{alg}:{hex}");
        assert!(d.parse::<Digest>().is_ok(), "valid digest {d} refused");
        roundtrip(&d);
    }
    roundtrip(&name);
    roundtrip(&tag);
});
