//! The "reviewing a snapshot change" example, generated: the `run_completes` snapshot with one
//! deliberate span change — `create_run`'s `user_id` attribute renamed `user`, the kind of
//! edit a contributor makes — fed to `spantree::review`, the code CI runs on a pull
//! request. `review-demo.md` is the pull-request comment it writes (headings shifted to sit
//! inside the chapter), `review-demo.html` the side-by-side page (`just review-html`).

use anyhow::{Context, Result, bail};
use spantree::review::{self, Kind, Pending};

use super::preamble;
use crate::Workspace;

/// The scenario and the change.
const SCENARIO: &str = "run_completes";
const FROM: &str = " user_id=alice workflow_engine=generic";
const TO: &str = " user=alice workflow_engine=generic";

fn demo(ws: &Workspace) -> Result<Pending> {
    let rel = format!("scenarios/snapshots/{SCENARIO}.snap");
    let text =
        std::fs::read_to_string(ws.root.join(&rel)).with_context(|| format!("reading {rel}"))?;
    let old = review::snapshot_body(&text).to_owned();
    if !old.contains(FROM) {
        bail!(
            "{rel} no longer contains `{FROM}`: pick another deliberate change for the review example"
        );
    }
    let new = old.replacen(FROM, TO, 1);
    let located = review::locate(&ws.scenario_code_dir(), SCENARIO);
    let if_changed = located.as_deref().and_then(review::if_this_changes);
    let code = located.map(|c| {
        c.strip_prefix(&format!("{}/", ws.root.display()))
            .unwrap_or(&c)
            .to_owned()
    });
    Ok(Pending {
        name: SCENARIO.to_owned(),
        kind: Kind::Changed,
        old: Some(old),
        new: Some(new),
        path: rel.into(),
        code,
        if_changed,
    })
}

/// `review-demo.md`: the comment, headings two levels down.
pub fn markdown(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let pending = demo(ws)?;
    let comment = review::markdown(
        &[pending],
        Some("the workflow run's page, artefact `e2e-artefacts-<backend>`"),
    );
    let shifted: Vec<String> = comment
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("##{l}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    let mut out = preamble(
        "review_demo",
        "scenarios/snapshots/run_completes.snap and spantree::review",
    );
    out.push('\n');
    out.push_str(&shifted.join("\n"));
    out.push('\n');
    Ok((out, Vec::new()))
}

/// `review-demo.html`: the review page.
pub fn html(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let pending = demo(ws)?;
    let page = review::html(&[pending]);
    Ok((
        format!(
            "{}{page}",
            preamble(
                "review_demo",
                "scenarios/snapshots/run_completes.snap and spantree::review"
            )
        ),
        Vec::new(),
    ))
}
