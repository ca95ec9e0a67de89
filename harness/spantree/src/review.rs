//! Reviewing span-tree snapshot changes: the pending `.snap.new` files insta writes next to
//! the snapshots when a tree differs (or a scenario is new), as a pull-request comment
//! (Markdown, each change as a tree-aware [`diff`](crate::diff)) and as an HTML page (old and
//! new tree side by side, changed lines highlighted, the scenario's code location, the
//! commands to accept or reject). No scripts, no external resources.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::diff;

/// What happened to one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `.snap` with a `.snap.new` beside it.
    Changed,
    /// A `.snap.new` without a `.snap`: a new scenario.
    New,
    /// A `.snap` no scenario of the run produced (see [`pending`]).
    NotProduced,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::New => "new",
            Self::NotProduced => "not produced by this run",
        }
    }
}

/// One snapshot to review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The snapshot's name (the scenario).
    pub name: String,
    /// What happened.
    pub kind: Kind,
    /// The committed tree (the body of the `.snap`), if any.
    pub old: Option<String>,
    /// The tree the run produced (the body of the `.snap.new`), if any.
    pub new: Option<String>,
    /// The `.snap` file.
    pub path: PathBuf,
    /// Where the scenario's code is (`file:line` of `fn <name>(`), when a code folder was given.
    pub code: Option<String>,
    /// The "If this changes." paragraph of the scenario's doc comment, when found there.
    pub if_changed: Option<String>,
}

/// The body of an insta snapshot file (after its `---` header), or the text as it is.
#[must_use]
pub fn snapshot_body(text: &str) -> &str {
    text.strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map_or(text, |(_, body)| body)
}

/// The snapshots of `dir` to review: every `.snap.new` (changed or new), and — when
/// `produced` is given (the names of the scenarios the run produced artefacts for) — every
/// `.snap` not among them (an empty list, a run that produced nothing, is taken as unknown).
/// `code` is searched for `fn <name>(` to locate each scenario.
pub fn pending(
    dir: &Path,
    produced: Option<&[String]>,
    code: Option<&Path>,
) -> std::io::Result<Vec<Pending>> {
    let produced = produced.filter(|p| !p.is_empty());
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let read = |p: &Path| std::fs::read_to_string(p).map(|t| snapshot_body(&t).to_owned());
    for path in &entries {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(name) = file.strip_suffix(".snap.new") {
            let snap = dir.join(format!("{name}.snap"));
            let old = snap.is_file().then(|| read(&snap)).transpose()?;
            out.push(Pending {
                name: name.to_owned(),
                kind: if old.is_some() {
                    Kind::Changed
                } else {
                    Kind::New
                },
                old,
                new: Some(read(path)?),
                path: snap,
                code: None,
                if_changed: None,
            });
        } else if let (Some(name), Some(produced)) = (file.strip_suffix(".snap"), produced)
            && !produced.iter().any(|p| p == name)
            && !dir.join(format!("{file}.new")).exists()
        {
            out.push(Pending {
                name: name.to_owned(),
                kind: Kind::NotProduced,
                old: Some(read(path)?),
                new: None,
                path: path.clone(),
                code: None,
                if_changed: None,
            });
        }
    }
    if let Some(code) = code {
        for p in &mut out {
            p.code = locate(code, &p.name);
            p.if_changed = p.code.as_deref().and_then(if_this_changes);
        }
    }
    Ok(out)
}

