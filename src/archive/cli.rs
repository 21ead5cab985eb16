//! `registryd import` and `registryd export`: what they print and their exit codes (0 done, 1 an
//! archive or image failed, 2 configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::lifecycle::cli::{open_storage, runtime};
use crate::lifecycle::progress_line;
use crate::registry::RepoName;

pub fn import(config: &Config, repo: Option<&str>, files: &[PathBuf]) -> ExitCode {
    let repo: Option<RepoName> = match repo.map(str::parse).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("registryd import: --repo: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(storage) = open_storage(config, "import") else {
        return ExitCode::FAILURE;
    };
    let Ok(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let rules = config.rules();
    let mut failed = false;
    for f in files {
        let mut progress = |label: &str, done: u64, total: u64| {
            progress_line(label, done as usize, total as usize)
        };
        match super::import::import(&rt, &storage, f, repo.as_ref(), &rules, &mut progress) {
            Ok(r) => {
                for w in &r.warnings {
                    eprintln!("registryd import: warning: {}: {w}", f.display());
                }
                for (repo, tag, digest) in &r.images {
                    match tag {
                        Some(t) => println!("{repo}:{} {digest}", t.as_str()),
                        None => println!("{repo}@{digest}"),
                    }
                }
                println!(
                    "imported {} ({} layout): {} manifests, {} blobs stored ({} bytes), {} already present",
                    f.display(),
                    r.layout,
                    r.manifests,
                    r.blobs_stored,
                    r.bytes_stored,
                    r.blobs_present
                );
            }
            Err(e) => {
                eprintln!("registryd import: {}: {e:#}", f.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn export(config: &Config, refs: &[String], out: &Path) -> ExitCode {
    let Ok(storage) = open_storage(config, "export") else {
        return ExitCode::FAILURE;
    };
    let Ok(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut progress =
        |label: &str, done: u64, total: u64| progress_line(label, done as usize, total as usize);
    match super::export::export(&rt, &storage, refs, out, &mut progress) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("registryd export: warning: {w}");
            }
            // The summary goes to stderr when the tarball itself goes to stdout.
            let mut lines = r
                .images
                .iter()
                .map(|(reference, digest)| format!("{reference} {digest}"))
                .collect::<Vec<_>>();
            lines.push(format!(
                "exported {} images to {}: {} manifests, {} blobs, {} bytes",
                r.images.len(),
                out.display(),
                r.manifests,
                r.blobs,
                r.bytes
            ));
            for l in lines {
                if out.as_os_str() == "-" {
                    eprintln!("{l}");
                } else {
                    println!("{l}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registryd export: {e:#}");
            ExitCode::FAILURE
        }
    }
}
