//! OCI image layouts for skopeo and podman: one gzip layer of random bytes (already compressed,
//! so clients push it unchanged), and a check that a pulled copy is byte-identical.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{process, require_tool};

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// An image in an OCI layout directory, tag `v1`.
pub struct OciImage {
    pub dir: PathBuf,
    pub layer_digest: String,
}

impl OciImage {
    /// A layout at `dir` with one layer holding `size` random bytes.
    pub fn create(dir: PathBuf, size: usize) -> OciImage {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let staging = tempfile::tempdir().unwrap();
        let rootfs = staging.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("payload.bin"), process::random_bytes(size)).unwrap();
        let tar = staging.path().join("layer.tar");
        let status = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success(), "tar failed");
        let diff_id = sha256_file(&tar);
        let gz = staging.path().join("layer.tar.gz");
        let out = Command::new("gzip")
            .args(["-n", "-c"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip failed");
        std::fs::write(&gz, &out.stdout).unwrap();
        let layer_digest = sha256_file(&gz);
        let layer_size = out.stdout.len();
        std::fs::copy(&gz, blobs.join(&layer_digest)).unwrap();

        let put = |bytes: &[u8]| {
            let path = staging.path().join("blob");
            std::fs::write(&path, bytes).unwrap();
            let digest = sha256_file(&path);
            std::fs::write(blobs.join(&digest), bytes).unwrap();
            (digest, bytes.len())
        };
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{layer_digest}"), "size": layer_size }],
        });
        let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"), "size": manifest_size,
                "annotations": { "org.opencontainers.image.ref.name": "v1" },
            }],
        });
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciImage { dir, layer_digest }
    }

    /// `oci:DIR:v1`.
    pub fn reference(&self) -> String {
        format!("oci:{}:v1", self.dir.display())
    }

    /// Push this image with skopeo to `docker://HOST/REPOSITORY:v1` (plain HTTP, digests kept)
    /// as `user`; whether it worked, and skopeo's output.
    pub fn push_to(
        &self,
        host: &str,
        repository: &str,
        user: &str,
        secret: &str,
    ) -> (bool, String) {
        skopeo_result(
            &[
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds",
                &format!("{user}:{secret}"),
                &self.reference(),
                &format!("docker://{host}/{repository}:v1"),
            ],
            None,
        )
    }

    /// The layer of `pulled` (an OCI layout) is the same bytes as ours.
    pub fn assert_layer_identical(&self, pulled: &Path) {
        let ours = std::fs::read(self.dir.join("blobs/sha256").join(&self.layer_digest)).unwrap();
        let theirs = std::fs::read(pulled.join("blobs/sha256").join(&self.layer_digest))
            .unwrap_or_else(|e| {
                panic!(
                    "the pulled image has no layer sha256:{} ({e})",
                    self.layer_digest
                )
            });
        assert!(ours == theirs, "the layer came back with different bytes");
    }
}

/// Run skopeo with an isolated auth file; panics with its output unless it succeeds.
pub fn skopeo(args: &[&str]) -> String {
    let (ok, out) = skopeo_result(args, None);
    assert!(ok, "skopeo {args:?} failed:\n{out}");
    out
}

/// Run skopeo (optionally with stdin); return success and its combined output.
pub fn skopeo_result(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let auth = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(auth.path(), "{}").unwrap();
    let mut command = Command::new(require_tool("skopeo", "skopeo"));
    command.args(args).env("REGISTRY_AUTH_FILE", auth.path());
    let out = process::run(command, stdin);
    (out.ok, out.combined())
}
