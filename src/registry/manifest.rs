//! Manifest parsing and validation, kept pure so it can be tested and fuzzed without a server.
//!
//! Manifests are stored byte-exact; this module only reads them to learn what they reference
//! (config, layers, child manifests, subject) so the push can be refused when something is missing,
//! and to learn the media type to answer with.

use serde_json::{Map, Value};

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a manifest is refused; each variant becomes `MANIFEST_INVALID` at the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not a JSON object: {0}")]
    NotJson(String),
    #[error(
        "manifest media type {0:?} is not supported (OCI image manifest or index, Docker schema 2 manifest or manifest list)"
    )]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {field:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    /// No `mediaType` field, and a `Content-Type` that says otherwise than the body's shape: once
    /// stored, the manifest is read without the header (by its shape), and would name other blobs
    /// than the ones checked now (garbage collection would then take the ones it uses).
    #[error(
        "manifest has no mediaType field and its shape (with or without \"manifests\") is not a {header:?}; add the mediaType field"
    )]
    ShapeMismatch { header: String },
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest field {0:?} is missing or malformed")]
    Field(&'static str),
    #[error("descriptor in {field:?} is invalid: {reason}")]
    Descriptor { field: &'static str, reason: String },
}

/// Whether a manifest describes one image (or artifact) or lists other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// A content descriptor (OCI image spec `descriptor.md`), the parts a registry needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// Foreign layers (Docker's Windows base layers) live at `urls` and are not pushed.
    pub has_urls: bool,
}

/// What the registry learns from a manifest it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Config and layers for images: blobs that must already be in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests for indexes: manifests that must already be in the repository.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// The type listed in the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

/// The media type part of a `Content-Type` header value, without parameters.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// The media type a stored manifest is served with: its `mediaType` field, or for OCI manifests that
/// omit it, what its shape says.
pub fn detect_media_type(body: &[u8]) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return OCI_MANIFEST.to_string();
    };
    if let Some(Value::String(mt)) = obj.get("mediaType") {
        return mt.clone();
    }
    if obj.contains_key("manifests") {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

fn descriptor(field: &'static str, v: &Value) -> Result<Descriptor, ManifestError> {
    let bad = |reason: &str| ManifestError::Descriptor {
        field,
        reason: reason.to_string(),
    };
    let obj = v.as_object().ok_or_else(|| bad("not an object"))?;
    let media_type = obj
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("mediaType missing"))?
        .to_string();
    let digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("digest missing"))?
        .parse::<Digest>()
        .map_err(|e| bad(&e.to_string()))?;
    let size = obj
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("size missing or negative"))?;
    let artifact_type = obj
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let has_urls = obj
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type,
        has_urls,
    })
}

fn descriptors(
    field: &'static str,
    obj: &Map<String, Value>,
    required: bool,
) -> Result<Vec<Descriptor>, ManifestError> {
    match obj.get(field) {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|d| descriptor(field, d)).collect(),
        _ => Err(ManifestError::Field(field)),
    }
}

/// What a stored manifest references (config, layers, child manifests) and its subject, if any.
pub fn references(body: &[u8]) -> Result<(Vec<Digest>, Option<Digest>), ManifestError> {
    let m = parse(None, body)?;
    Ok((
        m.blobs
            .iter()
            .chain(m.manifests.iter())
            .map(|d| d.digest.clone())
            .collect(),
        m.subject.map(|s| s.digest),
    ))
}

