//! What the status pages read from the shared storage, on either driver (tests/system/s3.sh runs
//! this file against Garage): the heartbeats two nodes write and list, what the pull-through
//! cache holds per upstream (counted by a walk and by the eviction pass alike), and what the cache
//! reports of an upstream from the requests it sends it.

use std::time::{Duration, SystemTime};

use crate::common::{OCI_INDEX, OCI_MANIFEST, TestRegistry, image_manifest, open_storage};
use registryd::proxy::totals::{self, CacheTotals};
use registryd::proxy::{Freshness, Proxy, ProxySettings, Repositories, UpstreamSettings};
use registryd::registry::{Digest, Reference, RepoName};
use registryd::status::{Board, Heartbeat, NodeName};

fn beat(node: &str, ready: bool) -> Heartbeat {
    Heartbeat {
        node: node.into(),
        version: "1.0.0".into(),
        addresses: vec![format!("{node}.example:8443")],
        ready,
        seen: Some(SystemTime::now()),
        period_secs: 1,
        instance: node.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn two_nodes_on_one_storage_list_each_others_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    // Two nodes: two handles on one storage, sharing nothing in memory.
    let (a, b) = (open_storage(dir.path()), open_storage(dir.path()));
    assert!(a.heartbeats().await.unwrap().is_empty());
    a.write_heartbeat(&beat("node-a", true)).await.unwrap();
    b.write_heartbeat(&beat("node-b", true)).await.unwrap();
    for s in [&a, &b] {
        let listed: Vec<(String, bool)> = s
            .heartbeats()
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.node, h.ready))
            .collect();
        assert_eq!(
            listed,
            [("node-a".to_string(), true), ("node-b".to_string(), true)]
        );
    }
    // A beat replaces the last one whole.
    let stopping = Heartbeat {
        reason: Some("stopped".into()),
        ..beat("node-a", false)
    };
    a.write_heartbeat(&stopping).await.unwrap();
    let seen_by_b = b.heartbeats().await.unwrap();
    assert_eq!(seen_by_b[0], stopping);
    // Read back a second later with its own period: stale after three of them.
    assert!(!seen_by_b[0].is_stale(SystemTime::now()));
    assert!(seen_by_b[0].is_stale(SystemTime::now() + Duration::from_secs(4)));
    // A node gone for good is removed (twice is no error); a name that is no file name is refused.
    b.remove_heartbeat(&NodeName::parse("node-a").unwrap())
        .await
        .unwrap();
    b.remove_heartbeat(&NodeName::parse("node-a").unwrap())
        .await
        .unwrap();
    assert!(a.write_heartbeat(&beat("../escape", true)).await.is_err());
    assert!(a.write_heartbeat(&beat("", true)).await.is_err());
    let left: Vec<String> = a
        .heartbeats()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.node)
        .collect();
    assert_eq!(left, ["node-b"]);
}

fn upstream(name: &str) -> UpstreamSettings {
    UpstreamSettings {
        name: name.into(),
        // Never asked: counting reads the storage only.
        url: "http://127.0.0.1:9".into(),
        username: String::new(),
        password: String::new(),
        password_file: Default::default(),
        ca: Default::default(),
        prefixes: vec![name.into()],
        push: false,
        token_realm_hosts: Vec::new(),
    }
}

fn proxy(board: &std::sync::Arc<Board>) -> Proxy {
    let settings = ProxySettings {
        upstreams: vec![upstream("up"), upstream("other"), upstream("idle")],
        default_upstream: String::new(),
        default_patterns: Vec::new(),
        tag_ttl: Duration::from_secs(300),
        timeout: Duration::from_secs(5),
        max_manifest_bytes: 4 << 20,
        max_blob_bytes: 0,
        fetch_deadline: Duration::from_secs(60),
        min_rate: 0,
    };
    Proxy::from_settings(&settings, board.clone()).unwrap()
}

/// Pushes a minimal image by digest; returns its digest and manifest, and the bytes of its blobs.
async fn image(reg: &TestRegistry, repo: &str, seed: &str) -> (String, Vec<u8>, usize) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let layer = format!("layer of {seed}");
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let l = reg.push_blob(repo, layer.as_bytes()).await;
    let m = image_manifest(&c, config.len(), &[(&l, layer.len())], None, None);
    let d = reg
        .put_manifest(repo, &Digest::sha256_of(&m).to_string(), OCI_MANIFEST, &m)
        .await;
    (d.to_string(), m, config.len() + layer.len())
}

