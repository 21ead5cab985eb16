//! Heartbeats on the shared storage: every node rewrites its own small file
//! (`registryd/nodes/<node>.json`, see [`layout`](super::layout)) each beat, and reads everyone's
//! to list the cluster. One file per node, never a shared file that nodes read, change and
//! rewrite (ARCHITECTURE.md, durability rule 4): two nodes beating at once never lose a beat.

use std::io;
use std::time::SystemTime;

use super::pool::bounded;
use super::{Driver, Result, Storage, StorageError};
use crate::status::{Heartbeat, NodeName};

impl Storage {
    /// Writes `beat` as its node's heartbeat, replacing the previous one whole (readers on any
    /// node see the old beat or the new one). A beat whose node is not a valid [`NodeName`] is
    /// refused: its name becomes a file name.
    pub async fn write_heartbeat(&self, beat: &Heartbeat) -> Result<()> {
        let node = NodeName::parse(&beat.node)
            .map_err(|e| StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let bytes = serde_json::to_vec_pretty(beat).map_err(io::Error::other)?;
        match self.driver() {
            Driver::Fs(fs) => fs.write_heartbeat(&node, bytes).await,
            Driver::S3(s3) => bounded(self.timeout(), s3.write_heartbeat(&node, bytes)).await,
        }
    }

    /// Every node's last heartbeat, sorted by node. A file that does not parse is listed too, as
    /// a node not ready with the reason, dated by when the file was written (so it goes stale
    /// and is forgotten like any beat): the cluster page must not hide a node it cannot read.
    pub async fn heartbeats(&self) -> Result<Vec<Heartbeat>> {
        let files = match self.driver() {
            Driver::Fs(fs) => fs.heartbeats().await?,
            Driver::S3(s3) => bounded(self.timeout(), s3.heartbeats()).await?,
        };
        let mut beats: Vec<Heartbeat> = files
            .into_iter()
            .map(|(node, bytes, written)| parse(node, &bytes, written))
            .collect();
        beats.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(beats)
    }

    /// Removes the heartbeat of `node` (a node gone for good); a missing one is no error.
    pub async fn remove_heartbeat(&self, node: &NodeName) -> Result<()> {
        match self.driver() {
            Driver::Fs(fs) => fs.remove_heartbeat(node).await,
            Driver::S3(s3) => bounded(self.timeout(), s3.remove_heartbeat(node)).await,
        }
    }
}

/// The beat in a file of `node`'s written at `written`. The file's name says whose it is: a
/// beat copied under another name is listed under the name it is stored as.
fn parse(node: NodeName, bytes: &[u8], written: SystemTime) -> Heartbeat {
    match serde_json::from_slice::<Heartbeat>(bytes) {
        Ok(mut beat) => {
            beat.node = node.to_string();
            beat
        }
        Err(e) => Heartbeat {
            node: node.to_string(),
            ready: false,
            reason: Some(format!("its heartbeat file does not parse: {e}")),
            seen: Some(written),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_beat_is_listed_not_ready_and_dated_by_its_file() {
        let node = NodeName::parse("b").unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5);
        let beat = parse(node.clone(), b"{not json", at);
        assert_eq!(beat.node, "b");
        assert!(!beat.ready);
        assert!(beat.reason.unwrap().contains("does not parse"));
        assert_eq!(beat.seen, Some(at));
        let copied = serde_json::to_vec(&Heartbeat {
            node: "a".into(),
            ready: true,
            ..Default::default()
        })
        .unwrap();
        let beat = parse(node, &copied, at);
        assert_eq!(
            (beat.node.as_str(), beat.ready, beat.seen),
            ("b", true, None)
        );
    }
}
