//! The `/etc/hosts` block editor (`node::hosts`): the file text is the user's, so anything may be
//! in it (half-deleted blocks, markers in comments, CRLF, no final newline).
//!
//! Invariants: no panic; remove(apply(x)) == remove(x), and == x byte for byte when x holds no
//! block of ours (apply then remove leaves the user's file exactly as it was); apply is idempotent
//! and a second apply replaces the first's names (if it had any); every applied name is on a line
//! of its own; `damage` never panics on what apply wrote. The input is either raw text (first byte
//! even) or, through `arbitrary`, lines drawn from the markers and their near misses, which random
//! bytes would almost never spell.
#![no_main]

use std::net::IpAddr;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use registryd::node::hosts::{BEGIN, END, damage, remove_block, render};

#[derive(Arbitrary, Debug)]
enum Line {
    Begin,
    End,
    Commented(bool),
    Indented(bool),
    Suffixed(bool, String),
    Entry(IpAddr, u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct Built {
    lines: Vec<(Line, u8)>,
    first: Vec<(IpAddr, u8)>,
    second: Vec<(IpAddr, u8)>,
}

/// Host names as config validation lets them through: registryd never writes a name with a
/// newline or blank in it.
fn host(n: u8) -> String {
    [
        "registry.home",
        "a.home",
        "b.example.net",
        "x",
        "registry.home.",
    ][usize::from(n) % 5]
        .to_string()
}

fn marker(is_begin: bool) -> &'static str {
    if is_begin { BEGIN } else { END }
}

fn text_of(lines: &[(Line, u8)]) -> String {
    let mut s = String::new();
    for (l, eol) in lines {
        match l {
            Line::Begin => s.push_str(BEGIN),
            Line::End => s.push_str(END),
            Line::Commented(b) => s.push_str(&format!("# {}", marker(*b))),
            Line::Indented(b) => s.push_str(&format!(" {}", marker(*b))),
            Line::Suffixed(b, t) => s.push_str(&format!("{}{t}", marker(*b))),
            Line::Entry(ip, n) => s.push_str(&format!("{ip}\t{}", host(*n))),
            Line::Text(t) => s.push_str(t),
        }
        s.push_str(["\n", "\r\n", "", "\r", "\n\n"][usize::from(*eol) % 5]);
    }
    s
}

fn names(v: &[(IpAddr, u8)]) -> Vec<(IpAddr, String)> {
    v.iter().map(|(ip, n)| (*ip, host(*n))).collect()
}

/// Whether `x` has a BEGIN line with an END line after it: a block of ours that remove takes out.
fn has_block(x: &str) -> bool {
    let mut open = false;
    for l in x.split('\n') {
        let l = l.strip_suffix('\r').unwrap_or(l);
        if l == BEGIN {
            open = true;
        } else if l == END && open {
            return true;
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (x, n, m) = if mode % 2 == 0 {
        let default = vec![(
            "169.254.254.254".parse().unwrap(),
            "registry.home".to_string(),
        )];
        (
            String::from_utf8_lossy(rest).into_owned(),
            default.clone(),
            default,
        )
    } else {
        let Ok(b) = Built::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        (text_of(&b.lines), names(&b.first), names(&b.second))
    };
    let _ = damage(&x);
    let applied = render(&x, &n);
    let _ = damage(&applied);
    assert_eq!(
        remove_block(&applied),
        remove_block(&x),
        "remove(apply(x)) != remove(x) for {x:?}"
    );
    if !has_block(&x) {
        assert_eq!(remove_block(&x), x, "remove changed a file without a block");
    }
    assert_eq!(
        render(&applied, &n),
        applied,
        "apply is not idempotent on {x:?}"
    );
    // Only after an apply with names: an empty list is a remove, and the block it took out may
    // have stood mid-file where the next apply appends one at the end (crash-7eb80e2f, found by
    // this target, is such a file: a valid result either way).
    if !n.is_empty() {
        assert_eq!(
            render(&applied, &m),
            render(&x, &m),
            "a second apply kept the first's names"
        );
    }
    for (ip, h) in &n {
        let line = format!("{ip}\t{h}");
        assert!(
            applied
                .split('\n')
                .any(|l| l.trim_end_matches('\r') == line),
            "{line} not on a line of its own in {applied:?}"
        );
    }
});
