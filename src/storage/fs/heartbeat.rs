//! Heartbeat files on the filesystem: written atomically (temp file, fsync, rename, fsync of the
//! directory) through the pool like every storage call, so a reader on another node sees a whole
//! beat, and nothing is written under a mount point whose volume is gone.

use std::io;
use std::time::{Duration, SystemTime};

use super::{FsDriver, atomic, read_dir_if_exists};
use crate::status::NodeName;
use crate::storage::Result;
use crate::storage::layout::Layout;

/// A temp file this old in the heartbeat directory was left by a crash mid-write: removed.
const TEMP_KEPT_FOR: Duration = Duration::from_secs(3600);

impl FsDriver {
    pub async fn write_heartbeat(&self, node: &NodeName, bytes: Vec<u8>) -> Result<()> {
        let (l, path) = (self.layout.clone(), self.layout.heartbeat(node));
        self.pool
            .blocking(move || Ok(atomic::write_atomic(&l, &path, &bytes)?))
            .await
    }

    /// Each heartbeat file: its node, its bytes, and when it was written.
    pub async fn heartbeats(&self) -> Result<Vec<(NodeName, Vec<u8>, SystemTime)>> {
        let dir = self.layout.heartbeats_dir();
        self.pool
            .blocking(move || {
                let Some(entries) = read_dir_if_exists(&dir)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for e in entries {
                    let e = e?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Some(node) = Layout::heartbeat_node(&name) else {
                        remove_old_temp(&e, &name);
                        continue;
                    };
                    let read = atomic::read_retrying(&e.path()).and_then(|bytes| {
                        let written = std::fs::metadata(e.path())?.modified()?;
                        Ok((bytes, written))
                    });
                    match read {
                        Ok((bytes, written)) => out.push((node, bytes, written)),
                        // Removed by its node's week-old clean-up meanwhile: not a node any more.
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                Ok(out)
            })
            .await
    }

    pub async fn remove_heartbeat(&self, node: &NodeName) -> Result<()> {
        let path = self.layout.heartbeat(node);
        self.pool
            .blocking(move || {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                if let Some(dir) = path.parent() {
                    atomic::fsync_dir(dir)?;
                }
                Ok(())
            })
            .await
    }
}

/// Removes `e` when it is an atomic write's temp file untouched for [`TEMP_KEPT_FOR`] (fsck walks
/// Distribution's tree for such files, not registryd's own).
fn remove_old_temp(e: &std::fs::DirEntry, name: &str) {
    let old = e
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > TEMP_KEPT_FOR));
    if old && Layout::is_temp(name) {
        let _ = std::fs::remove_file(e.path());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::pool::Pool;

    fn driver(root: &std::path::Path) -> FsDriver {
        FsDriver::new(root, Arc::new(Pool::new(Duration::from_secs(30), 4, false)))
    }

    #[tokio::test]
    async fn beats_are_written_whole_listed_by_node_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = driver(dir.path());
        assert!(fs.heartbeats().await.unwrap().is_empty());
        let (a, b) = (NodeName::parse("a").unwrap(), NodeName::parse("b").unwrap());
        fs.write_heartbeat(&a, b"one".to_vec()).await.unwrap();
        fs.write_heartbeat(&a, b"two".to_vec()).await.unwrap();
        fs.write_heartbeat(&b, b"three".to_vec()).await.unwrap();
        // What a crash mid-write leaves: a fresh one stays (a write may be running), an old one goes.
        let nodes = dir.path().join("registryd/nodes");
        let fresh = nodes.join(".c.json.tmp-1");
        let stale = nodes.join(".c.json.tmp-2");
        std::fs::write(&fresh, "x").unwrap();
        std::fs::write(&stale, "x").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let mut beats = fs.heartbeats().await.unwrap();
        beats.sort_by(|x, y| x.0.cmp(&y.0));
        let got: Vec<(&str, &[u8])> = beats
            .iter()
            .map(|(n, bytes, _)| (n.as_str(), bytes.as_slice()))
            .collect();
        assert_eq!(got, [("a", &b"two"[..]), ("b", &b"three"[..])]);
        assert!(beats[0].2.elapsed().unwrap() < Duration::from_secs(60));
        assert!(fresh.exists());
        assert!(!stale.exists());
        fs.remove_heartbeat(&a).await.unwrap();
        fs.remove_heartbeat(&a).await.unwrap();
        let left: Vec<String> = fs
            .heartbeats()
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _, _)| n.to_string())
            .collect();
        assert_eq!(left, ["b"]);
    }
}
