//! What the web UI shows of repositories (`storage::summary`), against a registry filled through
//! its HTTP API, read through a second `Storage` on the same root: another node. On the S3 driver
//! when `REGISTRYD_TEST_S3_*` is set (tests/system/s3.sh).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::{
    OCI_INDEX, OCI_MANIFEST, TestRegistry, image_manifest, open_storage, s3_settings,
};
use registryd::registry::{Digest, RepoName};
use registryd::storage::Storage;
use registryd::storage::summary::{ManifestRole, S3_FACTS_FOR};

fn name(s: &str) -> RepoName {
    s.parse().unwrap()
}

/// An image of `config` and `layers` tagged `tag` (or pushed by digest with `None`); returns the
/// manifest's digest and length.
async fn push(
    reg: &TestRegistry,
    repo: &str,
    tag: Option<&str>,
    config: &str,
    layers: &[&str],
) -> (Digest, u64) {
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let mut ls = Vec::new();
    for l in layers {
        ls.push((reg.push_blob(repo, l.as_bytes()).await, l.len()));
    }
    let refs: Vec<(&Digest, usize)> = ls.iter().map(|(d, s)| (d, *s)).collect();
    let m = image_manifest(&c, config.len(), &refs, None, None);
    let reference = tag.map_or_else(|| Digest::sha256_of(&m).to_string(), str::to_string);
    let d = reg.put_manifest(repo, &reference, OCI_MANIFEST, &m).await;
    (d, m.len() as u64)
}

