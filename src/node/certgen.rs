//! `registryd cert init`: a CA and a server certificate for users without a PKI (who today run
//! `openssl req` by hand). The CA lives where every node can reuse it (the shared mount), so one CA
//! serves the whole cluster and each node's certificate is signed by it.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// What `init` made or reused.
pub struct Made {
    pub ca_cert: PathBuf,
    pub ca_created: bool,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write_file(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp-registryd");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Makes (or reuses) the CA in `ca_dir` and a server certificate for `hosts` and `ips`, written to
/// `cert`/`key` (the paths the daemon serves).
pub fn init(
    ca_dir: &Path,
    hosts: &[String],
    ips: &[IpAddr],
    cert: &Path,
    key: &Path,
    days: u32,
) -> anyhow::Result<Made> {
    let ca_cert_path = ca_dir.join("ca.crt");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_created = !ca_cert_path.exists();
    let (ca_pem, ca_key) = if ca_created {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "registryd cluster CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        let c = p.self_signed(&key)?;
        write_file(&ca_key_path, &key.serialize_pem(), 0o600)?;
        write_file(&ca_cert_path, &c.pem(), 0o644)?;
        (c.pem(), key)
    } else {
        let key_pem = fs::read_to_string(&ca_key_path).map_err(|e| {
            anyhow::anyhow!(
                "CA certificate {} exists but its key {} cannot be read: {e}",
                ca_cert_path.display(),
                ca_key_path.display()
            )
        })?;
        (
            fs::read_to_string(&ca_cert_path)?,
            KeyPair::from_pem(&key_pem)?,
        )
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(hosts.to_vec())?;
    for ip in ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_else(|| "registryd".into()),
    );
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
    let leaf = p.signed_by(&leaf_key, &issuer)?;
    write_file(key, &leaf_key.serialize_pem(), 0o600)?;
    write_file(cert, &format!("{}{}", leaf.pem(), ca_pem), 0o644)?;
    Ok(Made {
        ca_cert: ca_cert_path,
        ca_created,
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    })
}

/// Where each client looks for a registry's CA, for `host:port`.
pub fn trust_locations(hostport: &str) -> Vec<(&'static str, PathBuf)> {
    vec![
        (
            "docker",
            PathBuf::from(format!("/etc/docker/certs.d/{hostport}/ca.crt")),
        ),
        (
            "podman, skopeo, buildah",
            PathBuf::from(format!("/etc/containers/certs.d/{hostport}/ca.crt")),
        ),
        (
            "containerd (hosts.toml: ca = \"ca.crt\")",
            PathBuf::from(format!("/etc/containerd/certs.d/{hostport}/ca.crt")),
        ),
    ]
}

/// The containerd `hosts.toml` for `hostport`, next to its `ca.crt`.
pub fn containerd_hosts_toml(hostport: &str) -> String {
    format!(
        "server = \"https://{hostport}\"\n\n[host.\"https://{hostport}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"ca.crt\"\n"
    )
}

/// Installs the CA for every client on this node and in the system store.
pub fn install_trust(ca_cert: &Path, hostports: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let pem = fs::read_to_string(ca_cert)?;
    let mut done = Vec::new();
    for hp in hostports {
        for (_, path) in trust_locations(hp) {
            write_file(&path, &pem, 0o644)?;
            done.push(path);
        }
        let toml = PathBuf::from(format!("/etc/containerd/certs.d/{hp}/hosts.toml"));
        write_file(&toml, &containerd_hosts_toml(hp), 0o644)?;
        done.push(toml);
    }
    let system = PathBuf::from("/usr/local/share/ca-certificates/registryd-ca.crt");
    write_file(&system, &pem, 0o644)?;
    done.push(system);
    let status = std::process::Command::new("update-ca-certificates").status();
    if !matches!(status, Ok(s) if s.success()) {
        anyhow::bail!(
            "wrote the CA to the system store, but update-ca-certificates failed: install package ca-certificates and run it"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_pair_loads_and_ca_is_reused() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = (d.path().join("tls/tls.crt"), d.path().join("tls/tls.key"));
        let ca = d.path().join("shared/ca");
        let hosts = vec![
            "registry.home".to_string(),
            "*.home.example.net".to_string(),
        ];
        let ip: IpAddr = "169.254.254.254".parse().unwrap();
        let m = init(&ca, &hosts, &[ip], &cert, &key, 30).unwrap();
        assert!(m.ca_created);
        let loaded = crate::node::tls::load_pair(&cert, &key).unwrap();
        assert!(loaded.info.covers("registry.home"));
        assert!(loaded.info.covers("x.home.example.net"));
        assert!(loaded.info.names.contains(&"169.254.254.254".to_string()));
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(ca.join("ca.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let ca_before = fs::read(ca.join("ca.crt")).unwrap();
        let m2 = init(&ca, &hosts, &[ip], &cert, &key, 30).unwrap();
        assert!(!m2.ca_created);
        assert_eq!(fs::read(ca.join("ca.crt")).unwrap(), ca_before);
    }
}
