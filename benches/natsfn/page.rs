//! The benchmark's tables in `docs/performance.md`: each run rewrites what lies between
//! two marker comments and keeps the page's prose around them, which a person brings
//! up to date with the new figures.

use std::path::Path;

/// The page, relative to the repository's root.
pub const PAGE: &str = "docs/performance.md";
/// The line before the tables.
pub const BEGIN: &str = "<!-- bench:begin -->";
/// The line after the tables.
pub const END: &str = "<!-- bench:end -->";

/// `page` with everything between its markers replaced by `tables`, a blank line on
/// either side; an error saying what is wrong unless the page has exactly one
/// [`BEGIN`] and, after it, exactly one [`END`].
pub fn with_tables(page: &str, tables: &str) -> Result<String, String> {
    let count = |marker: &str| page.matches(marker).count();
    if count(BEGIN) != 1 || count(END) != 1 {
        return Err(format!(
            "expected one {BEGIN} and one {END}, found {} and {}",
            count(BEGIN),
            count(END)
        ));
    }
    let (Some(begin), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        return Err(format!("expected {BEGIN} and {END}"));
    };
    if end < begin {
        return Err(format!("{END} comes before {BEGIN}"));
    }
    let head = &page[..begin + BEGIN.len()];
    let tail = &page[end..];
    Ok(format!("{head}\n\n{}\n\n{tail}", tables.trim()))
}

/// Rewrites the tables of the page at `path` (see [`with_tables`]); the page is
/// replaced whole (written beside it, then renamed), never left half written.
pub fn write_tables(path: &Path, tables: &str) -> Result<(), String> {
    let page = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let new = with_tables(&page, tables).map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}
