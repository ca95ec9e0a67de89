//! The directive table, from `crate::directives::DIRECTIVES`: the directives the `metis`
//! preprocessor expands (a test holds the table to the expansion's arms).

use super::{cell, preamble};

/// The page: one row per directive, with a real example written so that it shows literally.
pub fn generate() -> anyhow::Result<(String, Vec<String>)> {
    let mut md = preamble(
        "directives",
        "`book/generator/directives.rs` (`DIRECTIVES`)",
    );
    md.push_str("\n| directive | argument | example | becomes |\n| --- | --- | --- | --- |\n");
    for d in crate::directives::DIRECTIVES {
        // Two backslashes: mdBook's own `{{#include}}` takes one, `metis` the other. One
        // escaped directive per line: mdBook's escape pattern runs to the line's last `}}`.
        md.push_str(&format!(
            "| `{}` | `{}` | `\\\\{{{{#{} {}}}}}` | {} |\n",
            d.name,
            d.argument,
            d.name,
            d.example,
            cell(d.becomes)
        ));
    }
    Ok((md, Vec::new()))
}
