//! Conformance tests written from the OCI Distribution Spec v1.1.1 text (`spec.md`): every endpoint
//! (end-1 … end-13), the status codes and error codes the spec gives, chunked-upload rules,
//! pagination, referrers and cross-repository mount. Runs the real server on 127.0.0.1.

use crate::common::*;
use registryd::registry::Digest;
use serde_json::Value;

async fn registry() -> (tempfile::TempDir, TestRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path(), true).await;
    (dir, r)
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn json(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn end_1_base() {
    let (_d, reg) = registry().await;
    let r = reg.send("GET", "/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    assert_eq!(reg.send("HEAD", "/v2/").await.status(), 200);
    let r = reg.send("GET", "/v2/no/such/endpoint").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn end_2_blob_get_head_and_ranges() {
    let (_d, reg) = registry().await;
    let d = reg.push_blob("a/b", b"0123456789").await;
    let r = reg.send("HEAD", &format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("10"));
    assert_eq!(header(&r, "docker-content-digest"), Some(d.to_string()));
    let r = reg.send("GET", &format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"0123456789");
    let r = reg
        .req("GET", &format!("/v2/a/b/blobs/{d}"))
        .header("Range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes 2-4/10"));
    assert_eq!(&r.bytes().await.unwrap()[..], b"234");
    let r = reg
        .req("GET", &format!("/v2/a/b/blobs/{d}"))
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */10"));
    // Unknown blob, and a blob that exists elsewhere but is not linked here.
    let unknown = Digest::sha256_of(b"nope");
    let r = reg.send("GET", &format!("/v2/a/b/blobs/{unknown}")).await;
    assert_oci_error!(r, 404, "BLOB_UNKNOWN");
    let r = reg.send("GET", &format!("/v2/other/blobs/{d}")).await;
    assert_oci_error!(r, 404, "BLOB_UNKNOWN");
    let r = reg.send("HEAD", &format!("/v2/other/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    let r = reg.send("GET", "/v2/a/b/blobs/sha256:1234").await;
    assert_oci_error!(r, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn end_4_post_then_put_and_monolithic() {
    let (_d, reg) = registry().await;
    // end-4a: POST opens a session with Location; end-6: PUT with the whole body closes it.
    let r = reg.send("POST", "/v2/r/blobs/uploads/").await;
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").unwrap();
    assert!(header(&r, "docker-upload-uuid").is_some());
    let body = b"monolithic body";
    let d = Digest::sha256_of(body);
    let r = reg
        .req("PUT", &format!("{loc}?digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), Some(format!("/v2/r/blobs/{d}")));
    assert_eq!(header(&r, "docker-content-digest"), Some(d.to_string()));
    // end-4b: POST ?digest= with the body.
    let d2 = reg.push_blob("r", b"").await;
    let r = reg.send("GET", &format!("/v2/r/blobs/{d2}")).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    // The upload session is gone once completed.
    let r = reg.send("GET", &loc).await;
    assert_oci_error!(r, 404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn end_5_chunked_upload_rules() {
    let (_d, reg) = registry().await;
    let r = reg.send("POST", "/v2/c/blobs/uploads/").await;
    let loc = header(&r, "location").unwrap();
    let patch = |range: Option<&str>, body: &'static [u8]| {
        let mut b = reg
            .req("PATCH", &loc)
            .header("Content-Type", "application/octet-stream")
            .body(body);
        if let Some(range) = range {
            b = b.header("Content-Range", range);
        }
        b.send()
    };
    let r = patch(Some("0-4"), b"hello").await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));
    assert_eq!(header(&r, "location").as_deref(), Some(loc.as_str()));
    // Out of order (gap), overlap, and a malformed range: 416, nothing written.
    for bad in ["6-7", "3-4", "x"] {
        let r = patch(Some(bad), b"zz").await.unwrap();
        assert_eq!(r.status(), 416, "range {bad}");
        assert_eq!(
            header(&r, "range").as_deref().filter(|_| bad != "x"),
            if bad == "x" { None } else { Some("0-4") }
        );
    }
    // Status: 204 with the acknowledged range.
    let r = reg.send("GET", &loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));
    // A PATCH without Content-Range streams the next bytes (as Docker sends them).
    let r = patch(None, b" wor").await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-8"));
    // The final PUT may carry the last chunk.
    let d = Digest::sha256_of(b"hello world");
    let r = reg
        .req("PUT", &format!("{loc}?digest={d}"))
        .header("Content-Range", "9-10")
        .body(&b"ld"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = reg.send("GET", &format!("/v2/c/blobs/{d}")).await;
    assert_eq!(&r.bytes().await.unwrap()[..], b"hello world");
}

#[tokio::test]
async fn upload_errors_and_cancel() {
    let (_d, reg) = registry().await;
    // Digest mismatch: 400 DIGEST_INVALID and nothing stored.
    let wrong = Digest::sha256_of(b"other");
    let r = reg
        .req("POST", &format!("/v2/e/blobs/uploads/?digest={wrong}"))
        .body(&b"content"[..])
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "DIGEST_INVALID");
    let r = reg.send("HEAD", &format!("/v2/e/blobs/{wrong}")).await;
    assert_eq!(r.status(), 404);
    assert!(
        !reg.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&wrong.hex()[..2])
            .exists()
    );
    // PUT without digest, with a bad digest.
    let loc = reg.start_upload("e").await;
    let r = reg.send("PUT", &loc).await;
    assert_oci_error!(r, 400, "DIGEST_INVALID");
    let r = reg.send("PUT", &format!("{loc}?digest=sha256:abc")).await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // end-13: DELETE cancels; the session is then unknown.
    let r = reg.send("DELETE", &loc).await;
    assert_eq!(r.status(), 204);
    for m in ["GET", "PATCH", "PUT", "DELETE"] {
        let r = reg.send(m, &format!("{loc}?digest={wrong}")).await;
        assert_oci_error!(r, 404, "BLOB_UPLOAD_UNKNOWN", "{m}");
    }
    let r = reg.send("GET", "/v2/e/blobs/uploads/not-a-uuid").await;
    assert_eq!(r.status(), 404);
    // A session belongs to its repository.
    let loc = reg.start_upload("e").await;
    let other = loc.replace("/v2/e/", "/v2/f/");
    assert_eq!(reg.send("GET", &other).await.status(), 404);
}

#[tokio::test]
async fn end_11_cross_repository_mount() {
    let (_d, reg) = registry().await;
    let d = reg.push_blob("src", b"shared layer").await;
    let r = reg
        .send(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), Some(format!("/v2/dst/blobs/{d}")));
    assert_eq!(
        reg.send("HEAD", &format!("/v2/dst/blobs/{d}"))
            .await
            .status(),
        200
    );
    // From a repository that lacks it: a regular upload session instead.
    let missing = Digest::sha256_of(b"not here");
    let r = reg
        .send(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src"),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        header(&r, "location")
            .unwrap()
            .starts_with("/v2/dst/blobs/uploads/")
    );
    // A blob in src but not linked in `from` is not mountable from there.
    let r = reg
        .send(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=elsewhere"),
        )
        .await;
    assert_eq!(r.status(), 202);
    // Automatic mount when `from` is absent and the blob exists.
    let r = reg
        .send("POST", &format!("/v2/auto/blobs/uploads/?mount={d}"))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        reg.send("HEAD", &format!("/v2/auto/blobs/{d}"))
            .await
            .status(),
        200
    );
    let r = reg
        .send(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=Bad..Name"),
        )
        .await;
    assert_oci_error!(r, 400, "NAME_INVALID");
}

#[tokio::test]
async fn end_3_7_manifests() {
    let (_d, reg) = registry().await;
    let (d, body) = reg.push_image("app", "v1", "one").await;
    for reference in ["v1".to_string(), d.to_string()] {
        let r = reg
            .send("GET", &format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest"), Some(d.to_string()));
        assert_eq!(r.bytes().await.unwrap().to_vec(), body, "byte-exact");
        let r = reg
            .send("HEAD", &format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
    }
    // Conditional GET.
    let r = reg
        .req("GET", "/v2/app/manifests/v1")
        .header("If-None-Match", format!("\"{d}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Unknown tag / digest / repository.
    for p in [
        "/v2/app/manifests/nope",
        &format!("/v2/app/manifests/{}", Digest::sha256_of(b"x")),
        "/v2/nobody/manifests/v1",
    ] {
        let r = reg.send("GET", p).await;
        assert_oci_error!(r, 404, "MANIFEST_UNKNOWN", "{p}");
    }
    // The manifest is not reachable from a repository that never received it.
    let r = reg.send("GET", &format!("/v2/other/manifests/{d}")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn manifest_push_validation() {
    let (_d, reg) = registry().await;
    let c = reg.push_blob("v", b"{}").await;
    let missing = Digest::sha256_of(b"missing layer");
    let m = image_manifest(&c, 2, &[(&missing, 13)], None, None);
    let r = reg
        .req("PUT", "/v2/v/manifests/t")
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "MANIFEST_BLOB_UNKNOWN");
    // A blob pushed to another repository does not count.
    let elsewhere = reg.push_blob("w", b"layer elsewhere").await;
    let m = image_manifest(&c, 2, &[(&elsewhere, 15)], None, None);
    let r = reg
        .req("PUT", "/v2/v/manifests/t")
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Index whose child is missing.
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":missing.to_string(),"size":10}]});
    let r = reg
        .req("PUT", "/v2/v/manifests/idx")
        .header("Content-Type", OCI_INDEX)
        .body(idx.to_string())
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "MANIFEST_UNKNOWN");
    // Invalid JSON, wrong schema version, mismatched media type.
    for (ct, body) in [
        (OCI_MANIFEST, "{not json".to_string()),
        (OCI_MANIFEST, r#"{"schemaVersion":1}"#.to_string()),
        (
            OCI_INDEX,
            String::from_utf8(image_manifest(&c, 2, &[], None, None)).unwrap(),
        ),
    ] {
        let r = reg
            .req("PUT", "/v2/v/manifests/t")
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_oci_error!(r, 400, "MANIFEST_INVALID");
    }
    // Digest reference that does not match the body.
    let m = image_manifest(&c, 2, &[], None, None);
    let r = reg
        .req("PUT", &format!("/v2/v/manifests/{missing}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "DIGEST_INVALID");
    // Bad tag, bad name. A reference that is neither a tag nor a digest names no manifest: a
    // push under it is 400 TAG_INVALID (DIGEST_INVALID for a malformed digest), and reads and
    // deletes find nothing there, 404 MANIFEST_UNKNOWN, as for any manifest that is not there.
    let r = reg
        .req("PUT", "/v2/v/manifests/-bad")
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "TAG_INVALID");
    let r = reg
        .req("PUT", "/v2/v/manifests/sha256:xyz")
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "DIGEST_INVALID");
    for reference in [
        ".INVALID_NAME",
        "-bad",
        &"a".repeat(129),
        "sha256:xyz",
        "md5:00",
    ] {
        let path = format!("/v2/v/manifests/{reference}");
        for method in ["GET", "DELETE"] {
            let r = reg.send(method, &path).await;
            assert_oci_error!(r, 404, "MANIFEST_UNKNOWN", "{method} {path}");
        }
        let r = reg.send("HEAD", &path).await;
        assert_eq!(r.status(), 404, "HEAD {path}");
    }
    let r = reg
        .req("PUT", "/v2/V/manifests/t")
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 400, "NAME_INVALID");
    // Over 4 MiB: 413.
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = reg
        .req("PUT", "/v2/v/manifests/big")
        .header("Content-Type", OCI_MANIFEST)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_oci_error!(r, 413, "SIZE_INVALID");
    // By digest: fine.
    let d = Digest::sha256_of(&m);
    let r = reg
        .req("PUT", &format!("/v2/v/manifests/{d}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), Some(format!("/v2/v/manifests/{d}")));
}

#[tokio::test]
async fn multi_arch_index_and_docker_types() {
    let (_d, reg) = registry().await;
    let (a, _) = reg.push_image("m", "amd64", "a").await;
    let (b, _) = reg.push_image("m", "arm64", "b").await;
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":a.to_string(),"size":1,"platform":{"os":"linux","architecture":"amd64"}},
        {"mediaType":OCI_MANIFEST,"digest":b.to_string(),"size":1,"platform":{"os":"linux","architecture":"arm64"}}]})
    .to_string();
    reg.put_manifest("m", "latest", OCI_INDEX, idx.as_bytes())
        .await;
    let r = reg.send("GET", "/v2/m/manifests/latest").await;
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    // Docker schema 2.
    let c = reg.push_blob("d", b"{\"os\":\"linux\"}").await;
    let l = reg.push_blob("d", b"dlayer").await;
    let dm = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":c.to_string(),"size":15},
        "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":l.to_string(),"size":6}]})
    .to_string();
    reg.put_manifest(
        "d",
        "latest",
        "application/vnd.docker.distribution.manifest.v2+json",
        dm.as_bytes(),
    )
    .await;
    let r = reg.send("GET", "/v2/d/manifests/latest").await;
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
}

#[tokio::test]
async fn end_8_tags_and_catalog_pagination() {
    let (_d, reg) = registry().await;
    for t in ["b", "a", "d", "c", "e"] {
        reg.push_image("p/q", t, t).await;
    }
    reg.push_image("z", "1", "z").await;
    reg.push_image("a", "1", "a").await;
    let r = reg.send("GET", "/v2/p/q/tags/list").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await,
        serde_json::json!({"name":"p/q","tags":["a","b","c","d","e"]})
    );
    let r = reg.send("GET", "/v2/p/q/tags/list?n=2").await;
    assert_eq!(
        header(&r, "link").as_deref(),
        Some("</v2/p/q/tags/list?n=2&last=b>; rel=\"next\"")
    );
    assert_eq!(json(r).await["tags"], serde_json::json!(["a", "b"]));
    let r = reg.send("GET", "/v2/p/q/tags/list?n=2&last=b").await;
    assert_eq!(json(r).await["tags"], serde_json::json!(["c", "d"]));
    let r = reg.send("GET", "/v2/p/q/tags/list?n=2&last=d").await;
    assert!(header(&r, "link").is_none());
    assert_eq!(json(r).await["tags"], serde_json::json!(["e"]));
    let r = reg.send("GET", "/v2/p/q/tags/list?n=x").await;
    assert_eq!(r.status(), 400);
    let r = reg.send("GET", "/v2/nothing/tags/list").await;
    assert_oci_error!(r, 404, "NAME_UNKNOWN");
    let r = reg.send("GET", "/v2/_catalog").await;
    assert_eq!(
        json(r).await,
        serde_json::json!({"repositories":["a","p/q","z"]})
    );
    let r = reg.send("GET", "/v2/_catalog?n=1&last=a").await;
    assert_eq!(
        header(&r, "link").as_deref(),
        Some("</v2/_catalog?n=1&last=p%2Fq>; rel=\"next\"")
    );
    assert_eq!(json(r).await["repositories"], serde_json::json!(["p/q"]));
}

#[tokio::test]
async fn end_12_referrers() {
    let (_d, reg) = registry().await;
    let (subject, sbody) = reg.push_image("s", "v1", "subject").await;
    // Unknown digest: an empty index, never 404.
    let unknown = Digest::sha256_of(b"unknown");
    let r = reg.send("GET", &format!("/v2/s/referrers/{unknown}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let v = json(r).await;
    assert_eq!(v["manifests"], serde_json::json!([]));
    assert_eq!(v["schemaVersion"], 2);
    // Two artifacts of different types refer to it.
    let cfg = reg.push_blob("s", b"{}").await;
    let mut referrers = Vec::new();
    for t in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let m = image_manifest(&cfg, 2, &[], Some(t), Some((&subject, sbody.len())));
        let r = reg
            .req("PUT", &format!("/v2/s/manifests/{}", Digest::sha256_of(&m)))
            .header("Content-Type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), Some(subject.to_string()));
        referrers.push(Digest::sha256_of(&m));
    }
    let v = json(reg.send("GET", &format!("/v2/s/referrers/{subject}")).await).await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r = reg
        .send(
            "GET",
            &format!("/v2/s/referrers/{subject}?artifactType=application/vnd.example.sbom"),
        )
        .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let v = json(r).await;
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(list[0]["mediaType"], OCI_MANIFEST);
    // A referrer may arrive before its subject exists.
    let ghost = Digest::sha256_of(b"ghost subject");
    let m = image_manifest(&cfg, 2, &[], Some("application/x"), Some((&ghost, 5)));
    let r = reg
        .req("PUT", "/v2/s/manifests/early")
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = json(reg.send("GET", &format!("/v2/s/referrers/{ghost}")).await).await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    // Deleting a referrer removes it from the list.
    let r = reg
        .send("DELETE", &format!("/v2/s/manifests/{}", referrers[0]))
        .await;
    assert_eq!(r.status(), 202);
    let v = json(reg.send("GET", &format!("/v2/s/referrers/{subject}")).await).await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    let r = reg.send("GET", "/v2/s/referrers/sha256:bad").await;
    assert_oci_error!(r, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn end_9_10_deletes() {
    let (_d, reg) = registry().await;
    let (d, _) = reg.push_image("del", "v1", "x").await;
    reg.put_manifest(
        "del",
        "v2",
        OCI_MANIFEST,
        &reg.client
            .get(reg.url("/v2/del/manifests/v1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .await;
    // Delete a tag: the manifest stays.
    let r = reg.send("DELETE", "/v2/del/manifests/v2").await;
    assert_eq!(r.status(), 202);
    assert_eq!(reg.send("GET", "/v2/del/manifests/v2").await.status(), 404);
    assert_eq!(
        reg.send("GET", &format!("/v2/del/manifests/{d}"))
            .await
            .status(),
        200
    );
    // Delete by digest: manifest and the tags naming it go.
    let r = reg.send("DELETE", &format!("/v2/del/manifests/{d}")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        reg.send("GET", &format!("/v2/del/manifests/{d}"))
            .await
            .status(),
        404
    );
    assert_eq!(reg.send("GET", "/v2/del/manifests/v1").await.status(), 404);
    let r = reg.send("DELETE", &format!("/v2/del/manifests/{d}")).await;
    assert_oci_error!(r, 404, "MANIFEST_UNKNOWN");
    // Blob delete unlinks it from the repository.
    let b = reg.push_blob("del", b"blob to delete").await;
    assert_eq!(
        reg.send("DELETE", &format!("/v2/del/blobs/{b}"))
            .await
            .status(),
        202
    );
    let r = reg.send("GET", &format!("/v2/del/blobs/{b}")).await;
    assert_oci_error!(r, 404, "BLOB_UNKNOWN");
    let r = reg.send("DELETE", &format!("/v2/del/blobs/{b}")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), false).await;
    let (d, _) = reg.push_image("nd", "v1", "x").await;
    let b = reg.push_blob("nd", b"b").await;
    for p in [
        format!("/v2/nd/manifests/{d}"),
        "/v2/nd/manifests/v1".into(),
        format!("/v2/nd/blobs/{b}"),
    ] {
        let r = reg.send("DELETE", &p).await;
        assert_oci_error!(r, 405, "UNSUPPORTED", "{p}");
    }
    assert_eq!(
        reg.send("GET", &format!("/v2/nd/manifests/{d}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn hostile_paths_never_leave_the_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    let reg = TestRegistry::start(&root, true).await;
    for p in [
        "/v2/../../escape/blobs/uploads/",
        "/v2/..%2F..%2Fescape/blobs/uploads/",
        "/v2/a/%2E%2E/blobs/uploads/",
        "/v2/a/manifests/..%2F..%2F..%2Fescape",
        "/v2/a/blobs/uploads/..%2F..%2F..",
    ] {
        for m in ["POST", "PUT", "PATCH", "GET", "DELETE"] {
            let r = reg.req(m, p).body("x").send().await.unwrap();
            assert!(r.status().is_client_error(), "{m} {p}: {}", r.status());
        }
    }
    // Nothing was written outside the root (the root itself is made only when something is stored).
    let outside: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "root")
        .collect();
    assert!(outside.is_empty(), "written outside the root: {outside:?}");
    let r = reg.send("PATCH", "/v2/").await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn upload_resumes_after_restart_and_cuts_unacknowledged_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(dir.path(), true).await;
    let loc = header(
        &reg.send("POST", "/v2/res/blobs/uploads/").await,
        "location",
    )
    .unwrap();
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-5")
        .body(&b"first "[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    reg.stop().await;
    // A crash mid-chunk left bytes past the acknowledged offset (on a filesystem; in a bucket an
    // upload's bytes become visible only with the state that acknowledges them).
    if s3_settings().is_none() {
        let id = loc.rsplit('/').next().unwrap();
        let data = dir.path().join(format!(
            "docker/registry/v2/repositories/res/_uploads/{id}/data"
        ));
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&data)
            .unwrap()
            .write_all(b"GARBAGE")
            .unwrap();
    }
    let reg = TestRegistry::start(dir.path(), true).await;
    let r = reg.send("GET", &loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-5"));
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "6-11")
        .body(&b"second"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = Digest::sha256_of(b"first second");
    let r = reg.send("PUT", &format!("{loc}?digest={d}")).await;
    assert_eq!(r.status(), 201);
    let r = reg.send("GET", &format!("/v2/res/blobs/{d}")).await;
    assert_eq!(&r.bytes().await.unwrap()[..], b"first second");
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let (_d, reg) = registry().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}
