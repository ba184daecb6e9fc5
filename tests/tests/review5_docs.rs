//! Review 5: the README's "Encryption at rest" against the "sea2" sealed form.

fn encryption_section(readme: &str) -> String {
    let path = format!("{}/../{readme}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let start = text.find("### Encryption at rest").unwrap_or(0);
    let end = text[start..]
        .find("### Operating Redis")
        .map_or(text.len(), |end| start + end);
    text[start..end].to_owned()
}

/// FINDING 4: the README still says the checksum is dropped (it is now sealed with the
/// value) and that values written by the `aes-gcm` version "open unchanged" (they are
/// in the earlier "seal" form, which now reads as a miss); the upgrade's misses (once
/// per key, and back and forth between old and new processes during a rolling deploy)
/// are said only in BENCHMARKS.md.
#[test]
#[ignore = "finding 4: README's encryption section is stale for sea2 (checksum 'dropped', aes-gcm values 'open unchanged', upgrade misses unsaid)"]
fn the_readme_describes_the_sealed_form_as_written() {
    for readme in ["README.md", "runtime/README.md"] {
        let section = encryption_section(readme);
        assert!(!section.is_empty(), "{readme}: no section");
        assert!(
            !section.contains("the checksum is dropped"),
            "{readme}: the checksum is sealed with the value now"
        );
        assert!(
            !section.contains("open unchanged"),
            "{readme}: values of the earlier sealed form read as a miss"
        );
        assert!(
            section.contains("read as a miss once") || section.contains("earlier build"),
            "{readme}: the upgrade's one miss per key is not said"
        );
    }
}
