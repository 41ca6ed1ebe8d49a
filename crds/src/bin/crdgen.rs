//! Writes the CRD YAML generated from the Rust types into a directory (default `config/crd`).
//!
//! `cargo run -p ferrolb-crds --bin crdgen [DIR]`; a test fails when the checked-in files differ
//! from what this writes.

use std::path::PathBuf;

use ferrolb_crds::crd_manifests::{all_crds, file_name, to_yaml};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config/crd"));
    std::fs::create_dir_all(&dir)?;
    for crd in all_crds() {
        let path = dir.join(file_name(&crd));
        std::fs::write(&path, to_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
