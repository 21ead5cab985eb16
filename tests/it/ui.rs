//! The web UI in process: a registry with an account and an access rule, images pushed through
//! the API (a single image with a referrer, a multi-platform index, an artifact with a file, a
//! repository only its owner may see), then the pages read as an anonymous visitor and as the
//! owner: their markup per the UI's contract, login, a refused forged POST, and a delete that
//! the API then confirms.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use registryd::auth::policy::AccessRule;
use registryd::auth::{Auth, AuthSettings, Policy};
use registryd::health::Health;
use registryd::http::handlers::{App, ConnLimits, Settings};
use registryd::http::server;
use registryd::proxy::Proxy;
use registryd::registry::Digest;
use registryd::shutdown::Notifier;
use registryd::storage::Storage;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Ui {
    base: String,
    host: String,
    /// Follows no redirects, sends no credentials: a browser as the tests drive it.
    browser: reqwest::Client,
    /// alice's API client, for pushes and checks.
    api: reqwest::Client,
    app: Arc<App>,
    stop: Notifier,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The cookies it sets, by name.
    fn cookies(&self) -> HashMap<String, String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| {
                let v = v.to_str().unwrap();
                let pair = v.split(';').next().unwrap();
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// The value of the hidden `csrf` field of its forms.
    fn csrf(&self) -> String {
        attr_after(&self.body, "name=\"csrf\"", "value").expect("a form with a csrf field")
    }

    fn has(&self, needle: &str) -> bool {
        self.body.contains(needle)
    }
}

/// The value of attribute `attr` in the first tag at or after `marker`.
fn attr_after(body: &str, marker: &str, attr: &str) -> Option<String> {
    let at = body.find(marker)?;
    let rest = &body[at..];
    let key = format!("{attr}=\"");
    let start = rest.find(&key)? + key.len();
    let end = rest[start..].find('"')? + start;
    Some(rest[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}

/// The `<tr ...>` row of a table whose attributes contain `marker`, up to its `</tr>`.
fn row<'a>(body: &'a str, marker: &str) -> &'a str {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no row {marker} in {body}"));
    let end = body[at..].find("</tr>").unwrap() + at;
    &body[at..end]
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

async fn start(root: &Path, delete_enabled: bool) -> Ui {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "alice:{}\nbob:{}\n",
            bcrypt::hash("alice-pw", 4).unwrap(),
            bcrypt::hash("bob-pw", 4).unwrap()
        ),
    )
    .unwrap();
    // secret/ is alice's alone; bob may pull everything else but push nothing under team/.
    let rules = [
        AccessRule {
            prefix: "secret".into(),
            pull: vec!["alice".into()],
            push: vec!["alice".into()],
        },
        AccessRule {
            prefix: "team".into(),
            pull: vec!["anonymous".into()],
            push: vec!["alice".into()],
        },
    ];
    let auth = Auth::from_settings(&AuthSettings {
        htpasswd,
        realm: "test".into(),
        cache_ttl: Duration::from_secs(60),
        max_failures: 5,
        policy: Policy::new(None, Vec::new(), &rules, &[], true),
    })
    .unwrap();
    let storage = Storage::open(root).unwrap();
    let app = App::build(
        storage,
        Health::always(),
        Settings::basic(delete_enabled, 4 << 20),
        Proxy::none(),
        auth,
        ConnLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Notifier::new();
    let task = tokio::spawn(server::serve(
        listener,
        app.clone(),
        None,
        stop.subscribe(),
        Duration::from_secs(5),
    ));
    let mut auth_headers = reqwest::header::HeaderMap::new();
    auth_headers.insert("authorization", basic("alice", "alice-pw").parse().unwrap());
    Ui {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        browser: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        api: reqwest::Client::builder()
            .no_proxy()
            .default_headers(auth_headers)
            .build()
            .unwrap(),
        app,
        stop,
        task,
        _dir: dir,
    }
}

impl Ui {
    async fn stop(self) {
        self.stop.notify();
        let _ = self.task.await;
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self
            .api
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        d
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Digest {
        let r = self
            .api
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "put manifest: {}", r.text().await.unwrap());
        Digest::sha256_of(body)
    }

    /// Pushes an image of `arch` with two layers to `repo` (by digest unless `tag`), returning
    /// its digest and manifest bytes.
    async fn push_image(&self, repo: &str, tag: Option<&str>, arch: &str) -> (Digest, Vec<u8>) {
        let config = json!({
            "architecture": arch, "os": "linux", "created": "2026-01-02T03:04:05Z",
            "config": {
                "Entrypoint": ["/bin/app"], "Cmd": ["--serve"],
                "Env": ["PATH=/bin", "API_TOKEN=hunter2"],
                "Labels": {"org.example.team": "core"},
                "ExposedPorts": {"8080/tcp": {}}
            },
            "history": [
                {"created_by": "ADD rootfs.tar / # buildkit"},
                {"created_by": "ENTRYPOINT [\"/bin/app\"]", "empty_layer": true}
            ]
        })
        .to_string();
        let c = self.push_blob(repo, config.as_bytes()).await;
        let one = format!("layer one of {repo} {arch}").repeat(100);
        let two = format!("layer two of {repo} {arch}");
        let l1 = self.push_blob(repo, one.as_bytes()).await;
        let l2 = self.push_blob(repo, two.as_bytes()).await;
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": c.to_string(), "size": config.len()},
            "layers": [
                {"mediaType": LAYER, "digest": l1.to_string(), "size": one.len()},
                {"mediaType": LAYER, "digest": l2.to_string(), "size": two.len()}
            ],
            "annotations": {"org.opencontainers.image.source": "https://example.org/app"}
        })
        .to_string()
        .into_bytes();
        let d = Digest::sha256_of(&manifest);
        let reference = tag.map_or_else(|| d.to_string(), str::to_string);
        self.put_manifest(repo, &reference, OCI_MANIFEST, &manifest)
            .await;
        (d, manifest)
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = self.browser.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        page(req.send().await.unwrap()).await
    }

    /// Posts a form as a page of this registry would (its Origin), with `cookie`.
    async fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)], origin: &str) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let r = self
            .browser
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .header("origin", origin)
            .body(body)
            .send()
            .await
            .unwrap();
        page(r).await
    }

    /// Logs `user` in through the form; returns the `Cookie` header value of the session.
    async fn login(&self, user: &str, password: &str) -> String {
        let form = self.get("/ui/login", None).await;
        assert_eq!(form.status, 200);
        assert!(form.has("<form id=\"login\""));
        let form_cookie = format!("registryd_form={}", form.cookies()["registryd_form"]);
        let r = self
            .post(
                "/ui/login",
                &form_cookie,
                &[
                    ("csrf", &form.csrf()),
                    ("username", user),
                    ("password", password),
                    ("next", "/ui/"),
                ],
                &self.base,
            )
            .await;
        assert_eq!(r.status, 303, "login: {}", r.body);
        assert_eq!(r.header("location"), "/ui/");
        let session = &r.cookies()["registryd_session"];
        assert_eq!(session.len(), 43);
        let set = r.header("set-cookie");
        assert!(
            set.contains("HttpOnly")
                && set.contains("SameSite=Strict")
                && set.contains("Path=/ui/")
        );
        format!("registryd_session={session}")
    }

    async fn api_status(&self, path: &str) -> u16 {
        self.api
            .get(format!("{}{path}", self.base))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

async fn page(r: reqwest::Response) -> Page {
    Page {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// What the tests push: returns (image digest, index digest, artifact digest, the file's bytes).
async fn seed(ui: &Ui) -> (Digest, Digest, Digest, Vec<u8>) {
    let (image, image_manifest) = ui.push_image("team/app", Some("v1"), "amd64").await;
    ui.push_image("secret/hidden", Some("v1"), "amd64").await;
    // A multi-platform index.
    let (amd, amd_m) = ui.push_image("team/multi", None, "amd64").await;
    let (arm, arm_m) = ui.push_image("team/multi", None, "arm64").await;
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": amd_m.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": arm_m.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
        ]
    })
    .to_string()
    .into_bytes();
    let index = ui
        .put_manifest("team/multi", "latest", OCI_INDEX, &index)
        .await;
    // An artifact with a file, referring to the image (as `oras attach` makes one).
    let empty = ui.push_blob("team/app", b"{}").await;
    let file = b"release notes: all good\n".to_vec();
    let f = ui.push_blob("team/app", &file).await;
    let artifact = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.notes",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": f.to_string(), "size": file.len(),
                    "annotations": {"org.opencontainers.image.title": "notes.txt"}}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.to_string(), "size": image_manifest.len()}
    })
    .to_string()
    .into_bytes();
    let artifact_digest = Digest::sha256_of(&artifact);
    ui.put_manifest(
        "team/app",
        &artifact_digest.to_string(),
        OCI_MANIFEST,
        &artifact,
    )
    .await;
    (image, index, artifact_digest, file)
}

