//! Retention rules and immutable tags against a registry filled through its HTTP API, with push
//! and pull times set through the timestamps storage keeps (never by sleeping). On the S3 driver
//! when `REGISTRYD_TEST_S3_*` is set (tests/system/s3.sh); the tests that date things by file
//! times say they skip there.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::{
    OCI_INDEX, OCI_MANIFEST, TestRegistry, assert_oci_error, open_storage, skipped_on_s3,
};
use registryd::http::settings::Settings;
use registryd::lifecycle::gc::{self, GcOptions, GcReport};
use registryd::lifecycle::retention::{self, RetentionOptions};
use registryd::registry::{Digest, RepoName};
use registryd::retention::{ImmutableRule, RetentionRule, Rules};
use registryd::storage::Storage;
use sha2::Digest as _;

const DAY: u64 = 86_400;

fn rule(repos: &str) -> RetentionRule {
    RetentionRule {
        repositories: repos.into(),
        keep_tags: vec![],
        keep_last: None,
        keep_pushed_within_days: None,
        keep_pulled_within_days: None,
        untagged_after_days: None,
        allow_empty: false,
    }
}

fn immutable(repos: &str, tags: &[&str]) -> ImmutableRule {
    ImmutableRule {
        repositories: repos.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn settings(rules: &Rules) -> Settings {
    let mut s = Settings::basic(true, 4 << 20);
    s.rules = Arc::new(rules.clone());
    s
}

fn gc_opts(rules: &Rules, dry_run: bool) -> GcOptions {
    GcOptions {
        dry_run,
        delete_untagged: false,
        grace: Duration::from_secs(600),
        upload_max_age: Duration::from_secs(7 * DAY),
        lock_wait: Duration::from_secs(10),
        retention: RetentionOptions {
            rules: Arc::new(rules.clone()),
            cache_prefixes: vec!["hub".into()],
        },
    }
}

async fn collect(storage: &Storage, opts: &GcOptions) -> GcReport {
    gc::collect(storage, opts, &|_, _, _| {})
        .await
        .unwrap()
        .expect("no other collector")
}

async fn tags(reg: &TestRegistry, repo: &str) -> BTreeSet<String> {
    let r = reg.send("GET", &format!("/v2/{repo}/tags/list")).await;
    if r.status() == 404 {
        return BTreeSet::new();
    }
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn repo_dir(root: &Path, repo: &str) -> std::path::PathBuf {
    root.join("docker/registry/v2/repositories").join(repo)
}

/// Dates `repo:tag`'s last move `days` back (its link's mtime, which is what storage reads).
fn date_tag(root: &Path, repo: &str, tag: &str, days: u64) {
    let link = repo_dir(root, repo).join(format!("_manifests/tags/{tag}/current/link"));
    set_age(&link, days);
}

/// Dates the push of manifest `d` of `repo` `days` back (its revision link).
fn date_revision(root: &Path, repo: &str, d: &Digest, days: u64) {
    let link = repo_dir(root, repo).join(format!("_manifests/revisions/sha256/{}/link", d.hex()));
    set_age(&link, days);
}

/// Records a pull of `repo@d` `days` ago, as a node's record of it (the stamp's time).
async fn date_pull(storage: &Storage, root: &Path, repo: &str, d: &Digest, days: u64) {
    let name: RepoName = repo.parse().unwrap();
    storage.mark_pulled(&name, d).await.unwrap();
    let key = format!("{repo}@{d}");
    let hex = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let stamp = root
        .join("registryd/proxy/pulled")
        .join(&hex[..2])
        .join(&hex);
    set_age(&stamp, days);
    assert!(
        storage.pulled_at(&name, d).await.unwrap().is_some(),
        "the pull stamp is where storage reads it"
    );
}

fn set_age(path: &Path, days: u64) {
    let t = SystemTime::now() - Duration::from_secs(days * DAY);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_modified(t)
        .unwrap();
}

#[tokio::test]
async fn immutable_tags_are_pushed_once_and_never_moved_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Rules::compile(&[], &[immutable("**", &["v*", "release-*"])]).unwrap();
    let reg = TestRegistry::start_with(dir.path(), settings(&rules)).await;

    let (d1, m1) = reg.push_image("app", "v1.0", "one").await;
    // A CI retry of the same push succeeds.
    assert_eq!(reg.put_manifest("app", "v1.0", OCI_MANIFEST, &m1).await, d1);

    // Moving it to another manifest is refused, naming the tag and the rule.
    let (d2, m2) = reg.push_image("app", "latest", "two").await;
    let r = reg
        .req("PUT", "/v2/app/manifests/v1.0")
        .header("Content-Type", OCI_MANIFEST)
        .body(m2.clone())
        .send()
        .await
        .unwrap();
    let body = assert_oci_error!(r, 409, "DENIED", "moving an immutable tag");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("app:v1.0")
            && message.contains("immutable rule 1")
            && message.contains("v*"),
        "{message}"
    );
    let r = reg.send("GET", "/v2/app/manifests/v1.0").await;
    assert_eq!(
        r.headers()["docker-content-digest"],
        d1.to_string().as_str()
    );

    // Neither the tag nor the manifest it names may be deleted.
    let r = reg.send("DELETE", "/v2/app/manifests/v1.0").await;
    assert_oci_error!(r, 409, "DENIED", "deleting an immutable tag");
    let r = reg.send("DELETE", &format!("/v2/app/manifests/{d1}")).await;
    let body = assert_oci_error!(r, 409, "DENIED", "deleting what an immutable tag names");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("v1.0")
    );

    // Nor a platform of an index an immutable tag names: its pulls would break as surely.
    let (d3, m3) = reg.push_image("app", "plain", "three").await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": d3.to_string(),
            "size": m3.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    });
    reg.put_manifest(
        "app",
        "v3.0",
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    )
    .await;
    let r = reg.send("DELETE", "/v2/app/manifests/plain").await;
    assert_eq!(r.status(), 202, "a tag no rule covers goes");
    let r = reg.send("DELETE", &format!("/v2/app/manifests/{d3}")).await;
    let body = assert_oci_error!(
        r,
        409,
        "DENIED",
        "deleting a platform of an immutable index"
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("platform") && message.contains("v3.0"),
        "{message}"
    );
    let r = reg.send("GET", "/v2/app/manifests/v3.0").await;
    assert_eq!(r.status(), 200);

    // A protected tag that is not there is simply not found.
    let r = reg.send("DELETE", "/v2/app/manifests/v9").await;
    assert_oci_error!(
        r,
        404,
        "MANIFEST_UNKNOWN",
        "deleting a missing immutable tag"
    );

    // Two first pushes of one release tag with different manifests, at once: one wins, the other
    // is refused, and the tag names the winner.
    let (_, a) = reg.push_image("race", "seed-a", "a").await;
    let (_, b) = reg.push_image("race", "seed-b", "b").await;
    let put = |body: Vec<u8>| {
        reg.req("PUT", "/v2/race/manifests/v2.0")
            .header("Content-Type", OCI_MANIFEST)
            .body(body)
            .send()
    };
    let (ra, rb) = tokio::join!(put(a.clone()), put(b.clone()));
    let mut codes = [ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [201, 409], "exactly one first push wins");
    let r = reg.send("GET", "/v2/race/manifests/v2.0").await;
    let named = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        named == Digest::sha256_of(&a).to_string() || named == Digest::sha256_of(&b).to_string()
    );

    // Tags no rule covers move and go as before.
    reg.put_manifest("app", "latest", OCI_MANIFEST, &m1).await;
    let r = reg.send("DELETE", "/v2/app/manifests/latest").await;
    assert_eq!(r.status(), 202);
    let r = reg.send("DELETE", &format!("/v2/app/manifests/{d2}")).await;
    assert_eq!(r.status(), 202);
    reg.stop().await;
}