/// Sets every directory under `dir` an hour back, so their stamps are settled and facts of them
/// are kept (a directory changed in the last seconds is never trusted).
fn age(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

fn within(t: Option<SystemTime>, from: SystemTime, to: SystemTime) -> bool {
    // A bucket dates objects to the second, by its own clock (the same machine's here).
    let slack = Duration::from_secs(2);
    t.is_some_and(|t| t + slack >= from && t <= to + slack)
}

#[tokio::test]
async fn sizes_and_the_unique_part_of_two_repositories_sharing_a_layer() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let shared = "a layer both images have".repeat(10);
    let before = SystemTime::now();
    let (m1, m1_len) = push(
        &reg,
        "team/one",
        Some("v1"),
        "{\"c\":1}",
        &[&shared, "own1"],
    )
    .await;
    let (_, m2_len) = push(&reg, "team/two", Some("v1"), "{\"c\":22}", &[&shared]).await;
    // A second tag on the same manifest adds no bytes.
    let m1_bytes = reg
        .send("GET", &format!("/v2/team/one/manifests/{m1}"))
        .await
        .bytes()
        .await
        .unwrap();
    reg.put_manifest("team/one", "latest", OCI_MANIFEST, &m1_bytes)
        .await;
    let after = SystemTime::now();

    let node = open_storage(dir.path());
    let one = node.repository_summary(&name("team/one")).await.unwrap();
    let shared_len = shared.len() as u64;
    assert_eq!(one.tags, 2);
    assert_eq!(
        one.size,
        7 + shared_len + 4 + m1_len,
        "config, layers, manifest"
    );
    assert!(within(one.last_push, before, after), "{one:?}");
    let two = node.repository_summary(&name("team/two")).await.unwrap();
    assert_eq!(two.size, 8 + shared_len + m2_len);

    let report = node.measure_unique_sizes().await.unwrap();
    assert_eq!(report.repositories, 2);
    assert_eq!(
        report.blobs, 6,
        "two configs, two manifests, two layers: {report:?}"
    );
    let page = node
        .repository_summaries(&[name("team/one"), name("team/two"), name("none/such")])
        .await
        .unwrap();
    let page: Vec<_> = page.into_iter().map(Result::unwrap).collect();
    assert_eq!(page[0].unique_size, Some(7 + 4 + m1_len), "{:?}", page[0]);
    assert_eq!(page[1].unique_size, Some(8 + m2_len), "{:?}", page[1]);
    assert!(page[0].unique_as_of.is_some_and(|t| t >= after));
    assert_eq!(page[2].size, 0, "a repository that does not exist is empty");
    assert_eq!(page[2].unique_size, None, "and has no unique size");

    // team/two lets go of the shared layer: it is team/one's alone at the next census.
    let r = reg
        .send(
            "DELETE",
            &format!(
                "/v2/team/two/blobs/{}",
                Digest::sha256_of(shared.as_bytes())
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    node.measure_unique_sizes().await.unwrap();
    let one_now = node.repository_summary(&name("team/one")).await.unwrap();
    assert_eq!(one_now.unique_size, Some(one.size));
    reg.stop().await;
}

#[tokio::test]
async fn a_tag_is_dated_by_its_last_move_not_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let (old, _) = push(&reg, "app", Some("v1"), "{\"v\":1}", &["l1"]).await;
    let (new, _) = push(&reg, "app", Some("latest"), "{\"v\":2}", &["l2"]).await;
    // A bucket dates to the second: let the clocks move past the first pushes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let moved_at = SystemTime::now();
    // `latest` moves back to the older manifest: no new revision, only the tag's link.
    let old_bytes = reg
        .send("GET", &format!("/v2/app/manifests/{old}"))
        .await
        .bytes()
        .await
        .unwrap();
    reg.put_manifest("app", "latest", OCI_MANIFEST, &old_bytes)
        .await;
    let done = SystemTime::now();

    let node = open_storage(dir.path());
    let tags = node.tag_details(&name("app")).await.unwrap();
    let by_tag = |t: &str| tags.iter().find(|i| i.tag == t).unwrap().clone();
    let (latest, v1) = (by_tag("latest"), by_tag("v1"));
    assert_eq!(tags.len(), 2);
    assert_eq!(latest.digest.as_ref(), Some(&old));
    assert!(within(latest.pushed, moved_at, done), "{latest:?}");
    assert_eq!(v1.digest.as_ref(), Some(&old));
    assert!(
        v1.pushed.unwrap() + Duration::from_secs(1) < moved_at,
        "v1 did not move: {v1:?}"
    );
    let summary = node.repository_summary(&name("app")).await.unwrap();
    assert!(within(summary.last_push, moved_at, done), "{summary:?}");
    // The newer manifest is untagged now, and nothing points at it.
    let untagged = node.untagged_manifests(&name("app")).await.unwrap();
    assert_eq!(untagged.len(), 1);
    assert_eq!(untagged[0].digest, new);
    assert_eq!(untagged[0].role, ManifestRole::Unreferenced);
    reg.stop().await;
}

#[tokio::test]
async fn untagged_manifests_say_what_still_points_at_them() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let repo = "multi";
    let (amd, amd_len) = push(&reg, repo, None, "{\"arch\":\"amd64\"}", &["amd"]).await;
    let (arm, arm_len) = push(&reg, repo, None, "{\"arch\":\"arm64\"}", &["arm"]).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": amd_len,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": arm_len,
             "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    let idx = reg.put_manifest(repo, "v1", OCI_INDEX, &index).await;
    // A signature of the index, pushed by digest as cosign and oras do.
    let empty = reg.push_blob(repo, b"{}").await;
    let sig_layer = reg.push_blob(repo, b"signature bytes").await;
    let sig = image_manifest(
        &empty,
        2,
        &[(&sig_layer, 15)],
        Some("application/vnd.dev.cosign.artifact.sig.v1+json"),
        Some((&idx, index.len())),
    );
    let sig_digest = Digest::sha256_of(&sig);
    reg.put_manifest(repo, &sig_digest.to_string(), OCI_MANIFEST, &sig)
        .await;
    let (orphan, _) = push(&reg, repo, None, "{\"old\":true}", &["old"]).await;

    let node = open_storage(dir.path());
    let untagged = node.untagged_manifests(&name(repo)).await.unwrap();
    let role = |d: &Digest| {
        untagged
            .iter()
            .find(|u| &u.digest == d)
            .unwrap_or_else(|| panic!("{d} not listed: {untagged:?}"))
            .role
            .clone()
    };
    assert_eq!(untagged.len(), 4, "{untagged:?}");
    for child in [&amd, &arm] {
        assert_eq!(
            role(child),
            ManifestRole::Child {
                index: idx.clone(),
                tagged: true
            }
        );
    }
    assert_eq!(
        role(&sig_digest),
        ManifestRole::Referrer {
            subject: idx.clone(),
            artifact_type: Some("application/vnd.dev.cosign.artifact.sig.v1+json".into())
        }
    );
    assert_eq!(role(&orphan), ManifestRole::Unreferenced);
    assert!(
        untagged.windows(2).all(|w| w[0].pushed >= w[1].pushed),
        "newest first"
    );
    let tags = node.tag_details(&name(repo)).await.unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].digest.as_ref(), Some(&idx));
    reg.stop().await;
}

