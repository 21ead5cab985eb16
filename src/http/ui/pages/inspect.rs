//! What the pages read out of a manifest and an image's config, pure (bytes in, facts out) so it
//! is tested without a server. Lenient: a field of the wrong shape is left out rather than
//! failing the page, since registries hold what clients pushed, and clients differ.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::registry::Digest;

/// The config media types of container images (anything else is an artifact's).
const IMAGE_CONFIGS: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The annotation oras and others name a file with.
pub const TITLE: &str = "org.opencontainers.image.title";

/// What a manifest is, for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image index or manifest list.
    Index,
    /// A container image.
    Image,
    /// An image manifest whose config or `artifactType` says it is not a container image.
    Artifact,
}

/// A content descriptor as the pages show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub media_type: String,
    /// `None` when the descriptor's digest is not a valid one (shown, never linked).
    pub digest: Option<Digest>,
    pub digest_text: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// `os/architecture[/variant]` of an index's child.
    pub platform: Option<String>,
}

impl Desc {
    /// The file name an artifact's layer carries.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE).map(String::as_str)
    }
}

/// A manifest, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    pub config: Option<Desc>,
    pub layers: Vec<Desc>,
    pub children: Vec<Desc>,
    pub subject: Option<Desc>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Bytes an image's pull fetches besides the manifest: its config and layers.
    pub fn image_size(&self) -> u64 {
        self.config
            .iter()
            .chain(&self.layers)
            .map(|d| d.size)
            .fold(0, u64::saturating_add)
    }

    /// The platforms of an index's children, in order, without the `unknown/unknown` entries
    /// build tools add for attestations.
    pub fn platforms(&self) -> Vec<String> {
        self.children
            .iter()
            .filter_map(|c| c.platform.clone())
            .filter(|p| !p.starts_with("unknown/unknown"))
            .collect()
    }
}

fn strings(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

/// `os/architecture[/variant]` of a platform object.
pub fn platform(p: &Value) -> Option<String> {
    let os = p.get("os").and_then(Value::as_str)?;
    let arch = p.get("architecture").and_then(Value::as_str)?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

fn desc(v: &Value) -> Option<Desc> {
    let digest_text = text(v, "digest")?;
    Some(Desc {
        media_type: text(v, "mediaType").unwrap_or_default(),
        digest: digest_text.parse().ok(),
        digest_text,
        size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
        artifact_type: text(v, "artifactType"),
        annotations: strings(v.get("annotations")),
        platform: v.get("platform").and_then(platform),
    })
}

fn descs(v: Option<&Value>) -> Vec<Desc> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(desc).collect())
        .unwrap_or_default()
}

/// Reads a stored manifest; `media_type` is the one it is served with.
pub fn manifest(media_type: &str, bytes: &[u8]) -> Result<Manifest, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let config = v.get("config").and_then(desc);
    let artifact_type = text(&v, "artifactType");
    let children = descs(v.get("manifests"));
    let kind = if v.get("manifests").is_some() {
        Kind::Index
    } else if artifact_type.is_some()
        || config
            .as_ref()
            .is_some_and(|c| !IMAGE_CONFIGS.contains(&c.media_type.as_str()))
    {
        Kind::Artifact
    } else {
        Kind::Image
    };
    Ok(Manifest {
        media_type: media_type.to_string(),
        kind,
        config,
        layers: descs(v.get("layers")),
        children,
        subject: v.get("subject").and_then(desc),
        artifact_type,
        annotations: strings(v.get("annotations")),
    })
}

/// An image's config, as the page summarises it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub created: Option<String>,
    pub platform: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    /// The names of the environment variables, never their values (they may hold secrets).
    pub env_keys: Vec<String>,
    pub history: Vec<Step>,
}

/// One step of the build, as the build wrote it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Step {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub empty_layer: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    created: Option<String>,
    config: Option<RawRuntime>,
    history: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct RawRuntime {
    user: Option<String>,
    working_dir: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    env: Option<Vec<String>>,
}

