//! The `[s3]` bucket's client settings: credentials and region from the configuration, then an
//! AWS shared credentials file, then the `AWS_*` environment variables, as the AWS tools look.

use std::path::PathBuf;

use super::schema::S3Config;
use crate::storage::s3::S3Settings;

impl S3Config {
    /// The settings the S3 client needs, with credentials and region taken from the config, then
    /// the credentials file, then the `AWS_*` environment variables.
    pub fn settings(&self, timeout: std::time::Duration) -> Result<S3Settings, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (mut key, mut secret) = (self.access_key_id.clone(), self.secret_access_key.clone());
        if (key.is_empty() || secret.is_empty()) && !self.credentials_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&self.credentials_file).map_err(|e| {
                format!(
                    "s3.credentials_file {}: {e}",
                    self.credentials_file.display()
                )
            })?;
            let (k, s) = aws_credentials(&text, &self.profile).ok_or_else(|| {
                format!(
                    "s3.credentials_file {}: no aws_access_key_id and aws_secret_access_key under [{}]",
                    self.credentials_file.display(),
                    self.profile
                )
            })?;
            (key, secret) = (k, s);
        }
        if key.is_empty() || secret.is_empty() {
            key = env("AWS_ACCESS_KEY_ID").unwrap_or_default();
            secret = env("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
        }
        if key.is_empty() || secret.is_empty() {
            return Err(
                "s3: no credentials: set s3.access_key_id and s3.secret_access_key, \
                 s3.credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            );
        }
        let endpoint = match &self.endpoint {
            e if !e.is_empty() => e.clone(),
            _ => env("AWS_ENDPOINT_URL_S3")
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .ok_or("s3.endpoint is required (e.g. https://s3.eu-west-1.amazonaws.com)")?,
        };
        let region = match &self.region {
            r if !r.is_empty() => r.clone(),
            _ => env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        };
        if self.bucket.is_empty() {
            return Err("s3.bucket is required".into());
        }
        Ok(S3Settings {
            endpoint,
            region,
            bucket: self.bucket.clone(),
            path_style: self.path_style,
            access_key_id: key,
            secret_access_key: secret,
            ca: match &self.ca {
                ca if !ca.as_os_str().is_empty() => Some(ca.clone()),
                _ => env("AWS_CA_BUNDLE").map(PathBuf::from),
            },
            timeout,
            redirect_blobs: self.redirect_blobs,
        })
    }
}

/// The key pair under `[profile]` of an AWS shared credentials file.
pub(super) fn aws_credentials(text: &str, profile: &str) -> Option<(String, String)> {
    let (mut in_profile, mut key, mut secret) = (false, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_profile = section == profile || section == format!("profile {profile}");
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => key = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((key?, secret?))
}