#[tokio::test]
async fn the_dry_run_names_what_the_real_run_removes_and_why() {
    if skipped_on_s3("dates pushes and pulls through file times") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut r = rule("ci/**");
    r.keep_tags = vec!["latest".into(), "v*".into()];
    r.keep_last = Some(2);
    r.keep_pushed_within_days = Some(30);
    r.keep_pulled_within_days = Some(14);
    r.untagged_after_days = Some(2);
    let rules = Rules::compile(&[r], &[immutable("**", &["release-*"])]).unwrap();
    let reg = TestRegistry::start_with(root, settings(&rules)).await;
    let storage = open_storage(root);

    // tag, days since pushed, days since pulled
    let plan: &[(&str, u64, Option<u64>)] = &[
        ("latest", 400, None),
        ("v1.0", 300, None),
        ("release-1", 500, None),
        ("c1", 40, None),
        ("c2", 41, None),
        ("c3", 20, None),
        ("c4", 60, Some(3)),
        ("c5", 70, Some(20)),
        ("c6", 90, None),
    ];
    let mut digests = Vec::new();
    for (tag, pushed, pulled) in plan {
        let (d, _) = reg.push_image("ci/app", tag, tag).await;
        date_tag(root, "ci/app", tag, *pushed);
        date_revision(root, "ci/app", &d, *pushed);
        if let Some(p) = pulled {
            date_pull(&storage, root, "ci/app", &d, *p).await;
        }
        digests.push(d);
    }
    // Outside every rule, and an upstream's cache: never touched.
    reg.push_image("other", "old", "o").await;
    date_tag(root, "other", "old", 900);
    reg.push_image("hub/library/x", "old", "h").await;
    date_tag(root, "hub/library/x", "old", 900);

    let dry = collect(&storage, &gc_opts(&rules, true)).await;
    assert_eq!(dry.retention.len(), 1, "{:?}", dry.retention);
    let repo = &dry.retention[0];
    let would: BTreeSet<&str> = repo.removed.iter().map(|t| t.tag.as_str()).collect();
    // c3 (20 days) and c1 (40) are the two newest; c2 (41) is third.
    assert_eq!(would, BTreeSet::from(["c2", "c5", "c6"]), "{repo:#?}");
    let why = |tag: &str| {
        repo.kept
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.reasons.join("; "))
            .unwrap_or_default()
    };
    assert!(
        why("latest").contains("keep_tags \"latest\""),
        "{}",
        why("latest")
    );
    assert!(
        why("release-1").contains("immutable rule 1"),
        "{}",
        why("release-1")
    );
    assert!(
        why("c1").contains("keep_last = 2 (newest #2)"),
        "{}",
        why("c1")
    );
    assert!(
        why("c3").contains("keep_pushed_within_days = 30"),
        "{}",
        why("c3")
    );
    assert!(
        why("c4").contains("keep_pulled_within_days = 14"),
        "{}",
        why("c4")
    );
    let gone = repo.removed.iter().find(|t| t.tag == "c5").unwrap();
    assert!(
        gone.reasons[0].contains("retention rule 1")
            && gone.reasons[0].contains("last pulled 20 days ago"),
        "{:?}",
        gone.reasons
    );
    assert_eq!(dry.tags_removed, 3);
    // The manifests only those tags named, pushed long ago, go in the same pass.
    assert_eq!(dry.manifests_removed, 3, "{dry:#?}");
    assert_eq!(
        tags(&reg, "ci/app").await.len(),
        plan.len(),
        "a dry run removes nothing"
    );

    let real = collect(&storage, &gc_opts(&rules, false)).await;
    assert_eq!(real.tags_removed, dry.tags_removed);
    assert_eq!(real.manifests_removed, dry.manifests_removed);
    assert_eq!(real.blobs_removed, dry.blobs_removed);
    assert_eq!(real.retention[0].removed, dry.retention[0].removed);
    let left = tags(&reg, "ci/app").await;
    assert!(
        !left.contains("c2") && !left.contains("c5") && !left.contains("c6"),
        "{left:?}"
    );
    assert_eq!(left.len(), plan.len() - 3);
    for gone in [&digests[4], &digests[7], &digests[8]] {
        let r = reg
            .send("GET", &format!("/v2/ci/app/manifests/{gone}"))
            .await;
        assert_eq!(r.status(), 404, "{gone} removed with its tag");
    }
    assert_eq!(tags(&reg, "other").await.len(), 1);
    assert_eq!(tags(&reg, "hub/library/x").await.len(), 1);

    // Nothing more to do the second time.
    let again = collect(&storage, &gc_opts(&rules, false)).await;
    assert_eq!((again.tags_removed, again.manifests_removed), (0, 0));
    reg.stop().await;
}

