//! The engine's runtime phases, from `engine::run::PHASES`: the table the engine emits its
//! `phase` events from. A phase added, renamed or reordered in the code changes this page.

use super::{cell, preamble};

/// The page: one row per phase, in event order.
pub fn generate() -> anyhow::Result<(String, Vec<String>)> {
    let mut md = preamble("phases", "`engine::run::PHASES`");
    md.push_str("\n| phase | work | on failure |\n| --- | --- | --- |\n");
    for p in engine::run::PHASES {
        md.push_str(&format!(
            "| `{}` | {} | {} |\n",
            p.name,
            cell(p.work),
            cell(p.on_failure)
        ));
    }
    Ok((md, Vec::new()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_phase_is_a_row_in_event_order() {
        let (md, _) = super::generate().unwrap();
        let rows: Vec<&str> = md
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert_eq!(rows, engine::run::PHASES.map(|p| p.name));
    }
}
