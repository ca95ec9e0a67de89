//! The Metis book: mdBook 0.5 driven as a library, plus the generators and checks that keep
//! the book equal to what the tests produce.
//!
//! - [`build`]: refresh the generated pages ([`generate`]), then load `book/` with
//!   `mdbook-driver`, register the in-process `metis` preprocessor ([`directives`]) and render
//!   HTML into `target/book/`. mdBook's own warnings fail the build ([`mdbook_log`]).
//! - [`check`]: what `just book-check` (and so `just test`) runs — generated pages must be
//!   current (they are rewritten, and the check fails listing them, like rust-analyzer's
//!   `ensure_file_contents`), the generators must report no problems, the book must build,
//!   every internal link must resolve ([`links`]) and the site must pass the headless-browser
//!   test ([`browser`]).
//! - [`serve`]: build, then serve `target/book/` on <http://127.0.0.1:3000> ([`server`]).
//!
//! Other modules: [`snapshot`] (reading `scenarios/snapshots/*.snap`), [`anchor`]
//! (`// ANCHOR:` regions), [`timeline`] (the structure waterfall), [`recording`] (recorded
//! timings to scale), [`progress`] (step output).

pub mod anchor;
pub mod browser;
pub mod directives;
pub mod generate;
pub mod links;
pub mod mdbook_log;
pub mod progress;
pub mod recording;
pub mod server;
pub mod snapshot;
pub mod timeline;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mdbook_driver::MDBook;

use crate::progress::step;

/// The workspace the book is built from.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Workspace root (the folder with the virtual `Cargo.toml`).
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace this crate was compiled in (the parent of `book/`).
    #[must_use]
    pub fn locate() -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self {
            root: manifest.parent().unwrap_or(manifest).to_owned(),
        }
    }

    /// `book/` (holds `book.toml`).
    #[must_use]
    pub fn book_dir(&self) -> PathBuf {
        self.root.join("book")
    }

    /// `scenarios/snapshots/`.
    #[must_use]
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("scenarios/snapshots")
    }

    /// `scenarios/tests/it/`.
    #[must_use]
    pub fn scenario_code_dir(&self) -> PathBuf {
        self.root.join("scenarios/tests/it")
    }

    /// `target/book/`, where the site is written.
    #[must_use]
    pub fn out_dir(&self) -> PathBuf {
        self.root.join("target/book")
    }

    /// `target/book-check/`, scratch space of the check (screenshots); not published.
    #[must_use]
    pub fn check_dir(&self) -> PathBuf {
        self.root.join("target/book-check")
    }
}

/// Regenerates the committed pages; returns the files that changed and the problems found.
pub fn regenerate(ws: &Workspace) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let s = step("regenerating book/src/generated/");
    let generation = generate::all(ws)?;
    let changed = generate::ensure(ws, &generation.files)?;
    s.done();
    Ok((changed, generation.problems))
}

/// Loads the book with the `metis` preprocessor registered and the output in `target/book/`.
pub fn load(ws: &Workspace) -> Result<MDBook> {
    let mut book = MDBook::load(ws.book_dir())
        .with_context(|| format!("loading the book in {}", ws.book_dir().display()))?;
    book.config.build.build_dir = ws.out_dir();
    if let Some(repo) = repository(ws) {
        let branch = std::env::var("METIS_BOOK_BRANCH").unwrap_or_else(|_| "main".to_owned());
        let name = repo.rsplit('/').next().unwrap_or(&repo).to_owned();
        book.config.set(
            "output.html.git-repository-url",
            format!("https://github.com/{repo}"),
        )?;
        book.config.set(
            "output.html.edit-url-template",
            format!("https://github.com/{repo}/edit/{branch}/book/src/{{path}}"),
        )?;
        // Project Pages serve the site under /<repository>/ (only when publishing: a local
        // `serve` is at the root).
        if std::env::var_os("GITHUB_ACTIONS").is_some() {
            book.config
                .set("output.html.site-url", format!("/{name}/"))?;
        }
    }
    if let Ok(site) = std::env::var("METIS_BOOK_SITE_URL") {
        book.config.set("output.html.site-url", site)?;
    }
    book.with_preprocessor(directives::MetisPreprocessor::new(directives::Sources::of(
        ws,
    )));
    Ok(book)
}

/// The GitHub repository (`owner/name`) the book's edit links point into:
/// `$METIS_BOOK_REPOSITORY`, else `$GITHUB_REPOSITORY` (set in every GitHub Actions run), else
/// the `origin` remote when it is on github.com; `None` (no edit links) otherwise.
#[must_use]
pub fn repository(ws: &Workspace) -> Option<String> {
    for var in ["METIS_BOOK_REPOSITORY", "GITHUB_REPOSITORY"] {
        if let Ok(v) = std::env::var(var)
            && v.contains('/')
        {
            return Some(v.trim().to_owned());
        }
    }
    let out = std::process::Command::new("git")
        .args(["remote", "get-url", "origin"])
        .current_dir(&ws.root)
        .output()
        .ok()?;
    github_repository(String::from_utf8_lossy(&out.stdout).trim())
}

/// `owner/name` of a github.com remote URL (`https://github.com/o/n.git`, `git@github.com:o/n`).
#[must_use]
pub fn github_repository(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let (owner, name) = rest.split_once('/')?;
    (!owner.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| format!("{owner}/{name}"))
}

