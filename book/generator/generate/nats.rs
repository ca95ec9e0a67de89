//! The NATS layout, from `common::nats::LAYOUT`: every stream, subject and bucket with its
//! names and limits taken from the constants the code uses. A renamed stream or a changed
//! limit changes this page.

use super::{cell, preamble};

/// The page: one row per stream, subject or bucket.
pub fn generate() -> anyhow::Result<(String, Vec<String>)> {
    let mut md = preamble("nats", "`common::nats::LAYOUT`");
    md.push_str(
        "\n| name | kind | content | written by | read by |\n| --- | --- | --- | --- | --- |\n",
    );
    for l in common::nats::LAYOUT {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&(l.name)()),
            cell(&(l.kind)()),
            cell(l.content),
            cell(l.written_by),
            cell(&(l.read_by)())
        ));
    }
    Ok((md, Vec::new()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_limits_come_from_the_constants() {
        let (md, _) = super::generate().unwrap();
        for name in common::nats::NAMES {
            assert!(md.contains(&format!("`{name}`")), "{name} missing:\n{md}");
        }
        assert!(
            md.contains(&format!("at most {} deliveries", common::nats::MAX_DELIVER)),
            "{md}"
        );
        assert!(md.contains("<stdout\\|stderr>"), "escaped once: {md}");
    }
}