#[tokio::test]
async fn pages_show_what_was_pushed_to_whoever_may_see_it() {
    let root = tempfile::tempdir().unwrap();
    let ui = start(root.path(), true).await;
    let (image, index, artifact, file) = seed(&ui).await;

    // `/` and `/ui` lead to the repositories.
    for p in ["/", "/ui"] {
        let r = ui.get(p, None).await;
        assert_eq!((r.status, r.header("location")), (303, "/ui/"), "{p}");
    }

    // Anonymous: team/ is public, secret/ hidden everywhere, search included.
    let home = ui.get("/ui/", None).await;
    assert_eq!(home.status, 200);
    for h in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(!home.header(h).is_empty(), "{h} on every UI page");
    }
    assert!(
        home.header("content-security-policy")
            .contains("default-src 'self'")
    );
    assert!(
        home.header("content-security-policy")
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(home.header("x-frame-options"), "DENY");
    assert!(home.has("<html lang=\"en\">") && home.has("<nav") && home.has("<main id=\"main\">"));
    assert!(home.has("<table id=\"repositories\">"));
    let app_row = row(&home.body, "data-repository=\"team/app\"");
    assert!(app_row.contains("href=\"/ui/r/team/app\""), "{app_row}");
    assert!(home.has("data-repository=\"team/multi\""));
    assert!(
        !home.has("secret/hidden"),
        "a hidden repository is not listed"
    );
    assert!(!home.has("id=\"user\""), "nobody is signed in");
    assert!(home.has("href=\"/ui/login\""));
    let search = ui.get("/ui/?q=secret", None).await;
    assert!(
        !search.has("data-repository=\"secret/hidden\""),
        "nor found"
    );
    let search = ui.get("/ui/?q=multi", None).await;
    assert!(
        search.has("data-repository=\"team/multi\"") && !search.has("data-repository=\"team/app\"")
    );
    // Pages of one: the next-page link leads on.
    let first = ui.get("/ui/?n=1", None).await;
    assert!(
        first.has("data-repository=\"team/app\"") && !first.has("data-repository=\"team/multi\"")
    );
    let next = attr_after(&first.body, "rel=\"next\"", "href").unwrap();
    let second = ui.get(&next, None).await;
    assert!(second.has("data-repository=\"team/multi\""), "{next}");
    assert!(!second.has("rel=\"next\""));
    // The assets the pages link are served, for a year.
    let css = attr_after(&home.body, "rel=\"stylesheet\"", "href").unwrap();
    let css = ui.get(&css, None).await;
    assert_eq!(css.status, 200);
    assert!(css.header("cache-control").contains("max-age=31536000"));
    assert!(css.body.contains("prefers-color-scheme: dark"));

    // A repository: tags with digest, pull command, referrer count; no delete control.
    let repo = ui.get("/ui/r/team/app", None).await;
    assert_eq!(repo.status, 200);
    assert!(repo.has("<table id=\"tags\""));
    let v1 = row(&repo.body, "data-tag=\"v1\"");
    assert!(v1.contains(&format!("data-digest=\"{image}\"")), "{v1}");
    assert!(
        v1.contains(&format!("data-copy=\"{image}\"")),
        "a copy button for the digest"
    );
    assert!(
        v1.contains(&format!("docker pull {}/team/app:v1", ui.host)),
        "{v1}"
    );
    assert!(
        v1.contains("<td class=\"num\">1</td>"),
        "one referrer: {v1}"
    );
    assert!(
        !repo.has("/-/delete"),
        "anonymous visitors get no delete control"
    );
    assert!(repo.has("<table id=\"untagged\""));
    assert!(row(&repo.body, &format!("<tr data-digest=\"{artifact}\"")).contains("/-/manifest/"));

    // The index: platforms in the repository and on its manifest page.
    let multi = ui.get("/ui/r/team/multi", None).await;
    let latest = row(&multi.body, "data-tag=\"latest\"");
    assert!(
        latest.contains("linux/amd64") && latest.contains("linux/arm64/v8"),
        "{latest}"
    );
    let m = ui
        .get(&format!("/ui/r/team/multi/-/manifest/{index}"), None)
        .await;
    assert_eq!(m.status, 200);
    assert!(m.has("<table id=\"platforms\""));
    assert!(m.has("data-platform=\"linux/amd64\"") && m.has("data-platform=\"linux/arm64/v8\""));
    assert!(m.has("<pre id=\"raw\""));

    // The image by tag: config summary, layers with sizes, annotations, its referrer, raw JSON.
    let m = ui.get("/ui/r/team/app/-/manifest/v1", None).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.has(&image.to_string()));
    assert!(m.has("<section id=\"config\""));
    for fact in [
        "/bin/app",
        "--serve",
        "8080/tcp",
        "org.example.team",
        "2026-01-02T03:04:05Z",
        "ADD rootfs.tar /",
    ] {
        assert!(m.has(fact), "config fact {fact}");
    }
    assert!(
        m.has("API_TOKEN") && !m.has("hunter2"),
        "environment names, never values"
    );
    assert!(m.has("<table id=\"layers\""));
    let layer_size = format!("{}", "layer one of team/app amd64".len() * 100);
    let one = Digest::sha256_of("layer one of team/app amd64".repeat(100).as_bytes());
    let l1 = row(&m.body, &format!("<tr data-digest=\"{one}\""));
    assert!(
        l1.contains(LAYER) && l1.contains(" KiB"),
        "{l1} ({layer_size} bytes)"
    );
    assert!(m.has("<section id=\"annotations\"") && m.has("https://example.org/app"));
    let referrer = row(&m.body, &format!("<tr data-digest=\"{artifact}\""));
    assert!(
        referrer.contains("data-artifact-type=\"application/vnd.example.notes\""),
        "{referrer}"
    );
    assert!(m.has("&#34;schemaVersion&#34;:2"), "the raw JSON, escaped");

    // The artifact: its file downloads under its title.
    let a = ui
        .get(&format!("/ui/r/team/app/-/manifest/{artifact}"), None)
        .await;
    assert!(a.has("<table id=\"files\""));
    let href = attr_after(&a.body, "<table id=\"files\"", "href").unwrap();
    assert!(href.starts_with(&format!(
        "/ui/r/team/app/-/blob/{}",
        Digest::sha256_of(&file)
    )));
    let download = ui
        .browser
        .get(format!("{}{href}", ui.base))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"notes.txt\""),
        "{disposition}"
    );
    assert!(
        download.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(download.bytes().await.unwrap().to_vec(), file);

    // Hidden and unknown things are not found, alike.
    for p in [
        "/ui/r/secret/hidden",
        "/ui/r/secret/hidden/-/manifest/v1",
        "/ui/r/no/such",
        "/ui/r/team/app/-/manifest/v9",
        "/ui/nothing",
    ] {
        let r = ui.get(p, None).await;
        assert_eq!(r.status, 404, "{p}");
        assert!(r.has("<main id=\"main\">"), "a page, not a bare error: {p}");
    }

    // alice sees her repository, in the list and by search.
    let alice = ui.login("alice", "alice-pw").await;
    let home = ui.get("/ui/", Some(&alice)).await;
    assert!(home.has("<span id=\"user\">alice</span>"));
    assert!(home.has("data-repository=\"secret/hidden\""));
    assert!(
        ui.get("/ui/?q=secret", Some(&alice))
            .await
            .has("data-repository=\"secret/hidden\"")
    );
    assert_eq!(
        ui.get("/ui/r/secret/hidden", Some(&alice)).await.status,
        200
    );

    // The status pages say what is not reported yet; the uploads page lists none.
    let node = ui.get("/ui/node", None).await;
    assert_eq!(node.status, 200);
    assert!(node.has("<section id=\"node\"") && node.has("<table id=\"cluster\""));
    assert!(node.has("not reported yet") || node.has("Not reported yet"));
    ui.app.status.set_cluster(vec![
        registryd::status::Heartbeat {
            node: "n1".into(),
            seen: Some(std::time::SystemTime::now()),
            ready: true,
            ..Default::default()
        },
        registryd::status::Heartbeat {
            node: "n2".into(),
            seen: Some(std::time::SystemTime::now() - Duration::from_secs(3600)),
            ..Default::default()
        },
    ]);
    let node = ui.get("/ui/node", None).await;
    assert!(node.has("<tr data-node=\"n1\" data-state=\"alive\">"));
    assert!(node.has("<tr data-node=\"n2\" data-state=\"stale\">"));
    let up = ui.get("/ui/upstreams", None).await;
    assert!(
        up.status == 200
            && up.has("<table id=\"upstreams\">")
            && up.has("No upstream reported yet")
    );
    let uploads = ui.get("/ui/uploads", Some(&alice)).await;
    assert!(uploads.status == 200 && uploads.has("<table id=\"uploads\">"));

    ui.stop().await;
}

