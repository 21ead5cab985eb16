//! Uploads in the bucket: an upload started on one node continues on another or after a restart.
//!
//! The data goes into an S3 multipart upload in parts of [`PART`] to twice [`PART`] bytes: a
//! request's last part takes everything that is left when that is at least [`PART`] (S3's minimum
//! for every part but the last), so a client sending chunks of 5 MiB or more never has bytes
//! written twice. Less than [`PART`] left over after a request is kept as a small `tail` object,
//! read back by the next request. A `state` object records the acknowledged offset, the serialized
//! sha256 state, the multipart upload and its parts. A node buffers at most two parts per upload in
//! memory, never a whole blob.

use std::io;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};
use uuid::Uuid;

use super::{S3Driver, corrupt};
use crate::registry::{Algorithm, Digest, RepoName};
use crate::storage::uploads::{body_error, keeps_partial};
use crate::storage::{Result, StorageError};

/// The smallest multipart part (S3's minimum for every part but the last); parts are sent once
/// twice this much is buffered, so an upload keeps at most `2 * PART` in memory on a node.
pub const PART: usize = 5 * 1024 * 1024;

/// How long a request waits for another node's request on the same upload: as long as a large
/// chunk may take to arrive.
const UPLOAD_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
/// An upload's lease lapses this long after its holder's last renewal (every third of it): a node
/// killed in the middle of a PATCH keeps the client's resume waiting no longer than this.
const UPLOAD_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// The most parts one multipart upload may have (S3's limit).
const MAX_PARTS: usize = 10_000;

/// An upload's progress, kept in the bucket beside its data.
#[derive(Serialize, Deserialize, Default, Clone)]
struct UploadState {
    /// Bytes acknowledged: the parts plus the tail.
    offset: u64,
    /// sha256 state over those bytes (base64 of the serialized hasher); empty at offset 0.
    sha256: String,
    /// The S3 multipart upload holding the parts, once the first part was sent.
    multipart: Option<String>,
    /// ETags of the parts, in order.
    parts: Vec<String>,
    /// The parts' sizes, in order (absent in states written when every part was [`PART`] bytes).
    #[serde(default)]
    part_sizes: Vec<u64>,
    /// Key of the object holding the bytes after the parts, if any.
    tail: Option<String>,
}

impl UploadState {
    fn hasher(&self) -> Result<Sha256> {
        if self.offset == 0 {
            return Ok(Sha256::new());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.sha256)
            .map_err(|e| corrupt(format!("upload state: {e}")))?;
        SerializedState::<Sha256>::try_from(raw.as_slice())
            .ok()
            .and_then(|s| Sha256::deserialize(&s).ok())
            .ok_or_else(|| corrupt("upload state: unreadable hash state".into()))
    }

    fn set_hasher(&mut self, sha: &Sha256) {
        self.sha256 = base64::engine::general_purpose::STANDARD.encode(sha.serialize().as_slice());
    }

    fn part_bytes(&self) -> u64 {
        self.part_sizes.iter().sum()
    }
}

/// An upload being appended to: its state, its hasher, and the bytes not yet sent as a part.
struct Appending {
    state: UploadState,
    sha: Sha256,
    buf: BytesMut,
}
impl S3Driver {
    fn state_key(&self, name: &RepoName, id: &Uuid) -> String {
        Self::key(&self.layout.upload_s3_state(name, id))
    }

    fn data_key(&self, name: &RepoName, id: &Uuid) -> String {
        Self::key(&self.layout.upload_data(name, id))
    }