/// `file:line` of `fn name(` under `dir` (Rust files, depth first, sorted): where a
/// scenario's code is.
#[must_use]
pub fn locate(dir: &Path, name: &str) -> Option<String> {
    let mut files: Vec<PathBuf> = walk(dir);
    files.sort();
    let needle = format!("fn {name}(");
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let line = text.lines().position(|l| l.contains(&needle))?;
        Some(format!("{}:{}", f.display(), line + 1))
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The commands that accept or reject one pending snapshot.
fn commands(p: &Pending) -> (String, String) {
    let target = p.path.display();
    match p.kind {
        Kind::Changed | Kind::New => (
            format!("cargo insta accept --snapshot {target}"),
            format!("cargo insta reject --snapshot {target}"),
        ),
        Kind::NotProduced => (
            format!("git rm {target}"),
            "run its scenario (or restore it) and look again".to_owned(),
        ),
    }
}

/// The "If this changes." paragraph of the scenario's doc comment, found from its code
/// location (`file:line` of `fn name(`): what a reviewer must check when the tree changes.
#[must_use]
pub fn if_this_changes(code: &str) -> Option<String> {
    let (file, line) = code.rsplit_once(':')?;
    let line: usize = line.parse().ok()?;
    let text = std::fs::read_to_string(file).ok()?;
    let lines: Vec<&str> = text.lines().take(line.saturating_sub(1)).collect();
    // The doc comment above the fn, past its attributes and `// ANCHOR` markers.
    let mut doc = Vec::new();
    for l in lines.iter().rev() {
        let l = l.trim();
        if let Some(d) = l.strip_prefix("///") {
            doc.push(d.trim());
        } else if l.starts_with("#[") || l.starts_with("//") {
            if !doc.is_empty() {
                break;
            }
        } else {
            break;
        }
    }
    doc.reverse();
    let start = doc
        .iter()
        .position(|l| l.starts_with("**If this changes.**"))?;
    let paragraph: Vec<&str> = doc[start..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    Some(paragraph.join(" "))
}

/// What a changed line changed, independent of where it is: the words only the old line has
/// and the words only the new one has, with a value that stayed (a renamed key) written `…`.
/// Two lines with the same signature changed the same way.
fn signature(old: &str, new: &str) -> String {
    let words = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
    let (old_words, new_words) = (words(old), words(new));
    let gone: Vec<&String> = old_words
        .iter()
        .filter(|w| !new_words.contains(w))
        .collect();
    let came: Vec<&String> = new_words
        .iter()
        .filter(|w| !old_words.contains(w))
        .collect();
    let value = |w: &str| w.split_once('=').map(|(_, v)| v.to_owned());
    let key = |w: &str| {
        w.split_once('=')
            .map_or(w.to_owned(), |(k, _)| format!("{k}=…"))
    };
    let mut parts = Vec::new();
    let mut used = vec![false; came.len()];
    for g in &gone {
        let renamed = came
            .iter()
            .enumerate()
            .find(|(i, c)| !used[*i] && value(g).is_some() && value(g) == value(c));
        match renamed {
            Some((i, c)) => {
                used[i] = true;
                parts.push(format!("{} → {}", key(g), key(c)));
            }
            None => parts.push(format!("- {g}")),
        }
    }
    for (i, c) in came.iter().enumerate() {
        if !used[i] {
            parts.push(format!("+ {c}"));
        }
    }
    parts.join(", ")
}

/// The grouping key of a change across snapshots: its signature for a line changed in place,
/// its kind and line for the rest.
fn group_key(change: &diff::Change) -> String {
    match change {
        diff::Change::Changed { old, new, .. } => signature(old, new),
        diff::Change::Added { line, .. } => format!("added: {line}"),
        diff::Change::Removed { line, .. } => format!("removed: {line}"),
        diff::Change::Moved { line, .. } => format!("moved: {line}"),
    }
}

/// The pull-request comment. It starts with a summary: counts, then one table row per
/// snapshot (what happened, how many changes of each kind), then the changes common to
/// several snapshots, each shown once with where it occurs (a cross-cutting rename is one
/// entry, not one per snapshot). Then per snapshot: its code location, the "If this
/// changes." paragraph of its scenario, the changes not already shown as common (a new tree
/// in full), and the commands. `artefacts` links the run's files.
#[must_use]
pub fn markdown(pending: &[Pending], artefacts: Option<&str>) -> String {
    let mut out = String::from("## Span-tree snapshots\n\n");
    if pending.is_empty() {
        out.push_str("No span tree changed.\n");
        return out;
    }
    let count = |k: Kind| pending.iter().filter(|p| p.kind == k).count();
    let _ = writeln!(
        out,
        "{} changed, {} new, {} not produced by this run.{}\n",
        count(Kind::Changed),
        count(Kind::New),
        count(Kind::NotProduced),
        artefacts.map_or_else(String::new, |a| format!(
            " The `.snap.new` files, the side-by-side page (`review.html`) and each scenario's artefacts: {a}"
        ))
    );
    let diffs: Vec<Result<Vec<diff::Change>, String>> = pending
        .iter()
        .map(|p| match (&p.old, &p.new) {
            (Some(old), Some(new)) => diff::diff(old, new).map_err(|e| e.to_string()),
            _ => Ok(Vec::new()),
        })
        .collect();
    // Changes common to two snapshots or more, in order of first appearance.
    let mut groups: Vec<(String, Vec<usize>, usize)> = Vec::new();
    for (i, d) in diffs.iter().enumerate() {
        for c in d.iter().flatten() {
            let key = group_key(c);
            match groups.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, snaps, n)) => {
                    *n += 1;
                    if !snaps.contains(&i) {
                        snaps.push(i);
                    }
                }
                None => groups.push((key, vec![i], 1)),
            }
        }
    }
    groups.retain(|(_, snaps, _)| snaps.len() > 1);
    let common = |c: &diff::Change| {
        let key = group_key(c);
        groups.iter().position(|(k, _, _)| *k == key)
    };

    out.push_str("| snapshot | what | changed | added | removed | moved | common |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | --- |\n");
    for (p, d) in pending.iter().zip(&diffs) {
        let changes = d.as_deref().unwrap_or_default();
        let n = |f: fn(&diff::Change) -> bool| changes.iter().filter(|c| f(c)).count();
        let mut shared: Vec<usize> = changes.iter().filter_map(common).collect();
        shared.sort_unstable();
        shared.dedup();
        let shared: Vec<String> = shared.iter().map(|g| format!("C{}", g + 1)).collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.kind.label(),
            n(|c| matches!(c, diff::Change::Changed { .. })),
            n(|c| matches!(c, diff::Change::Added { .. })),
            n(|c| matches!(c, diff::Change::Removed { .. })),
            n(|c| matches!(c, diff::Change::Moved { .. })),
            shared.join(" ")
        );
    }
    out.push('\n');

    if !groups.is_empty() {
        out.push_str("### Common changes\n\nEach is shown once, with its first occurrence.\n\n");
        for (g, (key, snaps, n)) in groups.iter().enumerate() {
            let names: Vec<String> = snaps
                .iter()
                .map(|&i| format!("`{}`", pending[i].name))
                .collect();
            let _ = writeln!(
                out,
                "**C{}** · {n} line(s) in {} snapshots ({}): `{}`\n",
                g + 1,
                snaps.len(),
                names.join(", "),
                key.replace('`', "'")
            );
            let first = diffs[snaps[0]]
                .iter()
                .flatten()
                .find(|c| group_key(c) == *key)
                .map(ToString::to_string)
                .unwrap_or_default();
            fenced(&mut out, &first);
        }
    }

    for (p, d) in pending.iter().zip(&diffs) {
        let _ = write!(out, "### `{}` — {}", p.name, p.kind.label());
        if let Some(code) = &p.code {
            let _ = write!(out, " (`{code}`)");
        }
        out.push_str("\n\n");
        if let Some(note) = &p.if_changed {
            let _ = writeln!(out, "> {note}\n");
        }
        let body = match (&p.old, &p.new, d) {
            (Some(_), Some(_), Err(e)) => format!("the trees cannot be compared: {e}"),
            (Some(_), Some(_), Ok(changes)) => {
                let own: Vec<String> = changes
                    .iter()
                    .filter(|c| common(c).is_none())
                    .map(ToString::to_string)
                    .collect();
                let shared = changes.len() - own.len();
                let mut body = own.join("\n");
                if shared > 0 {
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    let _ = write!(body, "(and {shared} common change(s), listed above)");
                }
                body
            }
            (None, Some(new), _) => new.trim_end().to_owned(),
            // The committed tree is in the repository; the comment stays short.
            (Some(_), None, _) => format!(
                "no scenario of this run wrote {} (removed, renamed, or its scenario did not run)",
                p.path.display()
            ),
            (None, None, _) => String::new(),
        };
        fenced(&mut out, &body);
        let (accept, reject) = commands(p);
        let _ = writeln!(out, "Accept: `{accept}` · reject: `{reject}`\n");
    }
    out
}

