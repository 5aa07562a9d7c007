//! The image `scripts/image` builds is the one the Dockerfile describes: same entrypoint,
//! command and user, same files (the static binary and the CA certificates), and it is what the
//! node's containerd holds under `localhost/secretref:<crate version>`.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

use crate::{
    node::{ctr, secretref_image, state},
    support::repo_root,
};

/// The final stage of the Dockerfile: (COPY sources and destinations, USER, ENTRYPOINT, CMD).
struct Stage {
    copies: Vec<(String, String)>,
    user: String,
    entrypoint: Value,
    cmd: Value,
}

fn dockerfile_final_stage() -> Stage {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text.lines().collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM line");
    let mut stage = Stage {
        copies: Vec::new(),
        user: String::new(),
        entrypoint: Value::Null,
        cmd: Value::Null,
    };
    for line in &lines[last_from..] {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "COPY" => {
                let args: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with("--")).collect();
                assert_eq!(args.len(), 2, "one source per COPY: {line}");
                stage.copies.push((args[0].to_string(), args[1].to_string()));
            }
            "USER" => stage.user = rest.trim().to_string(),
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT in JSON form"),
            "CMD" => stage.cmd = serde_json::from_str(rest).expect("CMD in JSON form"),
            _ => {}
        }
    }
    stage
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// `tar -tv` of a layer: (path, mode string, owner) per entry.
fn layer_entries(layer: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(layer)
        .output()
        .expect("tar");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (
                fields.last().expect("path").trim_end_matches('/').to_string(),
                fields[0].to_string(),
                fields[1].to_string(),
            )
        })
        .collect()
}

#[test]
fn scripts_image_builds_what_the_dockerfile_describes() {
    let state = state();
    let stage = dockerfile_final_stage();
    let layout = repo_root().join("target/image/secretref");
    let index = json(&std::fs::read(layout.join("index.json")).expect("target/image/secretref/index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        secretref_image().as_str()
    );
    let manifest_digest = entry["digest"].as_str().expect("digest");
    let manifest = json(&blob(&layout, manifest_digest));
    let config = json(&blob(&layout, manifest["config"]["digest"].as_str().expect("config")));

    assert_eq!(config["config"]["Entrypoint"], stage.entrypoint);
    assert_eq!(config["config"]["Cmd"], stage.cmd);
    assert_eq!(config["config"]["User"], stage.user.as_str());
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );

    // The files: exactly the COPY destinations and the folders above them, owned by root.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer, like the Dockerfile's FROM scratch + COPY");
    let layer_path = layout.join("blobs/sha256").join(
        layers[0]["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:"),
    );
    let entries = layer_entries(&layer_path);
    let mut expected = BTreeSet::new();
    for (_, dest) in &stage.copies {
        let mut path = Path::new(dest.trim_start_matches('/'));
        expected.insert(path.display().to_string());
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            expected.insert(parent.display().to_string());
            path = parent;
        }
    }
    let actual: BTreeSet<String> = entries.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(actual, expected);
    for (path, mode, owner) in &entries {
        assert_eq!(owner, "0/0", "{path} is owned by root");
        let want = match path.as_str() {
            "secretref" => "-rwxr-xr-x",
            p if p.ends_with(".crt") => "-rw-r--r--",
            _ => "drwxr-xr-x",
        };
        assert_eq!(mode, want, "{path}");
    }
    // The binary is the static one the Dockerfile copies from scripts/build-static's output.
    let (binary_source, _) = stage
        .copies
        .iter()
        .find(|(_, dest)| dest == "/secretref")
        .expect("the binary's COPY");
    let built = binary_source.trim_start_matches("/src/");
    assert_eq!(built, "target/x86_64-unknown-linux-gnu/release/secretref");
    let rootfs = repo_root().join("target/image/secretref-rootfs");
    let in_image = std::fs::read(rootfs.join("secretref")).expect("binary");
    assert!(
        in_image == std::fs::read(repo_root().join(built)).expect("built binary"),
        "the image holds the binary scripts/build-static built"
    );

    // The node's containerd holds exactly this image under the reference.
    let images = ctr(state, &["images", "ls"]);
    let line = images
        .lines()
        .find(|l| l.split_whitespace().next() == Some(secretref_image().as_str()))
        .unwrap_or_else(|| panic!("{} in containerd: {images}", secretref_image()));
    assert!(line.contains(manifest_digest), "{line}");
}
