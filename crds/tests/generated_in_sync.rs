//! The committed CRD YAML must be exactly what the Rust types generate, in
//! both places it is shipped from.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["crds", "charts/strake/crds"] {
        for (file, yaml) in strake_crds::resources::generated_crds() {
            let path = root.join(dir).join(file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == yaml,
                "{} is out of date: run `cargo run -p strake-crds --bin crdgen`",
                path.display()
            );
        }
    }
}
