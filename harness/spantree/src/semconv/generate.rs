//! Generates `table.rs` from the `opentelemetry-semantic-conventions` crate's source (the
//! version in `Cargo.lock`, in the cargo registry), and checks the committed table is what it
//! generates.

use std::path::{Path, PathBuf};

use super::AttrType;

/// One `pub const` of the crate's `attribute.rs`.
#[derive(Debug)]
struct Parsed {
    ident: String,
    name: String,
    ty: Option<AttrType>,
    stable: bool,
    deprecated: Option<String>,
    brief: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The crate's `attribute.rs` for the version `Cargo.lock` pins.
fn crate_source() -> PathBuf {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).expect("Cargo.lock");
    let mut lines = lock.lines();
    let version = loop {
        let line = lines
            .next()
            .expect("opentelemetry-semantic-conventions is in Cargo.lock");
        if line == "name = \"opentelemetry-semantic-conventions\"" {
            let v = lines.next().expect("a version line");
            break v
                .trim_start_matches("version = \"")
                .trim_end_matches('"')
                .to_owned();
        }
    };
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"),
        PathBuf::from,
    );
    let dir = format!("opentelemetry-semantic-conventions-{version}");
    let registry = home.join("registry/src");
    std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("reading {}: {e}", registry.display()))
        .filter_map(Result::ok)
        .map(|index| index.path().join(&dir).join("src/attribute.rs"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{dir}/src/attribute.rs is not in {} (run a cargo build first)",
                registry.display()
            )
        })
}

/// The type an example value (as the crate's docs write it) has.
fn example_type(example: &str) -> Option<AttrType> {
    let e = example.trim();
    let scalar = |s: &str| -> Option<AttrType> {
        if s.starts_with('"') {
            Some(AttrType::String)
        } else if s == "true" || s == "false" {
            Some(AttrType::Bool)
        } else if s.parse::<i64>().is_ok() {
            Some(AttrType::Int)
        } else if s.parse::<f64>().is_ok() {
            Some(AttrType::Double)
        } else {
            None
        }
    };
    if let Some(inner) = e.strip_prefix('[') {
        let first = inner.trim_start().split([',', ']']).next()?.trim();
        return match scalar(first)? {
            AttrType::String => Some(AttrType::StringArray),
            AttrType::Int => Some(AttrType::IntArray),
            AttrType::Double => Some(AttrType::DoubleArray),
            AttrType::Bool => Some(AttrType::BoolArray),
            _ => None,
        };
    }
    scalar(e)
}