/// `body` in a `text` code fence longer than any backtick run inside it.
fn fenced(out: &mut String, body: &str) {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let _ = writeln!(out, "{fence}text\n{body}\n{fence}\n");
}

/// One row of a side-by-side view: the old line (if any), the new line (if any), whether it
/// differs.
struct Row<'a> {
    old: Option<&'a str>,
    new: Option<&'a str>,
}

/// A line diff (longest common subsequence) of `old` and `new` as side-by-side rows: equal
/// lines share a row, removed lines have only an old side, added lines only a new one.
fn side_by_side<'a>(old: &'a str, new: &'a str) -> Vec<Row<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let rows = lcs_walk(&a, &b)
        .into_iter()
        .map(|step| match step {
            Step::Both(i, j) => Row {
                old: Some(a[i]),
                new: Some(b[j]),
            },
            Step::Old(i) => Row {
                old: Some(a[i]),
                new: None,
            },
            Step::New(j) => Row {
                old: None,
                new: Some(b[j]),
            },
        })
        .collect();
    pair_changes(rows)
}

/// One step of a diff walk: an item both sides share, or one only the old or new side has.
enum Step {
    Both(usize, usize),
    Old(usize),
    New(usize),
}

/// The longest-common-subsequence walk of `a` and `b`; at a tie the old side's item goes
/// first, so a removal and the addition replacing it come out next to each other.
fn lcs_walk<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Step> {
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut steps = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            steps.push(Step::Both(i, j));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            steps.push(Step::Old(i));
            i += 1;
        } else {
            steps.push(Step::New(j));
            j += 1;
        }
    }
    steps
}

