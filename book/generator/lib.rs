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
//! (`// ANCHOR:` regions), [`timeline`] (the SVG waterfall), [`progress`] (step output).

pub mod anchor;
pub mod browser;
pub mod directives;
pub mod generate;
pub mod links;
pub mod mdbook_log;
pub mod progress;
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
    book.with_preprocessor(directives::MetisPreprocessor::new(directives::Sources::of(
        ws,
    )));
    Ok(book)
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
    let report = links::check(&out)?;
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

/// `serve`: build, then serve `target/book/` on 127.0.0.1:3000 until Ctrl-C.
pub fn serve(ws: &Workspace, port: u16) -> Result<()> {
    let out = build(ws)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let srv = server::Server::start(&out, ([127, 0, 0, 1], port).into()).await?;
        println!("serving the book on {}/ (Ctrl-C stops)", srv.url);
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        srv.stop().await;
        Ok(())
    })
}
