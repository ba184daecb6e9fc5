//! The published crates carry copies of the workspace's README and license files
//! (a packaged crate cannot reach outside its own directory); the copies stay equal.

use std::path::{Path, PathBuf};

/// The workspace root (this package lives in `tests/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => panic!("cannot read {}: {err}", path.display()),
    }
}

fn assert_copy(original: &str, copy: &str) {
    let root = workspace();
    assert!(
        read(&root.join(original)) == read(&root.join(copy)),
        "{copy} differs from {original}; after editing {original}, run `cp {original} {copy}`"
    );
}

#[test]
fn the_runtime_crate_readme_is_the_workspace_readme() {
    assert_copy("README.md", "runtime/README.md");
}

#[test]
fn each_published_crate_carries_both_licenses() {
    for krate in ["runtime", "macros"] {
        for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert_copy(license, &format!("{krate}/{license}"));
        }
    }
}