/// Reads `repo`'s summary through `node` until it has `tags` tags (a bucket's facts are kept for
/// [`S3_FACTS_FOR`]); the time it took.
async fn until_tags(node: &Storage, repo: &str, tags: usize) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let s = node.repository_summary(&name(repo)).await.unwrap();
        if s.tags == tags {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < S3_FACTS_FOR + Duration::from_secs(10),
            "{repo} still shows {} tags, not {tags}",
            s.tags
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn kept_facts_follow_a_push_through_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    push(&reg, "watched", Some("v1"), "{\"n\":1}", &["one"]).await;
    let on_fs = s3_settings().is_none();
    if on_fs {
        // Settled directories: the facts read next are kept, and reused while the stamps hold.
        age(&dir.path().join("docker/registry/v2/repositories"));
    }
    let node = open_storage(dir.path());
    let first = node.repository_summary(&name("watched")).await.unwrap();
    assert_eq!(first.tags, 1);
    // The unique part comes from the background census and may arrive between the two reads;
    // the facts read from storage must be the same.
    let again = node.repository_summary(&name("watched")).await.unwrap();
    assert_eq!(
        (again.tags, again.last_push, again.size),
        (first.tags, first.last_push, first.size)
    );

    // The registry (its own Storage: another node) pushes a new tag with a new layer.
    push(&reg, "watched", Some("v2"), "{\"n\":2}", &["two two"]).await;
    let waited = until_tags(&node, "watched", 2).await;
    if on_fs {
        assert!(
            waited < Duration::from_millis(100),
            "seen at once on a filesystem: {waited:?}"
        );
    }
    let second = node.repository_summary(&name("watched")).await.unwrap();
    assert!(second.size > first.size, "{first:?} then {second:?}");

    // A tag deleted through the other node.
    let r = reg.send("DELETE", "/v2/watched/manifests/v1").await;
    assert_eq!(r.status(), 202);
    until_tags(&node, "watched", 1).await;
    reg.stop().await;
}

#[tokio::test]
async fn uploads_in_progress_show_their_bytes_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let node = open_storage(dir.path());
    assert!(node.uploads_in_progress().await.unwrap().is_empty());
    let before = SystemTime::now();
    let loc = reg.start_upload("up/load").await;
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "0-999")
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let idle = reg.start_upload("other").await;
    let after = SystemTime::now();
    let mut uploads = node.uploads_in_progress().await.unwrap();
    uploads.sort_by(|a, b| a.repository.cmp(&b.repository));
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    let (other, up) = (&uploads[0], &uploads[1]);
    assert_eq!(up.repository.as_str(), "up/load");
    assert_eq!(up.bytes, Some(1000));
    assert!(within(up.started, before, after), "{up:?}");
    assert!(loc.contains(&up.id.to_string()), "{loc} vs {}", up.id);
    assert_eq!(other.bytes, Some(0));
    assert!(idle.contains(&other.id.to_string()));

    let r = reg.send("DELETE", &loc).await;
    assert_eq!(r.status(), 204);
    let left = node.uploads_in_progress().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].repository.as_str(), "other");
    reg.stop().await;
}