/// Reads an image's config blob.
pub fn config(bytes: &[u8]) -> Result<Config, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let raw: RawConfig = serde_json::from_value(v.clone()).unwrap_or_default();
    let rt = raw.config.unwrap_or_default();
    Ok(Config {
        created: raw.created,
        platform: platform(&v),
        user: rt.user.filter(|u| !u.is_empty()),
        working_dir: rt.working_dir.filter(|w| !w.is_empty()),
        entrypoint: rt.entrypoint,
        cmd: rt.cmd,
        labels: rt.labels.unwrap_or_default(),
        exposed_ports: rt.exposed_ports.unwrap_or_default().into_keys().collect(),
        env_keys: rt
            .env
            .unwrap_or_default()
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string())
            .collect(),
        history: raw
            .history
            .into_iter()
            .filter_map(|h| serde_json::from_value(h).ok())
            .collect(),
    })
}

/// Whether a config of `media_type` is a container image's (its page shows a config summary).
pub fn is_image_config(media_type: &str) -> bool {
    IMAGE_CONFIGS.contains(&media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn an_image() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":300}}],
            "annotations":{{"org.opencontainers.image.source":"https://example.org/x"}}}}"#
        );
        let m = manifest("application/vnd.oci.image.manifest.v1+json", m.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.image_size(), 310);
        assert_eq!(m.layers[0].digest, Some(D2.parse().unwrap()));
        assert_eq!(
            m.annotations["org.opencontainers.image.source"],
            "https://example.org/x"
        );
    }

    #[test]
    fn an_index_lists_platforms_without_attestations() {
        let m = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let m = manifest("application/vnd.oci.image.index.v1+json", m.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.platforms(), ["linux/amd64", "linux/arm64/v8"]);
    }

    #[test]
    fn an_artifact_has_titled_files() {
        let m = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/vnd.example.sbom",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"text/plain","digest":"{D2}","size":5,"annotations":{{"{TITLE}":"notes.txt"}}}}],
            "subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":7}}}}"#
        );
        let m = manifest("application/vnd.oci.image.manifest.v1+json", m.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Artifact);
        assert_eq!(m.layers[0].title(), Some("notes.txt"));
        assert_eq!(m.subject.unwrap().digest_text, D1);
        // An artifact by its config type alone (oras before artifactType).
        let m = format!(
            r#"{{"config":{{"mediaType":"application/vnd.example.config","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        assert_eq!(manifest("x", m.as_bytes()).unwrap().kind, Kind::Artifact);
    }

    #[test]
    fn broken_fields_are_left_out() {
        let m = manifest(
            "x",
            br#"{"layers":[{"digest":"nope","size":-1},7],"config":3}"#,
        )
        .unwrap();
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].digest, None);
        assert_eq!(m.config, None);
        assert!(manifest("x", b"[1]").is_err());
        assert!(manifest("x", b"{").is_err());
    }

    #[test]
    fn config_summary() {
        let c = br#"{"created":"2026-01-02T03:04:05Z","os":"linux","architecture":"arm64","variant":"v8",
            "config":{"User":"app","Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["PATH=/bin","TOKEN=secret"],
            "Labels":{"a":"b"},"ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/srv"},
            "history":[{"created_by":"ADD rootfs /"},{"created_by":"CMD [\"--serve\"]","empty_layer":true},"bad"]}"#;
        let c = config(c).unwrap();
        assert_eq!(c.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(c.entrypoint, Some(vec!["/bin/app".to_string()]));
        assert_eq!(c.env_keys, ["PATH", "TOKEN"], "names only, never values");
        assert_eq!(c.exposed_ports, ["8080/tcp"]);
        assert_eq!(c.labels["a"], "b");
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
        // A config of another shape still gives what it can.
        let c = config(br#"{"os":"linux","architecture":"amd64","config":"odd"}"#).unwrap();
        assert_eq!(c.platform.as_deref(), Some("linux/amd64"));
        assert!(config(b"not json").is_err());
    }
}
