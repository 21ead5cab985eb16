//! Garbage collection and fsck against a registry filled through its HTTP API.

use std::time::Duration;

use crate::common::{OCI_MANIFEST, TestRegistry, image_manifest, open_storage, skipped_on_s3};
use registryd::lifecycle::fsck::{self, FsckOptions};
use registryd::lifecycle::gc::{self, GcOptions, GcReport};
use registryd::registry::Digest;
use registryd::storage::Storage;

fn opts(dry_run: bool, delete_untagged: bool, grace_secs: u64) -> GcOptions {
    GcOptions {
        dry_run,
        delete_untagged,
        grace: Duration::from_secs(grace_secs),
        upload_max_age: Duration::from_secs(86400),
        lock_wait: Duration::from_secs(5),
        retention: Default::default(),
    }
}

async fn run_gc(root: &std::path::Path, o: &GcOptions) -> GcReport {
    // Blob times have the filesystem's granularity: let "now" move past the last write.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let storage = open_storage(root);
    gc::collect(&storage, o, &|_, _, _| {})
        .await
        .unwrap()
        .expect("no other collector")
}

async fn run_fsck(storage: &Storage, repair: bool) -> fsck::FsckReport {
    fsck::check(storage, &FsckOptions { repair, jobs: 2 }, &|_, _| {})
        .await
        .unwrap()
}

/// Pushes config + the given layers as an image tagged `tag`; returns (manifest digest, layers).
async fn push(reg: &TestRegistry, repo: &str, tag: &str, layers: &[&str]) -> (Digest, Vec<Digest>) {
    let config = format!(
        r#"{{"os":"linux","tag":"{tag}","layers":{}}}"#,
        layers.len()
    );
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let mut ls = Vec::new();
    for l in layers {
        ls.push((reg.push_blob(repo, l.as_bytes()).await, l.len()));
    }
    let refs: Vec<(&Digest, usize)> = ls.iter().map(|(d, s)| (d, *s)).collect();
    let m = image_manifest(&c, config.len(), &refs, None, None);
    let d = reg.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    let mut all = vec![c];
    all.extend(ls.into_iter().map(|(d, _)| d));
    (d, all)
}

async fn status(reg: &TestRegistry, path: &str) -> u16 {
    reg.req("GET", path)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn gc_removes_only_what_no_manifest_references_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let (da, blobs_a) = push(&reg, "app", "v1", &["shared-layer", "only-in-a"]).await;
    let (db, blobs_b) = push(&reg, "app", "v2", &["shared-layer", "only-in-b"]).await;
    let r = reg.send("DELETE", &format!("/v2/app/manifests/{db}")).await;
    assert_eq!(r.status(), 202);

    let dry = run_gc(dir.path(), &opts(true, false, 0)).await;
    // B's config, B's own layer and B's manifest blob.
    assert_eq!(dry.blobs_removed, 3, "{dry:?}");
    assert!(dry.dry_run);
    assert_eq!(
        status(&reg, &format!("/v2/app/blobs/{}", blobs_b[2])).await,
        200
    );

    let done = run_gc(dir.path(), &opts(false, false, 0)).await;
    assert_eq!(done.blobs_removed, 3, "{done:?}");
    assert_eq!(done.bytes_freed, dry.bytes_freed);
    assert_eq!(
        status(&reg, &format!("/v2/app/blobs/{}", blobs_b[2])).await,
        404
    );
    assert_eq!(
        status(&reg, &format!("/v2/app/blobs/{}", blobs_b[0])).await,
        404
    );
    let storage = open_storage(dir.path());
    assert!(
        storage
            .blob_size_global(&blobs_b[2])
            .await
            .unwrap()
            .is_none()
    );
    // A is whole: manifest by tag and every blob, the shared layer included.
    assert_eq!(status(&reg, "/v2/app/manifests/v1").await, 200);
    for b in &blobs_a {
        assert_eq!(status(&reg, &format!("/v2/app/blobs/{b}")).await, 200);
    }
    assert_eq!(status(&reg, &format!("/v2/app/manifests/{da}")).await, 200);
    // A second pass finds nothing more.
    let again = run_gc(dir.path(), &opts(false, false, 0)).await;
    assert_eq!(again.blobs_removed, 0, "{again:?}");
    reg.stop().await;
}

