//! Generated files are current: crds/ is what `secretref crds` prints today.

#[test]
fn crds_folder_is_current() {
    let expected = secretref::api::crds_yaml().expect("CRDs serialize");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/secretref.dev.yaml");
    let actual = std::fs::read_to_string(&path).expect("crds/secretref.dev.yaml exists");
    assert!(
        actual == expected,
        "crds/secretref.dev.yaml is stale: run scripts/generate"
    );
}