#[tokio::test]
async fn login_delete_and_refused_forgeries() {
    let root = tempfile::tempdir().unwrap();
    let ui = start(root.path(), true).await;
    let (image, _, _, _) = seed(&ui).await;

    // A wrong password is refused on the page, with the form again.
    let form = ui.get("/ui/login", None).await;
    let form_cookie = format!("registryd_form={}", form.cookies()["registryd_form"]);
    let wrong = ui
        .post(
            "/ui/login",
            &form_cookie,
            &[
                ("csrf", &form.csrf()),
                ("username", "alice"),
                ("password", "nope"),
            ],
            &ui.base,
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.has("Wrong user name or password") && wrong.has("<form id=\"login\""));
    assert!(!wrong.cookies().contains_key("registryd_session"));
    // A login posted from another site, or without the form's token, is refused.
    let forged = ui
        .post(
            "/ui/login",
            &form_cookie,
            &[
                ("csrf", &form.csrf()),
                ("username", "alice"),
                ("password", "alice-pw"),
            ],
            "https://evil.example",
        )
        .await;
    assert_eq!(forged.status, 403);
    let tokenless = ui
        .post(
            "/ui/login",
            &form_cookie,
            &[("username", "alice"), ("password", "alice-pw")],
            &ui.base,
        )
        .await;
    assert_eq!(tokenless.status, 403);

    // bob may pull team/ but not delete there: no control, and the confirmation says so.
    let bob = ui.login("bob", "bob-pw").await;
    assert!(!ui.get("/ui/r/team/app", Some(&bob)).await.has("/-/delete"));
    assert_eq!(
        ui.get("/ui/r/team/app/-/delete?tag=v1", Some(&bob))
            .await
            .status,
        403
    );

    let alice = ui.login("alice", "alice-pw").await;
    let repo = ui.get("/ui/r/team/app", Some(&alice)).await;
    let v1 = row(&repo.body, "data-tag=\"v1\"");
    assert!(
        v1.contains("href=\"/ui/r/team/app/-/delete?tag=v1\""),
        "{v1}"
    );

    let confirm = ui.get("/ui/r/team/app/-/delete?tag=v1", Some(&alice)).await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm
            .has("<form id=\"confirm-delete\" method=\"post\" action=\"/ui/r/team/app/-/delete\">")
    );
    let token = confirm.csrf();
    // Forged: from another site with the right token, from this site with a wrong one or
    // none, and a token of another visitor (bob's session).
    let bob_token = ui.get("/ui/r/team/app", Some(&bob)).await.csrf();
    for (fields, origin) in [
        (
            vec![("csrf", token.as_str()), ("tag", "v1")],
            "https://evil.example",
        ),
        (vec![("csrf", "x"), ("tag", "v1")], ui.base.as_str()),
        (vec![("tag", "v1")], ui.base.as_str()),
        (
            vec![("csrf", bob_token.as_str()), ("tag", "v1")],
            ui.base.as_str(),
        ),
    ] {
        let r = ui
            .post("/ui/r/team/app/-/delete", &alice, &fields, origin)
            .await;
        assert_eq!(r.status, 403, "{fields:?} from {origin}");
    }
    let r = ui
        .browser
        .post(format!("{}/ui/r/team/app/-/delete", ui.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &alice)
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={token}&tag=v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "Sec-Fetch-Site cross-site");
    assert_eq!(
        ui.api_status("/v2/team/app/manifests/v1").await,
        200,
        "nothing was deleted"
    );

    // The real thing: the tag goes, the manifest stays by digest.
    let done = ui
        .post(
            "/ui/r/team/app/-/delete",
            &alice,
            &[("csrf", &token), ("tag", "v1")],
            &ui.base,
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), "/ui/r/team/app?deleted_tag=v1");
    assert_eq!(ui.api_status("/v2/team/app/manifests/v1").await, 404);
    assert_eq!(
        ui.api_status(&format!("/v2/team/app/manifests/{image}"))
            .await,
        200
    );
    let after = ui.get("/ui/r/team/app?deleted_tag=v1", Some(&alice)).await;
    assert!(after.has("Deleted tag v1."));
    assert!(!after.has("data-tag=\"v1\""));

    // A manifest by digest, with the tags naming it.
    let confirm = ui
        .get(
            &format!("/ui/r/team/multi/-/delete?digest={}", ui_index(&ui).await),
            Some(&alice),
        )
        .await;
    assert!(
        confirm.has("<code>latest</code>"),
        "the tags that go with it are named"
    );
    let d = attr_after(&confirm.body, "name=\"digest\"", "value").unwrap();
    let done = ui
        .post(
            "/ui/r/team/multi/-/delete",
            &alice,
            &[("csrf", &confirm.csrf()), ("digest", &d)],
            &ui.base,
        )
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(
        ui.api_status(&format!("/v2/team/multi/manifests/{d}"))
            .await,
        404
    );
    assert_eq!(ui.api_status("/v2/team/multi/manifests/latest").await, 404);

    // Read-only for lack of space: the page says why and the delete is refused.
    ui.app
        .health
        .set_low_space(Some("12 MiB free of 100 MiB".into()));
    let confirm = ui
        .get(
            &format!("/ui/r/team/app/-/delete?digest={image}"),
            Some(&alice),
        )
        .await;
    assert_eq!(confirm.status, 503);
    assert!(confirm.has("nearly full") && !confirm.has("confirm-delete"));
    let refused = ui
        .post(
            "/ui/r/team/app/-/delete",
            &alice,
            &[("csrf", &token), ("digest", &image.to_string())],
            &ui.base,
        )
        .await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        ui.api_status(&format!("/v2/team/app/manifests/{image}"))
            .await,
        200
    );
    ui.app.health.set_low_space(None);

    // Logout ends the session for good.
    let out = ui
        .post("/ui/logout", &alice, &[("csrf", &token)], &ui.base)
        .await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let home = ui.get("/ui/", Some(&alice)).await;
    assert!(!home.has("id=\"user\""), "the old cookie no longer logs in");
    assert!(!home.has("secret/hidden"));
    assert_eq!(ui.get("/ui/logout", None).await.status, 405);

    ui.stop().await;
}

