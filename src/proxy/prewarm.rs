//! `registryd pull REF...`: fetch images into the cache ahead of time (every platform of an index,
//! or the chosen ones), through the same code and locks as pulls through the daemon, so a cluster
//! can be warmed before it goes offline while the daemons keep serving.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use futures_util::StreamExt;

use super::{Freshness, Proxy, ProxyError, Target};
use crate::registry::manifest::{self, Kind};
use crate::registry::{Digest, Reference, RepoName};
use crate::storage::Storage;

/// What one `pull` stored.
#[derive(Debug, Default)]
pub struct Summary {
    pub manifests: usize,
    pub blobs_fetched: usize,
    pub blobs_present: usize,
    pub bytes_fetched: u64,
}

/// Splits `name[:tag]` or `name@digest` (tag `latest` when none is given).
pub fn parse_ref(s: &str) -> Result<(RepoName, Reference), String> {
    let (name, reference) = match s.split_once('@') {
        Some((n, d)) => (n, d.to_string()),
        None => match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (s, "latest".to_string()),
        },
    };
    let name: RepoName = name.parse().map_err(|e| format!("{s}: {e}"))?;
    let reference: Reference = reference.parse().map_err(|e| format!("{s}: {e}"))?;
    Ok((name, reference))
}

/// Fetches `reference` of `name` (a name under an upstream's prefix, or a bare name the default
/// upstream serves) with every blob it needs. `platforms` (`os/arch[/variant]`) limits the images of
/// an index; empty means all.
pub async fn pull(
    proxy: &Proxy,
    storage: &Storage,
    name: &RepoName,
    reference: &Reference,
    platforms: &[String],
) -> Result<Summary, String> {
    let t = proxy.target(name, None).ok_or_else(|| {
        format!(
            "{name} is not under an upstream's prefix (configured: {}); name it like docker.io/library/alpine",
            proxy.upstream_names().join(", ")
        )
    })?;
    let mut summary = Summary::default();
    let (digest, m, how) = proxy
        .manifest(storage, &t, reference)
        .await
        .map_err(|e| format!("{name}:{reference}: {e}"))?;
    if how == Freshness::Stale {
        eprintln!(
            "warning: {name}:{reference}: the upstream could not be reached; the cached copy is kept"
        );
    }
    summary.manifests += 1;
    let parsed = manifest::parse(None, &m.bytes).map_err(|e| format!("{name}@{digest}: {e}"))?;
    let mut images = Vec::new();
    if parsed.kind == Kind::Index {
        let wanted = chosen_children(&m.bytes, platforms);
        if wanted.is_empty() {
            return Err(format!(
                "{name}:{reference} has no image for {}",
                platforms.join(", ")
            ));
        }
        for child in wanted {
            let (_, cm, _) = proxy
                .manifest(storage, &t, &Reference::Digest(child.clone()))
                .await
                .map_err(|e| format!("{name}@{child}: {e}"))?;
            summary.manifests += 1;
            images.push(
                manifest::parse(None, &cm.bytes).map_err(|e| format!("{name}@{child}: {e}"))?,
            );
        }
    } else {
        images.push(parsed);
    }
    for image in images {
        for blob in image.blobs.iter().filter(|b| !b.has_urls) {
            fetch_one(proxy, storage, &t, &blob.digest, blob.size, &mut summary)
                .await
                .map_err(|e| format!("{name}: blob {}: {e}", blob.digest))?;
        }
    }
    Ok(summary)
}

/// The child manifests of an index for the wanted platforms (all when none are given).
fn chosen_children(index: &[u8], platforms: &[String]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(index) else {
        return Vec::new();
    };
    let Some(list) = v.get("manifests").and_then(|m| m.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .filter(|d| {
            if platforms.is_empty() {
                return true;
            }
            let p = d.get("platform");
            let field = |k: &str| {
                p.and_then(|p| p.get(k))
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
            platforms.iter().any(|want| {
                let mut w = want.split('/');
                w.next() == Some(os.as_str())
                    && w.next() == Some(arch.as_str())
                    && w.next().is_none_or(|v| v == variant)
            })
        })
        .filter_map(|d| d.get("digest").and_then(|s| s.as_str())?.parse().ok())
        .collect()
}

async fn fetch_one(
    proxy: &Proxy,
    storage: &Storage,
    t: &Target,
    digest: &Digest,
    size: u64,
    summary: &mut Summary,
) -> Result<(), ProxyError> {
    if proxy.stored_blob(storage, t, digest).await?.is_some() {
        summary.blobs_present += 1;
        return Ok(());
    }
    let (total, mut stream) = proxy.fetch_blob(storage, t, digest).await?;
    let total = if total > 0 { total } else { size };
    let tty = std::io::stderr().is_terminal();
    let short = &digest.hex()[..12];
    let (mut got, began) = (0u64, Instant::now());
    let mut last_draw = Instant::now();
    while let Some(chunk) = stream.next().await {
        // The stream's error is the fetch's own account (a digest mismatch, the upstream gone):
        // pass it on as it is, not as a local storage fault.
        let chunk = chunk.map_err(|e| crate::storage::StorageError::Unavailable(e.to_string()))?;
        got += chunk.len() as u64;
        if tty && last_draw.elapsed().as_millis() > 100 {
            last_draw = Instant::now();
            let pct = (got * 100).checked_div(total).unwrap_or(100);
            eprint!(
                "\r{short}  {:>6.1} / {:.1} MiB  {pct:>3}%",
                got as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            let _ = std::io::stderr().flush();
        }
    }
    // The fetch that wrote it publishes and links it after the last byte; this process must not
    // exit (cancelling that work) before it is done.
    let mut published = false;
    for _ in 0..1200 {
        if storage.blob_size(&t.cached, digest).await?.is_some() {
            published = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if !published {
        return Err(crate::storage::StorageError::Unavailable(format!(
            "{digest} was downloaded but not stored within 60 s"
        ))
        .into());
    }
    let secs = began.elapsed().as_secs_f64().max(0.001);
    let line = format!(
        "{short}  {:.1} MiB in {secs:.1}s ({:.1} MiB/s)",
        got as f64 / 1048576.0,
        got as f64 / 1048576.0 / secs
    );
    if tty {
        eprintln!("\r{line}\x1b[K");
    } else {
        eprintln!("{line}");
    }
    summary.blobs_fetched += 1;
    summary.bytes_fetched += got;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        let (n, r) = parse_ref("docker.io/library/alpine:3.20").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.as_str(), r.to_string().as_str()),
            ("docker.io/library/alpine", "3.20")
        );
        let (n, r) = parse_ref("localhost/x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.as_str(), r.to_string().as_str()),
            ("localhost/x", "latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, r) = parse_ref(&format!("a/b@{d}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.to_string(), d);
        assert!(parse_ref("UPPER/x:1").is_err());
    }

    #[test]
    fn platforms() {
        let index = br#"{"manifests":[
            {"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        assert_eq!(chosen_children(index, &[]).len(), 2);
        assert_eq!(chosen_children(index, &["linux/arm64".into()]).len(), 1);
        assert_eq!(chosen_children(index, &["linux/arm64/v8".into()]).len(), 1);
        assert_eq!(chosen_children(index, &["linux/arm64/v7".into()]).len(), 0);
        assert_eq!(chosen_children(index, &["windows/amd64".into()]).len(), 0);
    }
}