/// Removed lines directly followed by added lines become "changed" rows, old and new side by
/// side (the usual case: one span line whose attributes changed).
fn pair_changes(rows: Vec<Row<'_>>) -> Vec<Row<'_>> {
    let mut out: Vec<Row<'_>> = Vec::with_capacity(rows.len());
    let mut i = 0;
    while i < rows.len() {
        let removed = rows[i..]
            .iter()
            .take_while(|r| r.old.is_some() && r.new.is_none())
            .count();
        let added = rows[i + removed..]
            .iter()
            .take_while(|r| r.old.is_none() && r.new.is_some())
            .count();
        if removed > 0 && added > 0 {
            let pairs = removed.min(added);
            for k in 0..pairs {
                out.push(Row {
                    old: rows[i + k].old,
                    new: rows[i + removed + k].new,
                });
            }
            out.extend(rows[i + pairs..i + removed].iter().map(|r| Row {
                old: r.old,
                new: None,
            }));
            out.extend(
                rows[i + removed + pairs..i + removed + added]
                    .iter()
                    .map(|r| Row {
                        old: None,
                        new: r.new,
                    }),
            );
            i += removed + added;
        } else {
            out.push(Row {
                old: rows[i].old,
                new: rows[i].new,
            });
            i += 1;
        }
    }
    out
}

/// Unchanged lines kept open around each change in the review page.
const CONTEXT: usize = 3;

/// A stretch of side-by-side rows: shown, or folded away under a `<details>`.
#[derive(Debug, PartialEq)]
enum Part {
    Shown(std::ops::Range<usize>),
    Folded(std::ops::Range<usize>),
}

/// Splits `rows` into shown and folded stretches: unchanged rows more than `context` rows
/// from any change are folded, when there are more than `context` of them in a row.
fn fold(rows: &[Row<'_>], context: usize) -> Vec<Part> {
    let changed: Vec<bool> = rows.iter().map(|r| r.old != r.new).collect();
    let near = |i: usize| {
        let lo = i.saturating_sub(context);
        let hi = (i + context + 1).min(rows.len());
        changed[lo..hi].iter().any(|&c| c)
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let start = i;
        let shown = near(i);
        while i < rows.len() && near(i) == shown {
            i += 1;
        }
        if !shown && i - start > context {
            parts.push(Part::Folded(start..i));
        } else {
            match parts.last_mut() {
                Some(Part::Shown(r)) => r.end = i,
                _ => parts.push(Part::Shown(start..i)),
            }
        }
    }
    parts
}

/// One side-by-side row: the tree drawing kept apart from the text, so a wrapped line keeps
/// its indentation; in a changed row the words that differ are marked.
fn row_html(out: &mut String, row: &Row<'_>) {
    let (class, old, new) = match (row.old, row.new) {
        (Some(a), Some(b)) if a == b => ("same", cell(a, None), cell(b, None)),
        (Some(a), Some(b)) => {
            let (da, db) = word_diff(text_of(a), text_of(b));
            ("changed", cell(a, Some(&da)), cell(b, Some(&db)))
        }
        (Some(a), None) => ("removed", cell(a, None), String::new()),
        (None, b) => ("added", String::new(), cell(b.unwrap_or(""), None)),
    };
    let _ = writeln!(
        out,
        "<tr class=\"{class}\"><td class=\"old\">{old}</td><td class=\"new\">{new}</td></tr>"
    );
}

/// Where a line's tree drawing (connectors, bars, continuation indent) ends.
fn drawing_len(line: &str) -> usize {
    line.len() - line.trim_start_matches(['│', '├', '└', '─', ' ']).len()
}

fn text_of(line: &str) -> &str {
    &line[drawing_len(line)..]
}

/// A cell: the drawing, then the text (its changed words wrapped in `tag` when given).
fn cell(line: &str, marked: Option<&str>) -> String {
    let draw = &line[..drawing_len(line)];
    let text = marked.map_or_else(|| escape(text_of(line)), str::to_owned);
    format!(
        "<div class=\"l\"><span class=\"d\">{}</span><span class=\"t\">{text}</span></div>",
        escape(draw)
    )
}

/// The words (space-separated tokens, quotes kept whole) of `old` and `new` as HTML, those
/// not in their longest common subsequence wrapped in `<del>` (old) and `<ins>` (new).
fn word_diff(old: &str, new: &str) -> (String, String) {
    let a = words(old);
    let b = words(new);
    let (mut out_a, mut out_b) = (String::new(), String::new());
    let mark = |out: &mut String, word: &str, tag: &str| {
        if word.trim().is_empty() {
            out.push_str(&escape(word));
        } else {
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(word));
        }
    };
    for step in lcs_walk(&a, &b) {
        match step {
            Step::Both(i, j) => {
                out_a.push_str(&escape(a[i]));
                out_b.push_str(&escape(b[j]));
            }
            Step::Old(i) => mark(&mut out_a, a[i], "del"),
            Step::New(j) => mark(&mut out_b, b[j], "ins"),
        }
    }
    (out_a, out_b)
}

/// `text` cut into words and the spaces between them (a quoted string is one word).
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        let space = c == ' ';
        if i > start && space != in_space {
            out.push(&text[start..i]);
            start = i;
        }
        in_space = space;
        if c == '"' {
            quoted = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The review page: per snapshot, old and new tree side by side (removed lines red, added
/// green), the tree-aware diff, the scenario's code location and the commands.
#[must_use]
pub fn html(pending: &[Pending]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Span-tree snapshot review</title>\n<style>\n\
         body { font-family: sans-serif; margin: 1.5em; }\n\
         table.trees { border-collapse: collapse; width: 100%; table-layout: fixed; }\n\
         table.trees td, table.trees th { font-family: monospace; font-size: 12px; vertical-align: top; padding: 0 0.4em; border-left: 1px solid #ddd; }\n\
         div.l { display: flex; }\n\
         span.d { white-space: pre; flex: none; color: #888; }\n\
         span.t { white-space: pre-wrap; word-break: break-all; min-width: 0; }\n\
         tr.removed td.old, tr.changed td.old { background: #fee; }\n\
         tr.added td.new, tr.changed td.new { background: #efe; }\n\
         del { background: #f99; text-decoration: none; }\n\
         ins { background: #8e8; text-decoration: none; }\n\
         details.fold summary { color: #666; font-family: sans-serif; font-size: 12px; cursor: pointer; }\n\
         tr.removed td.new, tr.added td.old { background: #f4f4f4; }\n\
         pre.diff { background: #f6f8fa; padding: 0.6em; overflow-x: auto; }\n\
         code.cmd { background: #eef; padding: 0.1em 0.3em; }\n\
         </style>\n</head>\n<body>\n<h1>Span-tree snapshot review</h1>\n",
    );
    if pending.is_empty() {
        out.push_str("<p>No span tree changed.</p>\n</body>\n</html>\n");
        return out;
    }
    let _ = writeln!(
        out,
        "<p>{} snapshot(s) to review. Old lines that changed or went are red on the left, new ones green on the right; the words that changed are marked. Unchanged stretches are folded (click to open).</p>",
        pending.len()
    );
    for p in pending {
        let _ = writeln!(
            out,
            "<section class=\"snapshot\" id=\"{0}\">\n<h2><code>{0}</code> — {1}</h2>",
            escape(&p.name),
            p.kind.label()
        );
        if let Some(code) = &p.code {
            let _ = writeln!(
                out,
                "<p>Scenario: <code class=\"code\">{}</code></p>",
                escape(code)
            );
        }
        let (accept, reject) = commands(p);
        let _ = writeln!(
            out,
            "<p>Accept: <code class=\"cmd accept\">{}</code> · reject: <code class=\"cmd reject\">{}</code></p>",
            escape(&accept),
            escape(&reject)
        );
        let (old, new) = (
            p.old.as_deref().unwrap_or(""),
            p.new.as_deref().unwrap_or(""),
        );
        out.push_str(
            "<table class=\"trees\">\n<tr><th>committed (.snap)</th><th>this run (.snap.new)</th></tr>\n",
        );
        let rows = side_by_side(old, new);
        for part in fold(&rows, CONTEXT) {
            match part {
                Part::Shown(range) => rows[range].iter().for_each(|r| row_html(&mut out, r)),
                Part::Folded(range) => {
                    let _ = writeln!(
                        out,
                        "<tr class=\"fold\"><td colspan=\"2\"><details class=\"fold\"><summary>{} unchanged lines</summary>\n<table class=\"trees\">",
                        range.len()
                    );
                    rows[range].iter().for_each(|r| row_html(&mut out, r));
                    out.push_str("</table></details></td></tr>\n");
                }
            }
        }
        out.push_str("</table>\n");
        if p.old.is_some() && p.new.is_some() {
            let _ = writeln!(
                out,
                "<h3>Tree-aware diff</h3>\n<pre class=\"diff\">{}</pre>",
                escape(&diff::diff_text(old, new))
            );
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "trace#1\nmetis-api  POST /runs  [server]\n└─ create_run  run_id=[run#1]\n";
    const NEW: &str =
        "trace#1\nmetis-api  POST /runs  [server]\n└─ create_run  run_id=[run#1] user_id=alice\n";

    fn snap(body: &str) -> String {
        format!("---\nsource: x\n---\n{body}")
    }

    #[test]
    fn pending_changed_new_and_not_produced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.snap"), snap(OLD)).unwrap();
        std::fs::write(d.join("a.snap.new"), snap(NEW)).unwrap();
        std::fs::write(d.join("b.snap.new"), snap(NEW)).unwrap();
        std::fs::write(d.join("c.snap"), snap(OLD)).unwrap();
        std::fs::write(d.join("d.snap"), snap(OLD)).unwrap();
        let code = d.join("code");
        std::fs::create_dir(&code).unwrap();
        std::fs::write(code.join("x.rs"), "// a\nasync fn a() {}\n").unwrap();
        let produced = ["a".to_owned(), "b".to_owned(), "d".to_owned()];
        let p = pending(d, Some(&produced), Some(&code)).unwrap();
        let kinds: Vec<(&str, Kind)> = p.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("a", Kind::Changed),
                ("b", Kind::New),
                ("c", Kind::NotProduced)
            ]
        );
        assert_eq!(p[0].old.as_deref(), Some(OLD));
        assert_eq!(p[0].new.as_deref(), Some(NEW));
        assert!(
            p[0].code.as_deref().unwrap().ends_with("x.rs:2"),
            "{:?}",
            p[0].code
        );

        let md = markdown(&p, Some("https://example.invalid/run/1"));
        assert!(
            md.contains("1 changed, 1 new, 1 not produced by this run."),
            "{md}"
        );
        assert!(md.contains("### `a` — changed"), "{md}");
        assert!(
            md.contains("changed  trace#1 › metis-api POST /runs › create_run"),
            "{md}"
        );
        assert!(
            md.contains(&format!(
                "cargo insta accept --snapshot {}",
                d.join("a.snap").display()
            )),
            "{md}"
        );

        let page = html(&p);
        // The drawing apart from the text (a wrapped line keeps its indent), the new word
        // marked.
        assert!(
            page.contains("<tr class=\"changed\"><td class=\"old\"><div class=\"l\"><span class=\"d\">└─ </span><span class=\"t\">create_run  run_id=[run#1]</span></div></td><td class=\"new\"><div class=\"l\"><span class=\"d\">└─ </span><span class=\"t\">create_run  run_id=[run#1] <ins>user_id=alice</ins></span></div></td></tr>"),
            "{page}"
        );
        assert!(
            page.contains(
                "<tr class=\"same\"><td class=\"old\"><div class=\"l\"><span class=\"d\"></span><span class=\"t\">metis-api  POST /runs  [server]</span>"
            ),
            "{page}"
        );
        assert!(!page.contains("<script"), "no scripts");
    }

    #[test]
    fn side_by_side_pairs_changes_and_keeps_the_rest() {
        let rows = side_by_side("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n");
        let cells: Vec<(Option<&str>, Option<&str>)> =
            rows.iter().map(|r| (r.old, r.new)).collect();
        assert_eq!(
            cells,
            [
                (Some("a"), Some("a")),
                (Some("b"), Some("B")),
                (Some("c"), Some("c")),
                (Some("d"), Some("d")),
                (None, Some("e")),
            ]
        );
        let rows = side_by_side("a\nx\ny\n", "a\nz\n");
        let cells: Vec<(Option<&str>, Option<&str>)> =
            rows.iter().map(|r| (r.old, r.new)).collect();
        assert_eq!(
            cells,
            [
                (Some("a"), Some("a")),
                (Some("x"), Some("z")),
                (Some("y"), None)
            ]
        );
    }

    #[test]
    fn changed_words_are_marked_and_unchanged_stretches_fold() {
        let (a, b) = word_diff(
            "create_run  state=RUNNING note=\"a b\" x=1",
            "create_run  state=COMPLETE note=\"a b\" x=1",
        );
        assert_eq!(
            a,
            "create_run  <del>state=RUNNING</del> note=&quot;a b&quot; x=1"
        );
        assert_eq!(
            b,
            "create_run  <ins>state=COMPLETE</ins> note=&quot;a b&quot; x=1"
        );
        let old: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 10\n", "line ten\n");
        let rows = side_by_side(&old, &new);
        assert_eq!(
            fold(&rows, 3),
            [Part::Folded(0..7), Part::Shown(7..14), Part::Folded(14..20)]
        );
        let page = html(&[Pending {
            name: "x".into(),
            kind: Kind::Changed,
            old: Some(old),
            new: Some(new),
            path: "x.snap".into(),
            code: None,
            if_changed: None,
        }]);
        assert_eq!(
            page.matches("<details class=\"fold\">").count(),
            2,
            "{page}"
        );
        assert!(
            page.contains("<summary>7 unchanged lines</summary>"),
            "{page}"
        );
    }

    /// A cross-cutting rename (one attribute, every snapshot) is one common change shown
    /// once, each snapshot's section quotes its scenario's "If this changes." paragraph, and
    /// the comment stays a fraction of what a diff per snapshot would be.
    #[test]
    fn a_cross_cutting_rename_is_one_common_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let code = d.join("code");
        std::fs::create_dir(&code).unwrap();
        let mut src = String::new();
        let names: Vec<String> = (0..12).map(|i| format!("scenario_{i}")).collect();
        for name in &names {
            let tree = format!(
                "trace#1\nmetis-api  POST /runs  [server]  http.route=/runs\n└─ create_run  run_id=[run#1] user_id=alice case={name}\n   └─ persist  user_id=alice\n"
            );
            std::fs::write(d.join(format!("{name}.snap")), snap(&tree)).unwrap();
            std::fs::write(
                d.join(format!("{name}.snap.new")),
                snap(&tree.replace("user_id=", "enduser.id=")),
            )
            .unwrap();
            src.push_str(&format!(
                "/// **Why it matters.** {name}.\n///\n/// **If this changes.** Check {name}\n/// twice.\n#[tokio::test]\nasync fn {name}() {{}}\n\n"
            ));
        }
        // One snapshot also changes on its own.
        let own = d.join("scenario_3.snap.new");
        let text = std::fs::read_to_string(&own).unwrap();
        std::fs::write(
            &own,
            text.replace("http.route=/runs", "http.route=/v2/runs"),
        )
        .unwrap();
        std::fs::write(code.join("s.rs"), src).unwrap();
        let p = pending(d, None, Some(&code)).unwrap();
        let md = markdown(&p, None);
        assert_eq!(md.matches("**C1**").count(), 1, "{md}");
        assert!(md.contains("24 line(s) in 12 snapshots"), "{md}");
        assert!(md.contains("`user_id=… → enduser.id=…`"), "{md}");
        assert!(!md.contains("**C2**"), "{md}");
        assert!(
            md.contains("> **If this changes.** Check scenario_7 twice."),
            "{md}"
        );
        assert!(
            md.contains("http.route=/v2/runs"),
            "the change of its own: {md}"
        );
        assert_eq!(md.matches("+ create_run").count(), 1, "{md}");
        // The renamed lines are shown once (C1's example), not 24 times.
        assert_eq!(md.matches("+ persist").count(), 0, "{md}");
        assert!(md.matches("enduser.id=alice").count() <= 2, "{md}");
    }

    #[test]
    fn nothing_to_review() {
        assert!(markdown(&[], None).contains("No span tree changed."));
        assert!(html(&[]).contains("No span tree changed."));
    }
}
