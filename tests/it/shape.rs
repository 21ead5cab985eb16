//! The shape of `src/` that ARCHITECTURE.md draws, checked on every test run so it cannot drift:
//! short files, parts that do not read the configuration, one place that knows which storage
//! driver is in use, and dependencies between modules that go one way only.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may grow before it is split by concern.
const MAX_LINES: usize = 700;

/// Parts the daemon hands typed settings to; they never read `Config` themselves.
const CONFIG_FREE: &[&str] = &["storage", "http", "auth", "proxy"];

/// Where the storage facade dispatches to its driver: the files directly in `src/storage/`
/// (`storage/fs/` and `storage/s3/` are the drivers themselves).
fn is_storage_facade(rel: &str) -> bool {
    rel.strip_prefix("storage/")
        .is_some_and(|file| !file.contains('/'))
}

struct Source {
    /// Path under `src/`, with `/` separators.
    rel: String,
    /// Module path: `storage/fs/blobs.rs` is `["storage", "fs", "blobs"]`.
    module: Vec<String>,
    /// The text before the first `#[cfg(test)]`: what the shipped daemon is made of.
    code: String,
    lines: usize,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text.clone(),
            };
            let mut module: Vec<String> = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_string)
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            Source {
                rel,
                module,
                code,
                lines: text.lines().count(),
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_outgrows_the_limit() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.lines > MAX_LINES)
        .map(|s| format!("src/{} ({} lines)", s.rel, s.lines))
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern (limit {MAX_LINES} lines): {long:?}"
    );
}

#[test]
fn parts_take_typed_settings_not_the_config() {
    let readers: Vec<String> = sources()
        .iter()
        .filter(|s| CONFIG_FREE.contains(&s.module.first().map_or("", String::as_str)))
        .filter(|s| s.code.contains("crate::config"))
        .map(|s| format!("src/{}", s.rel))
        .collect();
    assert!(
        readers.is_empty(),
        "{CONFIG_FREE:?} get their settings from the daemon, yet these read the config: {readers:?}"
    );
}

#[test]
fn only_the_storage_dispatch_asks_which_driver_it_is_on() {
    // A driver variant named (`Driver::Fs`, `Driver::S3`; not `StorageDriver::`, the setting),
    // or the storage asked whether it is a bucket.
    let names_a_driver = |code: &str| {
        [".is_s3()", "self.s3()", ".s3_arc()"]
            .iter()
            .any(|p| code.contains(p))
            || ["Driver::Fs", "Driver::S3"].iter().any(|p| {
                code.match_indices(p).any(|(i, _)| {
                    !code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
            })
    };
    let askers: Vec<String> = sources()
        .iter()
        .filter(|s| !is_storage_facade(&s.rel))
        .filter(|s| names_a_driver(&s.code))
        .map(|s| format!("src/{}", s.rel))
        .collect();
    assert!(
        askers.is_empty(),
        "only the storage facade (src/storage/*.rs) dispatches to a driver; these branch on it too: {askers:?}"
    );
}

/// The module paths a `use` tree names after `crate::` or `super::`: `a::{b, c::d}` is `a::b`
/// and `a::c::d`.
fn expand(s: &str) -> Vec<Vec<String>> {
    if let Some(inner) = s.strip_prefix('{') {
        let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items.iter().flat_map(|i| expand(i.trim())).collect();
    }
    let (mut segs, mut rest) = (Vec::new(), s);
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !ident.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => {
                return expand(r)
                    .into_iter()
                    .map(|p| segs.iter().cloned().chain(p).collect())
                    .collect();
            }
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![segs]
}

/// Every module a module names through `crate::` or `super::` paths (comments aside), resolved
/// to the module file that defines it.
fn imports(all: &[Source]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = all.iter().map(|s| s.module.clone()).collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|p| known.contains(p))
    };
    let mut graph = BTreeMap::new();
    for s in all {
        let code: String = s
            .code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut to = BTreeSet::new();
        let mut rest = code.as_str();
        while let Some(i) = rest.find(['c', 's']) {
            let preceded_by_path = rest[..i].ends_with("::");
            rest = &rest[i..];
            let (base, after) = if let Some(r) = rest.strip_prefix("crate::") {
                (Vec::new(), r)
            } else if rest.starts_with("super::") && !preceded_by_path {
                // Each `super` is one step up from the module the file defines.
                let (mut up, mut r) = (s.module.clone(), rest);
                while let Some(next) = r.strip_prefix("super::") {
                    up = parent(&up);
                    r = next;
                }
                (up, r)
            } else {
                rest = &rest[1..];
                continue;
            };
            for path in expand(after) {
                let full: Vec<String> = base.iter().cloned().chain(path).collect();
                if let Some(m) = resolve(&full).filter(|m| *m != s.module) {
                    to.insert(m);
                }
            }
            rest = after;
        }
        graph.insert(s.module.clone(), to);
    }
    graph
}

fn parent(m: &[String]) -> Vec<String> {
    m[..m.len().saturating_sub(1)].to_vec()
}

#[test]
fn no_two_modules_import_each_other() {
    let all = sources();
    // Compare modules as siblings: `storage::fill` importing `storage::s3::client` is
    // `storage::fill -> storage::s3`; a module using its own parent or child is not a pair.
    let mut edges = BTreeSet::new();
    for (from, tos) in imports(&all) {
        for to in tos {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                edges.insert((from[..=common].join("::"), to[..=common].join("::")));
            }
        }
    }
    let cycles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    assert!(
        cycles.is_empty(),
        "dependencies must go one way; these modules import each other: {cycles:?}"
    );
}