/// Parses and validates a manifest pushed with `content_type` (the request's `Content-Type`).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ManifestError::NotJson("top level is not an object".into()));
    };
    let field_type = match obj.get("mediaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ManifestError::Field("mediaType")),
    };
    let header_type = content_type.map(essence).filter(|s| !s.is_empty());
    let media_type = match (field_type, header_type) {
        (Some(f), Some(h)) if f != h && kind_of(h).is_some() => {
            return Err(ManifestError::MediaTypeMismatch {
                field: f.to_string(),
                header: h.to_string(),
            });
        }
        (Some(f), _) => f.to_string(),
        (None, Some(h)) if kind_of(h).is_some() => {
            let shape = if obj.contains_key("manifests") {
                Kind::Index
            } else {
                Kind::Image
            };
            if kind_of(h) != Some(shape) {
                return Err(ManifestError::ShapeMismatch {
                    header: h.to_string(),
                });
            }
            h.to_string()
        }
        (None, _) if obj.contains_key("manifests") => OCI_INDEX.to_string(),
        (None, _) => OCI_MANIFEST.to_string(),
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(v) => Some(descriptor("subject", v)?),
    };
    let explicit_artifact_type = match obj.get("artifactType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ManifestError::Field("artifactType")),
    };
    let annotations = match obj.get("annotations") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(ManifestError::Field("annotations")),
    };
    let (blobs, manifests, artifact_type) = match kind {
        Kind::Image => {
            let config = descriptor("config", obj.get("config").unwrap_or(&Value::Null))?;
            let layers = descriptors("layers", &obj, media_type == DOCKER_MANIFEST)?;
            let artifact_type = explicit_artifact_type.or(Some(config.media_type.clone()));
            let mut blobs = vec![config];
            blobs.extend(layers.into_iter().filter(|l| !l.has_urls));
            (blobs, Vec::new(), artifact_type)
        }
        Kind::Index => {
            let manifests = descriptors("manifests", &obj, true)?;
            (Vec::new(), manifests, explicit_artifact_type)
        }
    };
    Ok(Manifest {
        media_type,
        kind,
        blobs,
        manifests,
        subject,
        artifact_type,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            d(1),
            d(2)
        )
    }

    #[test]
    fn image_manifest_lists_its_blobs() {
        let m = parse(Some(OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.blobs[0].digest.to_string(), d(1));
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn artifact_with_subject() {
        let extra = format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}"#,
            d(3)
        );
        let m = parse(Some(OCI_MANIFEST), image(&extra).as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.unwrap().digest.to_string(), d(3));
    }

    #[test]
    fn index_lists_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d(4)
        );
        let m = parse(Some(OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert!(m.blobs.is_empty());
    }

    #[test]
    fn media_type_comes_from_header_when_field_absent() {
        let body = image("").replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        let m = parse(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(detect_media_type(body.as_bytes()), OCI_MANIFEST);
    }

    #[test]
    fn rejects_invalid() {
        let cases: Vec<(Option<&str>, String)> = vec![
            (Some(OCI_MANIFEST), "not json".into()),
            (Some(OCI_MANIFEST), "[1,2]".into()),
            (Some(OCI_INDEX), image("")),
            (
                Some(OCI_MANIFEST),
                image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1"),
            ),
            (
                Some(OCI_MANIFEST),
                image("").replace(&d(1), "sha256:nothex"),
            ),
            (
                Some(OCI_MANIFEST),
                image("").replace("\"size\":2", "\"size\":-2"),
            ),
            (
                Some(OCI_MANIFEST),
                image("").replace(OCI_MANIFEST, "application/x-unknown"),
            ),
            (
                Some(OCI_MANIFEST),
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#),
            ),
            (
                Some(OCI_INDEX),
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
            ),
            (Some(OCI_MANIFEST), image(r#","subject":"sha256:x""#)),
        ];
        for (ct, body) in cases {
            assert!(parse(ct, body.as_bytes()).is_err(), "accepted {body}");
        }
    }

    /// Found for the fuzz target `manifest` (a manifest accepted on push is read back the same):
    /// a Docker manifest without `mediaType` but with a `manifests` key was checked as an image on
    /// push and read back as an index, whose references leave out its config and layers.
    #[test]
    fn a_manifest_without_media_type_is_read_back_the_same() {
        let c = format!(r#"{{"mediaType":"x/y","digest":"{}","size":2}}"#, d(1));
        let body = format!(r#"{{"schemaVersion":2,"config":{c},"layers":[{c}],"manifests":[]}}"#);
        for h in [DOCKER_MANIFEST, OCI_MANIFEST] {
            let got = parse(Some(h), body.as_bytes());
            assert!(
                matches!(got, Err(ManifestError::ShapeMismatch { .. })),
                "{h}: {got:?}"
            );
        }
        let index = r#"{"schemaVersion":2,"layers":[]}"#;
        assert!(parse(Some(OCI_INDEX), index.as_bytes()).is_err());
        // A shape that agrees with the header is read back with the same references.
        let image = format!(r#"{{"schemaVersion":2,"config":{c},"layers":[{c}]}}"#);
        let pushed = parse(Some(DOCKER_MANIFEST), image.as_bytes()).unwrap();
        let (refs, _) = references(image.as_bytes()).unwrap();
        let want: Vec<Digest> = pushed.blobs.iter().map(|b| b.digest.clone()).collect();
        assert_eq!(refs, want);
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = image("").replace(
            r#""size":3}"#,
            r#""size":3,"urls":["https://example.invalid/l"]}"#,
        );
        let m = parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 1);
    }
}