    pub async fn start_upload(&self, name: &RepoName) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        self.client
            .put(
                &Self::key(&self.layout.upload_started_at(name, &id)),
                Bytes::from(now),
            )
            .await?;
        let state = serde_json::to_vec(&UploadState::default()).map_err(io::Error::other)?;
        self.client
            .put(&self.state_key(name, &id), Bytes::from(state))
            .await?;
        Ok(id)
    }

    async fn state(&self, name: &RepoName, id: &Uuid) -> Result<UploadState> {
        let bytes = self
            .client
            .get(&self.state_key(name, id))
            .await?
            .ok_or(StorageError::UploadUnknown)?;
        let mut state: UploadState =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("upload state: {e}")))?;
        if state.part_sizes.len() != state.parts.len() {
            // Written when every part was PART bytes.
            state.part_sizes = vec![PART as u64; state.parts.len()];
        }
        Ok(state)
    }

    /// The cluster's one-writer lock of an upload: the lease `upload-<uuid>`, which every node
    /// writing the upload takes (a bucket has no `flock`; see `storage::uploads`). Two requests
    /// reading the same state and each writing their next part and state would lose one's bytes.
    /// Waits while another holds it, up to [`UPLOAD_LOCK_WAIT`].
    pub async fn lock_upload(
        self: &std::sync::Arc<Self>,
        name: &RepoName,
        id: &Uuid,
    ) -> Result<super::lifecycle::Lease> {
        // An upload nobody started takes no lease object.
        self.state(name, id).await?;
        let name = format!("upload-{}", id.simple());
        self.take_lease_for(&name, UPLOAD_LOCK_WAIT, UPLOAD_LEASE, UPLOAD_LEASE / 3)
            .await?
            .ok_or_else(|| {
                StorageError::Unavailable(
                    "another request has been writing this upload for too long; retry".into(),
                )
            })
    }

    pub async fn upload_offset(&self, name: &RepoName, id: &Uuid) -> Result<u64> {
        Ok(self.state(name, id).await?.offset)
    }

    /// Loads the upload's state and its tail, ready to take more bytes at `start`.
    async fn resume(&self, name: &RepoName, id: &Uuid, start: Option<u64>) -> Result<Appending> {
        let state = self.state(name, id).await?;
        if let Some(s) = start
            && s != state.offset
        {
            return Err(StorageError::RangeMismatch(state.offset));
        }
        let sha = state.hasher()?;
        let mut buf = BytesMut::new();
        if let Some(tail) = &state.tail {
            let bytes = self
                .client
                .get(tail)
                .await?
                .ok_or_else(|| corrupt(format!("upload tail {tail} is missing")))?;
            if bytes.len() as u64 != state.offset - state.part_bytes() {
                return Err(corrupt(format!("upload tail {tail} has the wrong size")));
            }
            buf.extend_from_slice(&bytes);
        }
        Ok(Appending { state, sha, buf })
    }

    /// Sends the first `len` bytes of the buffer as the next part.
    async fn send_part(
        &self,
        name: &RepoName,
        id: &Uuid,
        a: &mut Appending,
        len: usize,
    ) -> Result<()> {
        let key = self.data_key(name, id);
        let upload_id = match &a.state.multipart {
            Some(u) => u.clone(),
            None => {
                let u = self.client.create_multipart(&key).await?;
                a.state.multipart = Some(u.clone());
                // Recorded at once, so a crash before the next checkpoint cannot leave a multipart
                // upload nobody knows to abort (the recorded offset and parts stay as they were).
                let mut recorded = self.state(name, id).await?;
                recorded.multipart = Some(u.clone());
                let body = serde_json::to_vec(&recorded).map_err(io::Error::other)?;
                self.client
                    .put(&self.state_key(name, id), Bytes::from(body))
                    .await?;
                u
            }
        };
        if a.state.parts.len() >= MAX_PARTS {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob too large for one multipart upload (10,000 parts); send larger chunks",
            )));
        }
        let part = a.buf.split_to(len).freeze();
        let number = u16::try_from(a.state.parts.len() + 1).unwrap_or(u16::MAX);
        let etag = self
            .client
            .upload_part(&key, &upload_id, number, part)
            .await?;
        a.state.parts.push(etag);
        a.state.part_sizes.push(len as u64);
        Ok(())
    }

    /// Reads `body` into the upload, sending a part whenever two are buffered (the second stays
    /// back, so that the request's last part can take what is left after it).
    async fn take_body<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        a: &mut Appending,
        mut body: S,
    ) -> Result<Option<io::Error>>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Some(e)),
            };
            a.sha.update(&chunk);
            a.state.offset += chunk.len() as u64;
            a.buf.extend_from_slice(&chunk);
            while a.buf.len() >= 2 * PART {
                self.send_part(name, id, a, PART).await?;
            }
        }
        Ok(None)
    }

    /// Records what arrived: the rest of the buffer as one more part when it is large enough,
    /// else as the new tail; then the state (the acknowledgement); then the old tail goes.
    async fn checkpoint(&self, name: &RepoName, id: &Uuid, mut a: Appending) -> Result<u64> {
        if a.buf.len() >= PART {
            let len = a.buf.len();
            self.send_part(name, id, &mut a, len).await?;
        }
        let old_tail = a.state.tail.take();
        if !a.buf.is_empty() {
            let key = Self::key(&self.layout.upload_s3_tail(name, id, a.state.offset));
            self.client.put(&key, a.buf.split().freeze()).await?;
            a.state.tail = Some(key);
        }
        a.state.set_hasher(&a.sha);
        let state = serde_json::to_vec(&a.state).map_err(io::Error::other)?;
        self.client
            .put(&self.state_key(name, id), Bytes::from(state))
            .await?;
        if let Some(old) = old_tail
            && Some(&old) != a.state.tail.as_ref()
        {
            self.client.delete(&old).await?;
        }
        Ok(a.state.offset)
    }

    pub async fn append_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        start: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut a = self.resume(name, id, start).await?;
        let before = a.state.offset;
        let failed = self.take_body(name, id, &mut a, body).await?;
        match failed {
            None => self.checkpoint(name, id, a).await,
            Some(e) => {
                // What arrived before the client stopped stays acknowledged, so it can resume;
                // a body refused for its size or its range acknowledges nothing.
                if keeps_partial(&e) && a.state.offset > before {
                    self.checkpoint(name, id, a).await?;
                    return Err(StorageError::Body(e));
                }
                Err(body_error(e, before))
            }
        }
    }

    pub async fn complete_upload<S>(
        &self,
        name: &RepoName,
        id: &Uuid,
        expected: &Digest,
        start: Option<u64>,
        last: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut a = self.resume(name, id, start).await?;
        let before = a.state.offset;
        if let Some(body) = last
            && let Some(e) = self.take_body(name, id, &mut a, body).await?
        {
            if keeps_partial(&e) {
                self.checkpoint(name, id, a).await?;
                return Err(StorageError::Body(e));
            }
            return Err(body_error(e, before));
        }
        let size = a.state.offset;
        let dest = Self::key(&self.layout.blob_data(expected));
        match a.state.multipart.clone() {
            None => {
                // The whole blob is in memory (less than two parts): check it, then store it.
                let bytes = a.buf.split().freeze();
                let computed = match expected.algorithm() {
                    Algorithm::Sha256 => Digest::from_sha256_output(&a.sha.clone().finalize()),
                    Algorithm::Sha512 => Digest::from_sha512_output(&Sha512::digest(&bytes)),
                };
                if &computed != expected {
                    return self.reject(name, id, None, expected, computed).await;
                }
                if self.client.head(&dest).await? != Some(size) {
                    self.client.put(&dest, bytes).await?;
                }
            }
            Some(upload_id) => {
                let data = self.data_key(name, id);
                if expected.algorithm() == Algorithm::Sha256 {
                    let computed = Digest::from_sha256_output(&a.sha.clone().finalize());
                    if &computed != expected {
                        return self
                            .reject(name, id, Some(&upload_id), expected, computed)
                            .await;
                    }
                }
                if !a.buf.is_empty() {
                    // The last part may be shorter than PART.
                    let len = a.buf.len();
                    self.send_part(name, id, &mut a, len).await?;
                }
                // The assembled data sits under the upload, invisible to readers, until the
                // digest is known to match; then it is copied under the digest.
                if let Err(e) = self
                    .client
                    .complete_multipart(&data, &upload_id, &a.state.parts)
                    .await
                {
                    // A completion whose answer was lost is done all the same (a retry of it
                    // then finds no such upload): the assembled object tells.
                    if self.client.head(&data).await? != Some(size) {
                        return Err(e);
                    }
                }
                if expected.algorithm() == Algorithm::Sha512 {
                    let computed = self.hash_object_sha512(&data, size).await?;
                    if &computed != expected {
                        return self.reject(name, id, None, expected, computed).await;
                    }
                }
                if self.client.head(&dest).await? != Some(size) {
                    self.client.copy_sized(&data, &dest, size).await?;
                }
            }
        }
        self.link_blob(name, expected).await?;
        self.remove_upload(name, id, None).await?;
        Ok(size)
    }

    /// Drops an upload whose bytes did not hash to `expected` (aborting its multipart upload, if
    /// it is still open) and says so.
    async fn reject(
        &self,
        name: &RepoName,
        id: &Uuid,
        multipart: Option<&str>,
        expected: &Digest,
        computed: Digest,
    ) -> Result<u64> {
        self.remove_upload(name, id, multipart).await?;
        Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            computed,
        })
    }

    async fn hash_object_sha512(&self, key: &str, size: u64) -> Result<Digest> {
        let mut stream = self
            .client
            .get_range(key, 0, size)
            .await?
            .ok_or_else(|| corrupt(format!("assembled upload {key} is missing")))?;
        let mut sha = Sha512::new();
        while let Some(chunk) = stream.next().await {
            sha.update(&chunk?);
        }
        Ok(Digest::from_sha512_output(&sha.finalize()))
    }

    /// Deletes the upload's objects (and aborts its multipart upload, if one is named).
    async fn remove_upload(
        &self,
        name: &RepoName,
        id: &Uuid,
        multipart: Option<&str>,
    ) -> Result<()> {
        if let Some(u) = multipart {
            self.client
                .abort_multipart(&self.data_key(name, id), u)
                .await?;
        }
        // The state goes last: until then the upload is still known and can be cancelled again.
        let state = self.state_key(name, id);
        let listing = self
            .client
            .list(&Self::dir_key(&self.layout.upload_dir(name, id)), false)
            .await?;
        for o in listing.objects.iter().filter(|o| o.key != state) {
            self.client.delete(&o.key).await?;
        }
        self.client.delete(&state).await
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> Result<()> {
        let state = self.state(name, id).await?;
        self.remove_upload(name, id, state.multipart.as_deref())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_state_round_trips_its_hasher() {
        let mut s = UploadState {
            offset: 3,
            ..Default::default()
        };
        let mut sha = Sha256::new();
        sha.update(b"abc");
        s.set_hasher(&sha);
        let json = serde_json::to_vec(&s).expect("serializes");
        let back: UploadState = serde_json::from_slice(&json).expect("parses");
        let mut h = back.hasher().expect("hasher");
        h.update(b"def");
        assert_eq!(h.finalize(), Sha256::digest(b"abcdef"));
    }
}