#[tokio::test]
async fn the_cache_is_counted_per_upstream_by_a_walk_and_by_the_eviction_pass() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    // up: a single image (tagged), and a two-platform index whose children count as one image.
    let (_, one, one_blobs) = image(&reg, "up/lib/one", "one").await;
    reg.put_manifest("up/lib/one", "v1", OCI_MANIFEST, &one)
        .await;
    let (amd, amd_m, amd_blobs) = image(&reg, "up/lib/multi", "amd64").await;
    let (arm, arm_m, arm_blobs) = image(&reg, "up/lib/multi", "arm64").await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_m.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_m.len(),
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    reg.put_manifest("up/lib/multi", "v1", OCI_INDEX, &index)
        .await;
    // other: one image; a pushed repository outside every upstream counts nowhere.
    let (_, other_m, other_blobs) = image(&reg, "other/x", "other").await;
    reg.push_image("team/app", "v1", "local").await;

    let up_bytes =
        one.len() + one_blobs + amd_m.len() + amd_blobs + arm_m.len() + arm_blobs + index.len();
    let want = vec![
        CacheTotals {
            upstream: "up".into(),
            images: 2,
            bytes: up_bytes as u64,
        },
        CacheTotals {
            upstream: "other".into(),
            images: 1,
            bytes: (other_m.len() + other_blobs) as u64,
        },
        CacheTotals {
            upstream: "idle".into(),
            images: 0,
            bytes: 0,
        },
    ];
    let board = Board::new();
    let storage = open_storage(dir.path());
    let repos = Repositories::new(storage.clone(), proxy(&board));
    assert_eq!(totals::count(&repos, &storage).await.unwrap(), want);
    let posted = board.upstreams();
    assert_eq!(posted.len(), 3);
    assert_eq!(
        (posted[0].cached_images, posted[0].cached_bytes),
        (2, up_bytes as u64)
    );
    assert!(posted.iter().all(|u| u.totals_at.is_some()));

    // The eviction pass counts the same from its own walk; under a limit it removes what it
    // must, and counts what is left.
    let report = registryd::proxy::evict::evict(&repos, &storage, u64::MAX)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.manifests_removed, 0);
    assert_eq!(report.totals, want);
    let report = registryd::proxy::evict::evict(&repos, &storage, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(report.manifests_removed > 0);
    assert_eq!(
        report.totals,
        totals::count(&repos, &storage).await.unwrap()
    );
    assert_eq!(report.totals[0].images, 0);
    reg.stop().await;
}

#[tokio::test]
async fn upstreams_are_reported_from_the_requests_the_cache_sends() {
    // The upstream: a registry of our own on 127.0.0.1, stopped halfway.
    let up_dir = tempfile::tempdir().unwrap();
    let up = TestRegistry::start(up_dir.path(), true).await;
    let (digest, _) = up.push_image("lib/app", "v1", "upstream").await;
    let board = Board::new();
    let mut u = upstream("up");
    u.url = up.base.clone();
    let settings = ProxySettings {
        upstreams: vec![u],
        default_upstream: String::new(),
        default_patterns: Vec::new(),
        // Every tag is checked with the upstream again at once.
        tag_ttl: Duration::ZERO,
        timeout: Duration::from_secs(5),
        max_manifest_bytes: 4 << 20,
        max_blob_bytes: 0,
        fetch_deadline: Duration::from_secs(60),
        min_rate: 0,
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let repos = Repositories::new(
        open_storage(cache_dir.path()),
        Proxy::from_settings(&settings, board.clone()).unwrap(),
    );
    let name: RepoName = "up/lib/app".parse().unwrap();
    let repo = repos.repository(&name, None);
    let report = || board.upstreams().into_iter().next().unwrap();
    assert_eq!(report().reachable, None);

    // Fetched (a miss), then current by a HEAD (a hit), then by digest from storage (a hit).
    let tag: Reference = "v1".parse().unwrap();
    assert_eq!(
        repo.manifest(&tag).await.unwrap().2,
        Some(Freshness::Fetched)
    );
    assert_eq!(repo.manifest(&tag).await.unwrap().2, Some(Freshness::Hit));
    let by_digest = Reference::Digest(digest);
    assert_eq!(
        repo.manifest(&by_digest).await.unwrap().2,
        Some(Freshness::Hit)
    );
    // A tag the upstream does not have: its answer, not a failure.
    assert!(repo.manifest(&"nope".parse().unwrap()).await.is_err());
    let r = report();
    assert_eq!(
        (r.reachable, r.misses, r.hits, r.stale_served),
        (Some(true), 1, 2, 0)
    );
    assert!(r.last_check.is_some());
    assert_eq!(r.last_error, None);

    // The upstream goes away: the tag is served stale, and the upstream reported unreachable.
    up.stop().await;
    assert_eq!(repo.manifest(&tag).await.unwrap().2, Some(Freshness::Stale));
    let r = report();
    assert_eq!((r.reachable, r.stale_served), (Some(false), 1));
    let error = r.last_error.unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert_eq!(r.last_error_at, r.last_check);
}
