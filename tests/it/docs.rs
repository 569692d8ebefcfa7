//! The documentation, checked: the benchmark's writer rewrites docs/performance.md's
//! tables and nothing else.

use std::path::Path;

#[path = "../../benches/natsfn/page.rs"]
mod page;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---------------------------------------------------------------------------------
// The benchmark's tables

#[test]
fn the_bench_rewrites_the_tables_of_docs_performance_md_and_keeps_its_prose() {
    let text = read(page::PAGE);
    let (before, rest) = text.split_once(page::BEGIN).expect("the begin marker");
    let (tables, after) = rest.split_once(page::END).expect("the end marker");
    assert!(tables.trim().starts_with("Measured "), "{tables}");
    // The page as it is is what the writer makes of its own tables.
    assert_eq!(page::with_tables(&text, tables), Ok(text.clone()));

    // A tiny run of the writer on a copy: new tables, the prose around them kept.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("performance.md");
    std::fs::write(&copy, &text).expect("copy");
    let new = "Measured today.\n\n| target | p50 µs |\n|---|---:|\n| x | 1 |\n";
    page::write_tables(&copy, new).expect("write the tables");
    let written = std::fs::read_to_string(&copy).expect("read back");
    assert_eq!(
        written,
        format!(
            "{before}{}\n\n{}\n\n{}{after}",
            page::BEGIN,
            new.trim(),
            page::END
        )
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no temporary file is left"
    );
}

#[test]
fn the_bench_writer_refuses_a_page_without_its_markers() {
    let (b, e) = (page::BEGIN, page::END);
    for page_text in [
        "no markers".to_owned(),
        format!("{b} only"),
        format!("{e} then {b}"),
        format!("{b} {e} {b} {e}"),
    ] {
        assert!(
            page::with_tables(&page_text, "t").is_err(),
            "{page_text:?} was accepted"
        );
    }
    assert_eq!(
        page::with_tables(&format!("a\n{b}\nold\n{e}\nz\n"), "new\n"),
        Ok(format!("a\n{b}\n\nnew\n\n{e}\nz\n"))
    );
    let missing = Path::new(ROOT).join("target/no-such-page.md");
    assert!(page::write_tables(&missing, "t").is_err());
}
