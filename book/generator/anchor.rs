//! Regions of source files the book quotes.
//!
//! - [`extract`]: the code between `// ANCHOR: name` and `// ANCHOR_END: name`, as mdBook's
//!   own `{{#include file:name}}` understands them. Anchor lines of other, nested anchors are
//!   dropped, and the common indentation is removed.
//! - [`item`]: a top-level Rust item (`fn`, `struct`, `enum`, `trait`, `const`, …) by name,
//!   with its doc comments and attributes — for quoting product code (the `Engine` trait)
//!   without adding markers to it. It relies on rustfmt's layout: the item starts in column 0
//!   and its closing brace is the first `}` alone in column 0.
//!
//! Unlike mdBook's include (which warns and carries on), a missing file, anchor or item is an
//! error that names it, so a renamed test or type cannot silently empty a page.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Whether `line` is an `ANCHOR:`/`ANCHOR_END:` marker comment; returns (is_end, name).
fn marker(line: &str) -> Option<(bool, &str)> {
    let t = line.trim_start();
    let t = t.strip_prefix("//")?.trim_start();
    if let Some(name) = t.strip_prefix("ANCHOR_END:") {
        return Some((true, name.trim()));
    }
    t.strip_prefix("ANCHOR:").map(|name| (false, name.trim()))
}

/// Every anchor name defined in `text`, in order.
#[must_use]
pub fn names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(marker)
        .filter(|(end, _)| !end)
        .map(|(_, n)| n.to_owned())
        .collect()
}

/// The dedented lines between `ANCHOR: name` and `ANCHOR_END: name`, ending in a newline.
pub fn extract(text: &str, name: &str) -> Result<String> {
    let mut inside = false;
    let mut lines = Vec::new();
    let mut closed = false;
    for line in text.lines() {
        match marker(line) {
            Some((false, n)) if n == name => {
                if inside {
                    bail!("anchor `{name}` opens twice");
                }
                inside = true;
            }
            Some((true, n)) if n == name && inside => {
                closed = true;
                break;
            }
            Some(_) => {}
            None if inside => lines.push(line),
            None => {}
        }
    }
    if !inside {
        let known = names(text);
        bail!(
            "no anchor `{name}`; anchors here: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    if !closed {
        bail!("anchor `{name}` has no `ANCHOR_END: {name}`");
    }
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        out.push_str(l.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// [`extract`] from a file, with the file named in errors.
pub fn extract_file(path: &Path, name: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} for anchor `{name}`", path.display()))?;
    extract(&text, name).with_context(|| format!("in {}", path.display()))
}

/// The top-level item `name` in Rust source `text`, with its docs and attributes.
pub fn item(text: &str, name: &str) -> Result<String> {
    let head = regex::Regex::new(&format!(
        r"^(pub(\([^)]*\))? )?(async )?(unsafe )?(fn|struct|enum|trait|const|static|type|mod|union) {}\b",
        regex::escape(name)
    ))
    .context("building the item pattern")?;
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines.iter().position(|l| head.is_match(l)) else {
        bail!("no top-level item named `{name}`");
    };
    let mut start = at;
    while start > 0 && (lines[start - 1].starts_with("///") || lines[start - 1].starts_with("#[")) {
        start -= 1;
    }
    let first = lines[at].trim_end();
    let balanced = first.matches('{').count() == first.matches('}').count();
    let end = if first.ends_with(';') || (first.ends_with('}') && balanced) {
        at
    } else {
        (at..lines.len())
            .find(|&i| lines[i] == "}" || lines[i] == "};")
            .with_context(|| format!("item `{name}` has no closing brace in column 0"))?
    };
    Ok(lines[start..=end].join("\n") + "\n")
}

/// [`item`] from a file, with the file named in errors.
pub fn item_file(path: &Path, name: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} for item `{name}`", path.display()))?;
    item(&text, name).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
fn a() {}
// ANCHOR: outer
    fn b() {
        // ANCHOR: inner
        let x = 1;
        // ANCHOR_END: inner
    }
// ANCHOR_END: outer
";

    #[test]
    fn extracts_dedented_without_nested_markers() {
        assert_eq!(
            extract(TEXT, "outer").unwrap(),
            "fn b() {\n    let x = 1;\n}\n"
        );
        assert_eq!(extract(TEXT, "inner").unwrap(), "let x = 1;\n");
        assert_eq!(names(TEXT), ["outer", "inner"]);
    }

    #[test]
    fn a_missing_anchor_is_named_with_the_known_ones() {
        let err = extract(TEXT, "nope").unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("outer, inner"),
            "{err}"
        );
    }

    #[test]
    fn items_come_with_their_docs() {
        let src = "use x;\n\n/// The trait.\n#[doc(hidden)]\npub trait Engine: Send {\n    fn a(&self) {\n    }\n}\n\npub const N: u8 = 1;\nstruct EngineX;\n";
        assert_eq!(
            item(src, "Engine").unwrap(),
            "/// The trait.\n#[doc(hidden)]\npub trait Engine: Send {\n    fn a(&self) {\n    }\n}\n"
        );
        assert_eq!(item(src, "N").unwrap(), "pub const N: u8 = 1;\n");
        let err = item(src, "Missing").unwrap_err().to_string();
        assert!(err.contains("`Missing`"), "{err}");
    }

    #[test]
    fn an_unclosed_anchor_is_an_error() {
        let err = extract("// ANCHOR: a\nx\n", "a").unwrap_err().to_string();
        assert!(err.contains("ANCHOR_END: a"), "{err}");
    }
}