#[tokio::test]
async fn grace_keeps_a_push_paused_between_layers_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let config = br#"{"os":"linux","paused":true}"#;
    let c = reg.push_blob("paused", config).await;
    let l = reg
        .push_blob("paused", b"uploaded, manifest not sent yet")
        .await;
    let report = run_gc(dir.path(), &opts(false, false, 3600)).await;
    assert_eq!(report.blobs_removed, 0, "{report:?}");
    assert_eq!(report.blobs_young_kept, 2, "{report:?}");
    // The push completes after the pass.
    let m = image_manifest(&c, config.len(), &[(&l, 31)], None, None);
    reg.put_manifest("paused", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(status(&reg, "/v2/paused/manifests/v1").await, 200);
    reg.stop().await;
}

#[tokio::test]
async fn delete_untagged_removes_retagged_images_and_expired_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let (old, old_blobs) = push(&reg, "svc", "latest", &["old-layer"]).await;
    let (new, new_blobs) = push(&reg, "svc", "latest", &["new-layer"]).await;
    let upload = reg.start_upload("svc").await;
    let r = reg
        .req("PATCH", &upload)
        .body(b"abandoned".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Without --delete-untagged the old image stays (addressable by digest).
    let keep = run_gc(dir.path(), &opts(false, false, 0)).await;
    assert_eq!(keep.manifests_removed, 0);
    assert_eq!(status(&reg, &format!("/v2/svc/manifests/{old}")).await, 200);

    let mut o = opts(false, true, 0);
    o.upload_max_age = Duration::ZERO;
    let r = run_gc(dir.path(), &o).await;
    assert_eq!(r.manifests_removed, 1, "{r:?}");
    assert_eq!(r.uploads_removed, 1, "{r:?}");
    assert_eq!(status(&reg, &format!("/v2/svc/manifests/{old}")).await, 404);
    assert_eq!(
        status(&reg, &format!("/v2/svc/blobs/{}", old_blobs[1])).await,
        404
    );
    assert_eq!(status(&reg, &format!("/v2/svc/manifests/{new}")).await, 200);
    assert_eq!(status(&reg, "/v2/svc/manifests/latest").await, 200);
    for b in &new_blobs {
        assert_eq!(status(&reg, &format!("/v2/svc/blobs/{b}")).await, 200);
    }
    assert_eq!(reg.send("GET", &upload).await.status(), 404);
    reg.stop().await;
}

#[tokio::test]
async fn fsck_finds_and_repairs_planted_damage() {
    if skipped_on_s3("damage planted on a filesystem; tests/system/s3.sh plants it in the bucket") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let (_, a) = push(&reg, "x", "flip", &["a layer whose byte flips"]).await;
    let (_, b) = push(&reg, "x", "gone", &["a layer that disappears"]).await;
    let (mc, _) = push(&reg, "x", "trunc", &["a layer under a truncated manifest"]).await;
    let storage = Storage::open(dir.path()).unwrap();
    let l = storage.layout();
    let clean = run_fsck(&storage, false).await;
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);

    let flip = l.blob_data(&a[1]);
    let mut bytes = std::fs::read(&flip).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&flip, bytes).unwrap();
    std::fs::remove_dir_all(l.blob_dir(&b[1])).unwrap();
    let m = l.blob_data(&mc);
    let len = std::fs::metadata(&m).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let found = run_fsck(&storage, false).await;
    let kinds: Vec<&str> = found.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "corrupt-blob").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"dangling-layer-link"), "{kinds:?}");
    assert!(kinds.contains(&"missing-referenced-blob"), "{kinds:?}");
    assert!(found.problems.iter().all(|p| !p.repaired));
    assert!(flip.exists(), "fsck without --repair changed nothing");

    let repaired = run_fsck(&storage, true).await;
    let corrupt: Vec<_> = repaired
        .problems
        .iter()
        .filter(|p| p.kind == "corrupt-blob")
        .collect();
    assert!(corrupt.iter().all(|p| p.repaired), "{corrupt:?}");
    // Quarantined, not deleted: the bytes are kept aside for inspection.
    assert!(l.quarantine_dir(&a[1]).join("data").exists());
    assert!(l.quarantine_dir(&mc).join("data").exists());
    assert!(!flip.exists());
    // The truncated manifest's revision and tag went with it; the flipped layer is no longer served.
    assert_eq!(status(&reg, "/v2/x/manifests/trunc").await, 404);
    assert_eq!(status(&reg, &format!("/v2/x/blobs/{}", a[1])).await, 404);
    // What remains is what cannot be repaired without the data: manifests naming missing layers.
    let after = run_fsck(&storage, false).await;
    assert!(
        after
            .problems
            .iter()
            .all(|p| p.kind == "missing-referenced-blob"),
        "{:?}",
        after.problems
    );
    reg.stop().await;
}

