//! Watching configuration files that operators replace while the daemon runs (the certificate pair,
//! the htpasswd file): inotify on their directories, since editors and `cert-manager`-style tools
//! replace a file by renaming a new one over it, which a watch on the file itself would miss.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::shutdown::Shutdown;

/// Calls `on_change` (on a blocking thread) after each burst of changes in the directories holding
/// `files`, once the burst has been quiet for 200 ms: a rotation is several events, and acting on
/// the first could read a half-written file. The watch lasts until `shutdown`.
pub fn watch_files(
    files: &[PathBuf],
    shutdown: Shutdown,
    on_change: impl Fn() + Send + Sync + 'static,
) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let relevant = match ev.kind {
                // Opening and reading (our own loads among them) change nothing.
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            };
            // Only our files, or the `..data` symlink and `..<timestamp>` directories that
            // Kubernetes and Nomad swap; a log file in the same directory must not trigger
            // reloads (whose log lines would trigger more).
            let ours = ev.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    names.iter().any(|w| w == n) || n.to_string_lossy().starts_with("..")
                })
            });
            if relevant && ours {
                let _ = tx.send(());
            }
        }
    })?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let on_change = std::sync::Arc::new(on_change);
    tokio::spawn(async move {
        // The inotify watch is this task's: it ends with it.
        let _watcher = watcher;
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                _ = shutdown.recv() => return,
            }
            loop {
                match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let f = on_change.clone();
            let _ = tokio::task::spawn_blocking(move || f()).await;
        }
    });
    Ok(())
}
