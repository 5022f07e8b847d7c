//! Writes the CRD YAML generated from the Rust types. `crdgen --check` fails
//! when the committed files differ, so they can never drift from the code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for dir in [root.join("crds"), root.join("charts/strake/crds")] {
        for (file, yaml) in strake_crds::resources::generated_crds() {
            let path = dir.join(file);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                    stale.push(path);
                }
            } else if let Err(e) = write(&path, &yaml) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    for path in stale {
        eprintln!(
            "crdgen: {} is out of date; run `cargo run -p strake-crds --bin crdgen`",
            path.display()
        );
    }
    ExitCode::FAILURE
}

fn write(path: &Path, yaml: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, yaml)
}
