//! `registryd gc` and `registryd fsck`: the lifecycle passes run by hand (or from a systemd timer),
//! safe while the daemons run. Exit codes say what happened, so a timer can alert.

use std::process::ExitCode;
use std::time::Duration;

use super::fsck::{self, FsckOptions};
use super::gc::{self, GcOptions, Phase};
use super::progress_line;
use super::retention::RetentionOptions;
use crate::config::Config;
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::storage::{Storage, StorageError};

/// Opens the configured storage for a command, checking the mount guard first (a command must not
/// write under an unmounted directory either).
pub fn open_storage(config: &Config, cmd: &str) -> Result<Storage, ExitCode> {
    if !config.storage.require_mount.is_empty() {
        let guard = crate::node::mount::MountGuard::new(
            &config.storage.require_mount,
            Some(config.storage.require_fstype.clone()),
        );
        if let Err(e) = guard.check() {
            eprintln!("registryd {cmd}: storage is not usable: {e}");
            return Err(ExitCode::FAILURE);
        }
    }
    let opened = config
        .storage_settings()
        .and_then(|s| Storage::from_settings(&s, 64));
    let storage = opened.map_err(|e| {
        eprintln!("registryd {cmd}: {e}");
        ExitCode::FAILURE
    })?;
    Ok(storage)
}

pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("registryd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The options a configuration gives a GC pass.
pub fn gc_options(config: &Config, dry_run: bool, delete_untagged: bool) -> GcOptions {
    GcOptions {
        dry_run,
        delete_untagged: delete_untagged || config.gc.delete_untagged,
        grace: Duration::from_secs(config.gc.grace_secs),
        upload_max_age: Duration::from_secs(config.gc.upload_max_age_secs),
        lock_wait: Duration::from_secs(config.storage.operation_timeout_secs),
        retention: RetentionOptions {
            rules: std::sync::Arc::new(config.rules()),
            cache_prefixes: config.upstream.iter().flat_map(|u| u.prefixes()).collect(),
        },
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// `registryd gc`: exit 0 when the pass ran, 3 when another node's collector holds the lock.
pub fn gc(config: &Config, dry_run: bool, delete_untagged: bool, json: bool) -> ExitCode {
    let storage = match open_storage(config, "gc") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opts = gc_options(config, dry_run, delete_untagged);
    let progress = |phase: Phase, done: usize, total: usize| {
        let label = match phase {
            Phase::Mark => "mark",
            Phase::Sweep => "sweep",
        };
        progress_line(label, done, total);
    };
    match rt.block_on(gc::collect(&storage, &opts, &progress)) {
        Ok(Some(r)) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                let verb = if r.dry_run { "would remove" } else { "removed" };
                print_retention(&r.retention, r.dry_run);
                println!(
                    "{} repositories, {} manifests, {} blobs checked",
                    r.repositories, r.manifests, r.blobs
                );
                println!(
                    "{verb}: {} blobs ({}), {} untagged manifests, {} layer links, {} abandoned uploads, {} abandoned cache fills, {} tags by retention rules",
                    r.blobs_removed,
                    mib(r.bytes_freed),
                    r.manifests_removed,
                    r.layer_links_removed,
                    r.uploads_removed,
                    r.fills_removed,
                    r.tags_removed
                );
                if r.blobs_young_kept > 0 {
                    println!(
                        "kept {} unreferenced blobs younger than gc.grace_secs ({} s)",
                        r.blobs_young_kept, config.gc.grace_secs
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "registryd gc: another collector is running on this storage (lock registryd/locks/gc.lock); nothing done"
            );
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("registryd gc: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Per repository a retention rule covers: each tag that goes (or would) and why, then each tag
/// kept and the rules that keep it.
fn print_retention(repos: &[super::retention::RepoRetention], dry_run: bool) {
    let untag = if dry_run { "would untag" } else { "untagged" };
    for r in repos {
        println!("{} ({})", r.repository, r.rule);
        for t in &r.removed {
            println!(
                "  {untag:<11} {}  {}  {}",
                t.tag,
                short(&t.digest),
                t.reasons.join("; ")
            );
        }
        for t in &r.moved_meanwhile {
            println!("  {:<11} {t}  moved while the pass ran: left alone", "kept");
        }
        for t in &r.kept {
            println!(
                "  {:<11} {}  {}  {}",
                "kept",
                t.tag,
                short(&t.digest),
                t.reasons.join("; ")
            );
        }
    }
}

/// `sha256:` and the first 12 hex digits: enough to tell manifests apart on a terminal.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// `registryd fsck`: exit 0 when everything checks out, 4 when problems were found (repaired or
/// not; the list says which), 1 when the check itself failed.
pub fn fsck(config: &Config, repair: bool, json: bool) -> ExitCode {
    let storage = match open_storage(config, "fsck") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let opts = FsckOptions { repair, jobs };
    let progress = |done: usize, total: usize| progress_line("verify", done, total);
    match rt.block_on(fsck::check(&storage, &opts, &progress)) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "{} blobs ({}) verified, {} repositories checked",
                    r.blobs_checked,
                    mib(r.bytes_checked),
                    r.repositories
                );
                for p in &r.problems {
                    let state = if p.repaired { "repaired" } else { "found" };
                    println!("{state} {}: {}", p.kind, p.what);
                }
                if r.problems.is_empty() {
                    println!("no problems");
                } else if !repair {
                    println!(
                        "run `registryd fsck --repair` to quarantine corrupt blobs and drop dangling links"
                    );
                }
            }
            if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            }
        }
        Err(e) => {
            eprintln!("registryd fsck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `registryd untag REPO:TAG`: removes one tag on the node; a tag an immutable rule covers only
/// with `--force`. Exit 2: not a `REPO:TAG`; 1: refused or failed.
pub fn untag(config: &Config, reference: &str, force: bool) -> ExitCode {
    let parsed = reference
        .rsplit_once(':')
        .and_then(|(r, t)| Some((r.parse::<RepoName>().ok()?, t.parse::<Tag>().ok()?)));
    let Some((repo, tag)) = parsed else {
        eprintln!(
            "registryd untag: {reference:?} is not REPO:TAG (a repository name and a tag, as in ci/app:v1.2)"
        );
        return ExitCode::from(2);
    };
    let rules = config.rules();
    let immutable = rules.immutable(repo.as_str(), tag.as_str());
    if let (Some(rule), false) = (immutable, force) {
        eprintln!(
            "registryd untag: {repo}:{tag} is immutable ({rule}); add --force to remove it anyway"
        );
        return ExitCode::FAILURE;
    }
    let storage = match open_storage(config, "untag") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let (digest, _) = storage
            .resolve_manifest(&repo, &Reference::Tag(tag.clone()))
            .await?;
        storage.delete_tag(&repo, &tag).await?;
        Ok::<_, StorageError>(digest)
    });
    match result {
        Ok(digest) => {
            let how = match immutable {
                Some(rule) => format!(" despite {rule} (--force)"),
                None => String::new(),
            };
            let line = format!(
                "untagged {repo}:{tag}{how}; it named {digest}, which stays until GC removes it untagged"
            );
            println!("{line}");
            audit(&line, &repo, &tag, &digest, immutable.is_some());
            ExitCode::SUCCESS
        }
        Err(StorageError::ManifestUnknown) => {
            eprintln!("registryd untag: {repo}:{tag}: no such tag");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("registryd untag: {repo}:{tag}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Records a removal by hand in the journal (when there is one) with the fields the daemon's
/// own log lines carry, so it can be found beside retention's.
fn audit(line: &str, repo: &RepoName, tag: &Tag, digest: &Digest, forced: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    let Ok(journal) = tracing_journald::layer() else {
        return;
    };
    let subscriber = tracing_subscriber::registry()
        .with(journal.with_syslog_identifier("registryd".to_string()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            repository = %repo,
            tag = %tag,
            digest = %digest,
            forced,
            "{line}"
        );
    });
}