/// The digest `team/multi:latest` names now.
async fn ui_index(ui: &Ui) -> String {
    let r = ui
        .api
        .head(format!("{}/v2/team/multi/manifests/latest", ui.base))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn deletes_disabled_and_storage_down_are_said_on_the_page() {
    let root = tempfile::tempdir().unwrap();
    let ui = start(root.path(), false).await;
    ui.push_image("team/app", Some("v1"), "amd64").await;
    let alice = ui.login("alice", "alice-pw").await;
    let repo = ui.get("/ui/r/team/app", Some(&alice)).await;
    assert!(!repo.has("/-/delete?"), "no control when deletes are off");
    assert!(repo.has("storage.delete_enabled = false"));
    let confirm = ui.get("/ui/r/team/app/-/delete?tag=v1", Some(&alice)).await;
    assert_eq!(confirm.status, 405);
    assert!(confirm.has("deletes are disabled") && !confirm.has("confirm-delete"));
    let token = ui.get("/ui/", Some(&alice)).await.csrf();
    let r = ui
        .post(
            "/ui/r/team/app/-/delete",
            &alice,
            &[("csrf", &token), ("tag", "v1")],
            &ui.base,
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(ui.api_status("/v2/team/app/manifests/v1").await, 200);
    ui.stop().await;

    // A registry whose storage is not usable answers every storage page with 503 and why; the
    // node page still answers.
    let root2 = tempfile::tempdir().unwrap();
    let guard = registryd::node::mount::MountGuard::new(root2.path().join("not-a-mount"), None);
    let storage = Storage::open(root2.path()).unwrap();
    let app = App::build(
        storage,
        Health::new(Some(guard)),
        Settings::basic(true, 4 << 20),
        Proxy::none(),
        Auth::open(),
        ConnLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Notifier::new();
    let task = tokio::spawn(server::serve(
        listener,
        app,
        None,
        stop.subscribe(),
        Duration::from_secs(5),
    ));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for p in ["/ui/", "/ui/r/a", "/ui/uploads"] {
        let r = client
            .get(format!("http://{addr}{p}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{p}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("storage unavailable") && body.contains("not checked yet"),
            "{body}"
        );
    }
    let r = client
        .get(format!("http://{addr}/ui/node"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop.notify();
    let _ = task.await;
}