/// Renders the book into `target/book/` (generated pages must already be current).
pub fn render(ws: &Workspace) -> Result<PathBuf> {
    let s = step(format!(
        "rendering the book into {}",
        ws.out_dir().display()
    ));
    let warnings = mdbook_log::capture(|| load(ws)?.build())?;
    if !warnings.is_empty() {
        bail!(
            "mdBook reported {} warning(s); the book must build cleanly:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        );
    }
    s.done();
    Ok(ws.out_dir())
}

/// `build`: refresh the generated pages (warning about problems), then render.
pub fn build(ws: &Workspace) -> Result<PathBuf> {
    let (changed, problems) = regenerate(ws)?;
    for c in &changed {
        eprintln!("book: updated {} (commit it)", c.display());
    }
    for p in &problems {
        eprintln!("book: warning: {p}");
    }
    let out = render(ws)?;
    eprintln!("book: wrote {}", out.join("index.html").display());
    Ok(out)
}

/// `check`: generated pages current and problem-free, book builds, links resolve, browser test.
pub fn check(ws: &Workspace) -> Result<()> {
    let (changed, problems) = regenerate(ws)?;
    if !changed.is_empty() || !problems.is_empty() {
        let mut msg = String::new();
        if !changed.is_empty() {
            msg.push_str(&format!(
                "generated book pages were out of date and have been rewritten; review and commit them:\n  {}\n",
                changed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        if !problems.is_empty() {
            msg.push_str(&format!(
                "the generators found {} problem(s):\n  {}\n",
                problems.len(),
                problems.join("\n  ")
            ));
        }
        bail!("{}", msg.trim_end());
    }
    let out = render(ws)?;
    let s = step("checking internal links");
    let site = load(ws)?
        .config
        .html_config()
        .and_then(|h| h.site_url)
        .unwrap_or_else(|| "/".to_owned());
    let report = links::check(&out, &site)?;
    if !report.broken.is_empty() {
        bail!(
            "{} broken internal link(s) in {}:\n  {}",
            report.broken.len(),
            out.display(),
            report.broken.join("\n  ")
        );
    }
    s.done_with(format!(
        "{} links in {} pages resolve",
        report.links, report.pages
    ));
    browser::check_site(ws, &out)?;
    eprintln!("book: check passed");
    Ok(())
}

/// What `serve` watches: the book's sources and everything its pages are made from.
const WATCHED: &[&str] = &[
    "book/src",
    "book/book.toml",
    "scenarios/snapshots",
    "scenarios/tests/it",
    "scenarios/README.md",
    "fixtures",
    "crates/telemetry/spans.toml",
    "crates/common/src",
    "crates/test-support/src",
    "harness/src",
    "target/e2e",
];

/// The newest modification time under the watched paths, ignoring the generated pages (which
/// a rebuild itself rewrites).
fn newest_change(ws: &Workspace) -> Option<std::time::SystemTime> {
    fn walk(p: &Path, newest: &mut Option<std::time::SystemTime>) {
        if p.ends_with("generated") {
            return;
        }
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(Some(m));
        }
    }
    let mut newest = None;
    for w in WATCHED {
        walk(&ws.root.join(w), &mut newest);
    }
    newest
}

/// `serve`: build, then serve `target/book/` on 127.0.0.1:`port` until Ctrl-C, rebuilding
/// whenever a watched source changes (checked every second; a failed rebuild is reported and
/// the last good site stays up).
pub fn serve(ws: &Workspace, port: u16) -> Result<()> {
    let out = build(ws)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let srv = server::Server::start(&out, ([127, 0, 0, 1], port).into()).await?;
        println!(
            "serving the book on {}/ — rebuilding on changes to {} (Ctrl-C stops)",
            srv.url,
            WATCHED.join(", ")
        );
        let watch_ws = ws.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        // A thread of its own (not the runtime's blocking pool, which would wait for it).
        std::thread::spawn(move || {
            let mut seen = newest_change(&watch_ws);
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let now = newest_change(&watch_ws);
                if now != seen {
                    eprintln!("book: a source changed; rebuilding");
                    if let Err(e) = build(&watch_ws) {
                        eprintln!("book: rebuild failed (the last good site stays up): {e:#}");
                    }
                    // The rebuild may itself touch watched files (regenerated pages).
                    seen = newest_change(&watch_ws);
                }
            }
        });
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        srv.stop().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_remotes() {
        for url in [
            "https://github.com/acme/metis.git",
            "https://github.com/acme/metis",
            "git@github.com:acme/metis.git",
            "ssh://git@github.com/acme/metis",
        ] {
            assert_eq!(
                github_repository(url).as_deref(),
                Some("acme/metis"),
                "{url}"
            );
        }
        for url in [
            "/work/main",
            "https://gitlab.com/a/b",
            "https://github.com/a",
            "",
        ] {
            assert_eq!(github_repository(url), None, "{url}");
        }
    }

    /// The committed generated pages are what the generators make now: `cargo test` catches a
    /// stale page without running the whole `just book-check`.
    #[test]
    fn generated_pages_are_fresh() {
        let ws = Workspace::locate();
        let generation = generate::all(&ws).unwrap();
        let stale: Vec<String> = generation
            .files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(ws.root.join(&f.path))
                    .ok()
                    .as_deref()
                    != Some(f.content.as_str())
            })
            .map(|f| f.path.display().to_string())
            .collect();
        assert!(
            stale.is_empty(),
            "stale generated book pages (run `just book` and commit them): {stale:?}"
        );
        assert!(generation.problems.is_empty(), "{:#?}", generation.problems);
    }
}
