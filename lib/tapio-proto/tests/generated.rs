//! The generated code under `src/generated/` is committed (so building Tapio needs no `protoc`);
//! this test regenerates it from `proto/` with the same generator and the vendored `protoc`, and
//! fails when the committed files differ from what the `.proto` files give.
//! `TAPIO_BLESS=1 cargo test -p tapio-proto --test generated` rewrites them.

use std::path::{Path, PathBuf};

/// The `.proto` files the crate is generated from, relative to `proto/`.
const PROTOS: &[&str] = &[
    "tapio/v1/event.proto",
    "tapio/v1/service.proto",
    "grpc/health/v1/health.proto",
];

/// Runs the generator into `out`.
fn generate(root: &Path, out: &Path) {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join("proto").join(p)).collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .btree_map(".")
        .out_dir(out)
        .compile_with_config(config, &protos, &[root.join("proto")])
        .expect("protoc and the generator run");
}

#[test]
fn committed_code_matches_the_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = root.join("src/generated");
    let fresh = tempfile::tempdir().unwrap();
    generate(root, fresh.path());
    let mut names: Vec<String> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.contains(&"tapio.v1.rs".to_string()), "{names:?}");
    let bless = std::env::var_os("TAPIO_BLESS").is_some();
    let mut stale = Vec::new();
    for name in &names {
        let want = std::fs::read_to_string(fresh.path().join(name)).unwrap();
        let path = committed.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            if bless {
                std::fs::write(&path, &want).unwrap();
            } else {
                stale.push(name.clone());
            }
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&committed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !names.contains(n))
        .collect();
    extra.sort();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "src/generated is out of date with proto/ (stale: {stale:?}, not generated: {extra:?}); \
         run TAPIO_BLESS=1 cargo test -p tapio-proto --test generated"
    );
}