#[tokio::test]
async fn a_blob_that_fails_its_digest_while_served_is_cut_off_and_quarantined() {
    if skipped_on_s3("damage planted on a filesystem; tests/system/s3.sh plants it in the bucket") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let good = vec![7u8; 3 * 1024 * 1024];
    let d = reg.push_blob("rot", &good).await;
    let storage = Storage::open(dir.path()).unwrap();
    let path = storage.layout().blob_data(&d);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1_000_000] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let r = reg.send("GET", &format!("/v2/rot/blobs/{d}")).await;
    assert_eq!(
        r.status(),
        200,
        "headers go out before the check can finish"
    );
    let body = r.bytes().await;
    assert!(
        body.as_ref().map_or(true, |b| b.len() < good.len()),
        "a corrupt blob was sent whole"
    );
    let mut gone = false;
    for _ in 0..50 {
        if status(&reg, &format!("/v2/rot/blobs/{d}")).await == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "corrupt blob still served");
    assert!(storage.layout().quarantine_dir(&d).join("data").exists());

    // A healthy blob is served whole, checked once.
    let ok = reg.push_blob("rot", b"healthy bytes").await;
    for _ in 0..2 {
        let r = reg.send("GET", &format!("/v2/rot/blobs/{ok}")).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"healthy bytes");
    }
    reg.stop().await;
}

#[tokio::test]
async fn an_abandoned_upload_in_an_otherwise_empty_repository_expires() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let upload = reg.start_upload("lonely/first-push").await;
    let r = reg
        .req("PATCH", &upload)
        .body(b"the first layer, never finished".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut o = opts(false, false, 0);
    o.upload_max_age = Duration::ZERO;
    let r = run_gc(dir.path(), &o).await;
    assert_eq!(r.uploads_removed, 1, "{r:?}");
    assert_eq!(reg.send("GET", &upload).await.status(), 404);
    reg.stop().await;
}

#[tokio::test]
async fn what_a_dead_cache_fetch_left_is_removed_and_a_live_one_is_kept() {
    if skipped_on_s3(
        "on a bucket a fill's lease lapses only minutes after its holder dies; \
         tests/system/s3.sh checks the bucket's side with objects it leaves there itself",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let fills = dir.path().join("registryd/proxy/fills");
    std::fs::create_dir_all(&fills).unwrap();
    // A fetch that died: its partial file and size, no one holding its lock.
    let dead = "a".repeat(64);
    std::fs::write(fills.join(format!("{dead}.partial")), b"half of a layer").unwrap();
    std::fs::write(fills.join(format!("{dead}.size")), b"30").unwrap();
    // A fetch that is alive (its lease held) and written to just as long ago.
    let digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    let mut live = storage.try_lead_fill(&digest).await.unwrap().expect("lead");
    live.begin(Some(10)).await.unwrap();
    live.write(bytes::Bytes::from_static(b"12345"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut o = opts(true, false, 0);
    o.upload_max_age = Duration::ZERO;
    let r = run_gc(dir.path(), &o).await;
    assert_eq!(r.fills_removed, 1, "dry run counts the dead fill: {r:?}");
    assert!(fills.join(format!("{dead}.partial")).exists());

    o.dry_run = false;
    let r = run_gc(dir.path(), &o).await;
    assert_eq!(r.fills_removed, 1, "{r:?}");
    assert!(!fills.join(format!("{dead}.partial")).exists());
    assert!(!fills.join(format!("{dead}.size")).exists());
    let hex = digest.hex();
    assert!(
        fills.join(format!("{hex}.partial")).exists(),
        "the live fill was touched"
    );
    drop(live);
}

/// A push waits for a sweep that holds the lock longer than one storage call may take (pushes
/// wait up to a minute): the soak's pushes got 503 "storage did not answer" during sweeps, because
/// the whole wait was one call bounded by the operation timeout.
#[tokio::test]
async fn a_push_waits_for_a_sweep_longer_than_the_operation_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Storage::open_with(dir.path(), Duration::from_secs(1), 4).unwrap();
    let node = Storage::open_with(dir.path(), Duration::from_secs(1), 4).unwrap();
    let sweep = collector
        .sweep_lock(true, Duration::from_secs(1))
        .await
        .unwrap();
    let push = tokio::spawn(async move {
        node.sweep_lock(false, Duration::from_secs(20))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !push.is_finished(),
        "the push stopped waiting: {:?}",
        push.await
    );
    drop(sweep);
    push.await
        .unwrap()
        .expect("the push's lock once the sweep ended");
}
