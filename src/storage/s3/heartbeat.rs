//! Heartbeat objects in a bucket: a PUT replaces a node's beat whole; the cluster is one LIST of
//! the heartbeat prefix and a GET per node (a cluster is a handful of nodes).

use std::time::SystemTime;

use bytes::Bytes;

use super::{S3Driver, last_component};
use crate::status::NodeName;
use crate::storage::Result;
use crate::storage::layout::Layout;

impl S3Driver {
    pub async fn write_heartbeat(&self, node: &NodeName, bytes: Vec<u8>) -> Result<()> {
        let key = Self::key(&self.layout.heartbeat(node));
        self.client.put(&key, Bytes::from(bytes)).await
    }

    /// Each heartbeat object: its node, its bytes, and when the store says it was written.
    pub async fn heartbeats(&self) -> Result<Vec<(NodeName, Vec<u8>, SystemTime)>> {
        let prefix = Self::dir_key(&self.layout.heartbeats_dir());
        let listing = self.client.list(&prefix, true).await?;
        let mut out = Vec::new();
        for o in listing.objects {
            let Some(node) = Layout::heartbeat_node(last_component(&o.key)) else {
                continue;
            };
            // Gone between the LIST and the GET: removed as a week-old beat, not a node any more.
            if let Some(bytes) = self.client.get(&o.key).await? {
                out.push((node, bytes.to_vec(), o.modified));
            }
        }
        Ok(out)
    }

    pub async fn remove_heartbeat(&self, node: &NodeName) -> Result<()> {
        self.client
            .delete(&Self::key(&self.layout.heartbeat(node)))
            .await
    }
}