#[tokio::test]
async fn a_rule_never_empties_a_repository_unless_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rule("team/*");
    r.keep_tags = vec!["stable".into()];
    let mut allowed = rule("scratch/*");
    allowed.keep_tags = vec!["stable".into()];
    allowed.allow_empty = true;
    let rules = Rules::compile(&[r, allowed], &[]).unwrap();
    let reg = TestRegistry::start_with(dir.path(), settings(&rules)).await;
    let storage = open_storage(dir.path());
    for t in ["a", "b"] {
        reg.push_image("team/app", t, t).await;
        reg.push_image("scratch/app", t, t).await;
    }
    let mut opts = gc_opts(&rules, false);
    opts.grace = Duration::ZERO;
    let report = collect(&storage, &opts).await;
    let team = report
        .retention
        .iter()
        .find(|r| r.repository == "team/app")
        .unwrap();
    assert!(team.kept_from_empty && team.removed.is_empty(), "{team:?}");
    assert!(
        team.kept[0]
            .reasons
            .iter()
            .any(|r| r.contains("allow_empty"))
    );
    assert_eq!(tags(&reg, "team/app").await.len(), 2);
    assert!(tags(&reg, "scratch/app").await.is_empty());
    reg.stop().await;
}

#[tokio::test]
async fn a_tag_moved_after_the_plan_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rule("ci/*");
    r.keep_last = Some(1);
    let rules = Rules::compile(&[r], &[]).unwrap();
    let reg = TestRegistry::start_with(dir.path(), settings(&rules)).await;
    let storage = open_storage(dir.path());
    reg.push_image("ci/app", "old", "1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct push times on a bucket
    reg.push_image("ci/app", "new", "2").await;
    let opts = RetentionOptions {
        rules: Arc::new(rules.clone()),
        cache_prefixes: vec![],
    };
    let now = SystemTime::now();
    let plans = retention::plan_all(&storage, &opts, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(plans[0].0.untagged().count(), 1, "{:?}", plans[0].0);
    // A push moves the planned tag before the pass acts.
    reg.push_image("ci/app", "old", "3").await;
    let done = retention::apply(&storage, plans, false, Duration::from_secs(10), now)
        .await
        .unwrap();
    assert_eq!(done[0].moved_meanwhile, ["old"]);
    assert!(done[0].removed.is_empty());
    assert_eq!(tags(&reg, "ci/app").await.len(), 2);
    reg.stop().await;
}

#[tokio::test]
async fn pulls_of_pushed_manifests_are_recorded_off_the_request_path() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let storage = open_storage(dir.path());
    let (d, _) = reg.push_image("app", "v1", "x").await;
    let name: RepoName = "app".parse().unwrap();
    assert_eq!(storage.pulled_at(&name, &d).await.unwrap(), None);
    let before = SystemTime::now() - Duration::from_secs(2);
    let r = reg.send("GET", "/v2/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    let mut seen = None;
    for _ in 0..100 {
        seen = storage.pulled_at(&name, &d).await.unwrap();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("the pull is recorded");
    assert!(seen >= before, "{seen:?}");
    reg.stop().await;
}

#[tokio::test]
async fn the_web_ui_shows_the_rule_and_what_the_next_pass_untags() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rule("ci/*");
    r.keep_last = Some(1);
    let rules = Rules::compile(&[r], &[immutable("**", &["v*"])]).unwrap();
    let mut s = settings(&rules);
    s.gc_grace = Duration::ZERO;
    let reg = TestRegistry::start_with(dir.path(), s).await;
    reg.push_image("ci/app", "old", "1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct push times on a bucket
    reg.push_image("ci/app", "v1", "2").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    reg.push_image("ci/app", "new", "3").await;
    let page = reg.send("GET", "/ui/r/ci/app").await.text().await.unwrap();
    assert!(page.contains("Retention: retention rule 1"), "{page}");
    assert!(
        page.contains("The next GC pass would untag: <code>old</code>."),
        "{page}"
    );
    assert!(page.contains(">immutable</span>"), "{page}");
    let list = reg.send("GET", "/ui/").await.text().await.unwrap();
    assert!(
        list.contains("retention rule 1") && list.contains("immutable tags"),
        "{list}"
    );
    reg.stop().await;
}