fn parse(source: &str) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    let mut experimental = false;
    let mut deprecated: Option<String> = None;
    let mut in_deprecated = false;
    let mut pending: Option<String> = None; // a `pub const X: &str =` whose value is on the next line
    for line in source.lines() {
        let t = line.trim();
        if let Some(ident) = pending.take() {
            out.push(finish(ident, t, &doc, experimental, deprecated.take()));
            doc.clear();
            experimental = false;
            continue;
        }
        if in_deprecated {
            deprecated.get_or_insert_with(String::new).push_str(t);
            in_deprecated = !t.ends_with(")]");
            continue;
        }
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
        } else if t == "#[cfg(feature = \"semconv_experimental\")]" {
            experimental = true;
        } else if let Some(rest) = t.strip_prefix("#[deprecated") {
            deprecated = Some(rest.to_owned());
            in_deprecated = !t.ends_with(")]");
        } else if let Some(rest) = t.strip_prefix("pub const ") {
            let (ident, value) = rest.split_once(':').expect("pub const NAME: &str = ...");
            let value = value
                .trim()
                .trim_start_matches("&str")
                .trim()
                .trim_start_matches('=');
            if value.trim().is_empty() {
                pending = Some(ident.to_owned());
            } else {
                out.push(finish(
                    ident.to_owned(),
                    value,
                    &doc,
                    experimental,
                    deprecated.take(),
                ));
                doc.clear();
                experimental = false;
            }
        } else if t.is_empty() || t.starts_with("//") {
            doc.clear();
            experimental = false;
            deprecated = None;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn finish(
    ident: String,
    value: &str,
    doc: &[String],
    experimental: bool,
    deprecated: Option<String>,
) -> Parsed {
    let name = value
        .trim()
        .trim_end_matches(';')
        .trim_matches('"')
        .to_owned();
    // `- `example`` items after `# Examples`, each possibly over several lines.
    let mut examples: Vec<String> = Vec::new();
    let mut in_examples = false;
    let mut open: Option<String> = None;
    for d in doc {
        if d.trim() == "# Examples" {
            in_examples = true;
            continue;
        }
        if !in_examples {
            continue;
        }
        if let Some(cur) = open.as_mut() {
            cur.push_str(d.trim());
            if d.trim_end().ends_with('`') {
                examples.push(open.take().unwrap().trim_end_matches('`').to_owned());
            }
        } else if let Some(item) = d.strip_prefix("- `") {
            if item.len() > 1 && item.trim_end().ends_with('`') {
                examples.push(item.trim_end().trim_end_matches('`').to_owned());
            } else {
                open = Some(item.to_owned());
            }
        }
    }
    let types: Vec<Option<AttrType>> = examples.iter().map(|e| example_type(e)).collect();
    let ty = match types.first().copied().flatten() {
        Some(first) if types.iter().all(|t| *t == Some(first)) => Some(first),
        _ => None,
    };
    let deprecated = deprecated.map(|d| {
        let text = d
            .split_once('"')
            .and_then(|(_, rest)| rest.rsplit_once('"'))
            .map_or(d.as_str(), |(text, _)| text);
        let note = text
            .strip_prefix("{note: ")
            .and_then(|n| n.split_once(", reason:"))
            .map_or(text, |(n, _)| n);
        // The crate's note is Rust string text: its `\n` escapes are line breaks.
        note.replace("\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut brief: String = doc.first().map(|d| d.trim().to_owned()).unwrap_or_default();
    if brief.chars().count() > 240 {
        brief = brief.chars().take(239).collect::<String>() + "…";
    }
    Parsed {
        ident,
        name,
        ty,
        stable: !experimental,
        deprecated,
        brief,
    }
}

fn render(parsed: &[Parsed]) -> String {
    let mut out = String::from(
        "//! Generated from the `opentelemetry-semantic-conventions` crate's `attribute.rs` by\n\
         //! `SPANTREE_UPDATE_SEMCONV=1 cargo test -p spantree semconv`; do not edit.\n\n\
         use super::AttrType as T;\nuse super::Attribute as A;\nuse opentelemetry_semantic_conventions::attribute as c;\n\n\
         /// Every attribute of the crate, sorted by name.\n#[expect(deprecated)]\n#[rustfmt::skip]\npub(super) static ATTRIBUTES: &[A] = &[\n",
    );
    for p in parsed {
        let ty =
            p.ty.map_or_else(|| "None".to_owned(), |t| format!("Some(T::{t:?})"));
        let deprecated = p
            .deprecated
            .as_ref()
            .map_or_else(|| "None".to_owned(), |d| format!("Some({d:?})"));
        out.push_str(&format!(
            "    A {{ name: c::{}, ty: {ty}, stable: {}, deprecated: {deprecated}, brief: {:?} }},\n",
            p.ident, p.stable, p.brief
        ));
    }
    out.push_str("];\n");
    out
}

#[test]
fn semconv_table_matches_the_crate() {
    let source = crate_source();
    let text = std::fs::read_to_string(&source).expect("reading the crate's attribute.rs");
    let parsed = parse(&text);
    assert!(
        parsed.len() > 500,
        "only {} attributes parsed from {}",
        parsed.len(),
        source.display()
    );
    let generated = render(&parsed);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/semconv/table.rs");
    if std::env::var_os("SPANTREE_UPDATE_SEMCONV").is_some() {
        std::fs::write(&path, &generated).expect("writing table.rs");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} does not match {}: run `SPANTREE_UPDATE_SEMCONV=1 cargo test -p spantree semconv` and review the diff",
        path.display(),
        source.display()
    );
}

#[test]
fn examples_give_types() {
    assert_eq!(example_type("\"GET\""), Some(AttrType::String));
    assert_eq!(example_type("200"), Some(AttrType::Int));
    assert_eq!(example_type("1.5"), Some(AttrType::Double));
    assert_eq!(example_type("true"), Some(AttrType::Bool));
    assert_eq!(example_type("[\"a\",\"b\",]"), Some(AttrType::StringArray));
    assert_eq!(example_type("[ 1, 2 ]"), Some(AttrType::IntArray));
    assert_eq!(example_type("GET"), None);
}
