//! The browser test: the built site, served by [`crate::server`] on an ephemeral port, loaded
//! in Debian's headless `chromium`.
//!
//! Each page is loaded with `--dump-dom` after a virtual-time budget (so scripts — the sidebar,
//! the search index — have run), and the DOM is checked:
//!
//! 1. **Self-test.** A throw-away page that logs to the console and requests a missing image
//!    must be caught by both detectors below; otherwise this chromium cannot see errors and
//!    the test refuses to pass rather than pass blind.
//! 2. **Navigation.** The sidebar (built by JavaScript) links every chapter of `SUMMARY.md`,
//!    and every sidebar link names a page that exists; the tracing page's "next chapter" link
//!    loads the chapter that follows it.
//! 3. **Span trees.** The tracing page shows every line of the current `run_completes`
//!    snapshot, and each scenario's page (`scenarios/<name>.html`) its snapshot.
//! 4. **Timelines.** Each of those pages holds the timeline figure with one `span-bar` per
//!    span of the snapshot; a scenario page holds the recorded waterfall (with bars) when
//!    `target/e2e/<name>/spans.json` exists, else the note that there is no recording.
//! 5. **New reader pages.** The quick start shows every command and state line of the
//!    `quick_start` transcript and every line of its tree; the troubleshooting page has its
//!    sections; the run-state diagram on the lifecycle page draws every move
//!    `State::can_transition` allows once (an arrow, or a member of a bundle); pages carry edit links when the repository is known.
//! 6. **Search.** `?search=workflow_run` produces search results.
//!
//!    **Pages fit at 1280 px.** Every chapter loaded with `?layout-check` (which runs the
//!    book's `layout-check.js`) reports no code block, table or SVG wider than its column and
//!    no diagram node (a `g` with a shape) without a label.
//! 7. **Snapshot review.** The generated review page shows the example change as one
//!    changed row (old beside new), with the accept command; the "reviewing" chapter shows the
//!    generated pull-request comment and links the page.
//! 8. **No errors.** No page wrote to the console (chromium's `--enable-logging` reports
//!    console messages without their severity, so any message counts), and the server
//!    answered no request with an error status (`/favicon.ico`, which browsers ask for on
//!    their own, aside).
//!
//! Screenshots for a human to look at are written to `target/book-check/` (1280 px wide): the
//! tracing page, the quick start, troubleshooting, the `run_completes` scenario page, the
//! lifecycle page (the state diagram), the landing page, a fault scenario's page
//! (`engine_killed_mid_run`) and the span reference.
//! A missing `chromium` is an error that says how to install it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use regex::Regex;

use crate::Workspace;
use crate::progress::step;
use crate::server::Server;
use crate::snapshot::Snapshot;

/// How long one chromium run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Virtual time chromium lets scripts run before dumping the DOM, in ms.
const BUDGET_MS: u32 = 5000;

/// A headless chromium with its own throw-away profile.
pub struct Chromium {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

/// What one page load produced.
#[derive(Debug)]
pub struct Page {
    /// The serialised DOM after scripts ran.
    pub dom: String,
    /// Console messages (`"text", source: url (line)`).
    pub console: Vec<String>,
}

static CONSOLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r":CONSOLE[^\]]*\]\s*(.*)$").expect("static regex"));

/// The console messages in chromium's `--enable-logging=stderr` output.
#[must_use]
pub fn console_messages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| CONSOLE.captures(l).map(|c| c[1].to_owned()))
        .collect()
}

impl Chromium {
    /// Finds `chromium` (or `chromium-browser`, or Google Chrome as CI runners have it) on
    /// `PATH`.
    pub fn find() -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
            .find(|p| p.is_file())
            .context(
                "chromium is not installed, and the book's browser test needs it: \
                 `apt-get install chromium` (Debian; `just setup` installs it when run as root)",
            )?;
        let profile = tempfile::Builder::new()
            .prefix("metis-book-chromium-")
            .tempdir()
            .context("creating a chromium profile folder")?;
        Ok(Self { bin, profile })
    }

    async fn run(&self, url: &str, extra: &[String]) -> Result<(String, String)> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--virtual-time-budget={BUDGET_MS}"))
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
            .await
            .with_context(|| {
                format!("chromium did not finish loading {url} within {RUN_TIMEOUT:?}")
            })?
            .with_context(|| format!("running {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!(
                "chromium exited with {} loading {url}; its stderr ends:\n{}",
                out.status,
                tail(&stderr, 15)
            );
        }
        Ok((stdout, stderr))
    }

    /// Loads `url` and returns its DOM after scripts ran, and its console messages.
    pub async fn dump_dom(&self, url: &str) -> Result<Page> {
        let (dom, stderr) = self.run(url, &["--dump-dom".to_owned()]).await?;
        if !dom.contains("</html>") {
            bail!(
                "chromium returned no DOM for {url}; its stderr ends:\n{}",
                tail(&stderr, 15)
            );
        }
        Ok(Page {
            dom,
            console: console_messages(&stderr),
        })
    }

    /// Writes a PNG screenshot of `url`; returns its console messages.
    pub async fn screenshot(&self, url: &str, png: &Path) -> Result<Vec<String>> {
        let (_, stderr) = self
            .run(url, &[format!("--screenshot={}", png.display())])
            .await?;
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            bail!("chromium wrote no screenshot of {url} to {}", png.display());
        }
        Ok(console_messages(&stderr))
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Text as it appears in a serialised DOM text node.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `href`s inside the element that starts with `open_tag` (up to its closing tag).
fn links_inside(dom: &str, open_tag: &str, close_tag: &str) -> Vec<String> {
    static HREF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"<a\s[^>]*href="([^"]*)""#).expect("static regex"));
    let Some(start) = dom.find(open_tag) else {
        return Vec::new();
    };
    let end = dom[start..]
        .find(close_tag)
        .map_or(dom.len(), |e| start + e);
    HREF.captures_iter(&dom[start..end])
        .map(|c| c[1].replace("&amp;", "&"))
        .collect()
}

/// The site-relative path a link on page `page` (site-relative, e.g. `tracing/index.html`)
/// points to, without query or fragment.
fn resolve(page: &str, href: &str) -> String {
    let href = href.split(['#', '?']).next().unwrap_or_default();
    if href.is_empty() {
        return page.to_owned();
    }
    let mut parts: Vec<&str> = page.split('/').collect();
    parts.pop();
    for seg in href.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Chapters of the book in SUMMARY order: (name, site-relative HTML path).
fn chapters(ws: &Workspace) -> Result<Vec<(String, String)>> {
    let book = crate::load(ws)?;
    let mut out = Vec::new();
    for item in book.iter() {
        if let mdbook_driver::book::BookItem::Chapter(ch) = item
            && let Some(path) = &ch.path
        {
            let html = if path.file_name().is_some_and(|n| n == "README.md") {
                path.with_file_name("index.html")
            } else {
                path.with_extension("html")
            };
            out.push((ch.name.clone(), html.display().to_string()));
        }
    }
    Ok(out)
}

/// Failures collected over the whole test.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// Proves that console messages and failed requests are seen at all.
async fn self_test(chromium: &Chromium) -> Result<()> {
    let s = step("browser self-test: a page with a console error and a missing image");
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("index.html"),
        "<!DOCTYPE html><html><body><h1>canary</h1><img src=\"missing.png\">\
         <script>console.error(\"canary-console-error\")</script></body></html>",
    )?;
    let srv = Server::start(dir.path(), ([127, 0, 0, 1], 0).into()).await?;
    let page = chromium.dump_dom(&format!("{}/index.html", srv.url)).await;
    let misses = srv.misses();
    srv.stop().await;
    let page = page?;
    if !page
        .console
        .iter()
        .any(|m| m.contains("canary-console-error"))
    {
        bail!(
            "the browser test cannot see console messages with this chromium (it printed no \
             `:CONSOLE` line for a page that calls console.error); refusing to pass blind"
        );
    }
    if !misses.iter().any(|m| m.contains("missing.png")) {
        bail!("the static server did not record the canary's missing image: {misses:?}");
    }
    s.done_with("console errors and failed requests are detected");
    Ok(())
}

/// Proves that the layout check can fail: a page with the book's own CSS and
/// `layout-check.js`, a 200-column code line, a table wider than the column and a diagram
/// node without a label must be reported on all three counts.
async fn layout_self_test(chromium: &Chromium, ws: &Workspace) -> Result<()> {
    let s = step("browser self-test: the layout check sees an overflowing tree, table and node");
    let dir = tempfile::tempdir()?;
    for file in ["metis.css", "layout-check.js"] {
        std::fs::copy(ws.root.join("book").join(file), dir.path().join(file))?;
    }
    let long = "x".repeat(200);
    let cells: String = (0..40)
        .map(|i| format!("<td style=\"white-space:nowrap\">column {i} of a table too wide</td>"))
        .collect();
    std::fs::write(
        dir.path().join("index.html"),
        format!(
            "<!DOCTYPE html><html><head><link rel=\"stylesheet\" href=\"metis.css\"></head>\
             <body><div class=\"content\"><main style=\"max-width:940px\">\
             <pre><code>trace#1\n{long}</code></pre>\
             <div class=\"table-wrapper\"><table><tr>{cells}</tr></table></div>\
             <svg aria-label=\"canary\" width=\"100\" height=\"50\"><g><rect width=\"10\" height=\"10\"/></g></svg>\
             </main></div><script src=\"layout-check.js\"></script></body></html>"
        ),
    )?;
    let srv = Server::start(dir.path(), ([127, 0, 0, 1], 0).into()).await?;
    let page = chromium
        .dump_dom(&format!("{}/index.html?layout-check", srv.url))
        .await;
    srv.stop().await;
    let report = layout_report(&page?.dom).unwrap_or_default();
    for needle in [
        "overflow pre",
        "longest line 200",
        "overflow table",
        "unlabelled node",
    ] {
        if !report.contains(needle) {
            bail!(
                "the layout check did not report `{needle}` on a page made to fail it; refusing to \
                 pass blind. Its report:\n{report}"
            );
        }
    }
    s.done_with("a 200-column line, a wide table and an unlabelled node are reported");
    Ok(())
}

/// Runs the browser test against the site in `out`.
pub fn check_site(ws: &Workspace, out: &Path) -> Result<()> {
    let chromium = Chromium::find()?;
    let chapters = chapters(ws)?;
    let run_completes = Snapshot::load(&ws.snapshots_dir(), "run_completes")?;
    let snapshots = Snapshot::load_all(&ws.snapshots_dir())?;
    let shot = ws.check_dir().join("tracing.png");
    std::fs::create_dir_all(ws.check_dir())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        self_test(&chromium).await?;
        layout_self_test(&chromium, ws).await?;
        let srv = Server::start(out, ([127, 0, 0, 1], 0).into()).await?;
        let expected = Expected {
            chapters: &chapters,
            run_completes: &run_completes,
            snapshots: &snapshots,
            transcript: crate::snapshot::strip_header(&std::fs::read_to_string(
                ws.snapshots_dir().join("transcripts/quick_start.snap"),
            )?)?,
            recordings: crate::directives::Sources::of(ws).recordings,
            transitions: crate::generate::states::transitions().len(),
            repository: crate::repository(ws),
        };
        let result = site_checks(&chromium, &srv, &expected, &shot).await;
        let misses: Vec<String> = srv
            .misses()
            .into_iter()
            .filter(|m| !m.ends_with(" /favicon.ico"))
            .collect();
        srv.stop().await;
        let mut failures = result?;
        failures.check(misses.is_empty(), || {
            format!(
                "the server answered requests with errors: {}",
                misses.join(", ")
            )
        });
        if !failures.0.is_empty() {
            bail!(
                "the browser test failed ({} problem(s)):\n  {}",
                failures.0.len(),
                failures.0.join("\n  ")
            );
        }
        eprintln!("book: screenshot of the tracing page: {}", shot.display());
        Ok(())
    })
}

/// What the site checks compare the pages with.
struct Expected<'a> {
    chapters: &'a [(String, String)],
    run_completes: &'a Snapshot,
    snapshots: &'a [Snapshot],
    /// The quick start's transcript snapshot, without its header.
    transcript: String,
    /// Where the scenarios' recordings are (`{{#recording}}` reads them).
    recordings: std::path::PathBuf,
    /// How many moves `State::can_transition` allows.
    transitions: usize,
    /// The repository edit links point into, if known.
    repository: Option<String>,
}

async fn site_checks(
    chromium: &Chromium,
    srv: &Server,
    expected: &Expected<'_>,
    shot: &Path,
) -> Result<Failures> {
    let Expected {
        chapters,
        run_completes,
        snapshots,
        transcript,
        recordings,
        transitions,
        repository,
    } = expected;
    let (chapters, snapshots, run_completes) = (*chapters, *snapshots, *run_completes);
    let transitions = *transitions;
    let shot_dir = shot.parent().unwrap_or(shot);
    let mut f = Failures::default();
    let mut console: Vec<(String, String)> = Vec::new();
    let url = |path: &str| format!("{}/{path}", srv.url);

    // Navigation: the sidebar, built by toc.js, links every chapter.
    let s = step("browser: index page and sidebar navigation");
    let index = visit(chromium, &url("index.html"), "index.html", &mut console).await?;
    let sidebar: Vec<String> = links_inside(
        &index.dom,
        "<mdbook-sidebar-scrollbox",
        "</mdbook-sidebar-scrollbox>",
    )
    .iter()
    .map(|h| resolve("index.html", h))
    .collect();
    f.check(!sidebar.is_empty(), || {
        "the sidebar of index.html holds no links (toc.js did not run?)".to_owned()
    });
    for (name, path) in chapters {
        f.check(sidebar.contains(path), || {
            format!("the sidebar does not link chapter `{name}` ({path}); it links {sidebar:?}")
        });
    }
    for link in &sidebar {
        f.check(chapters.iter().any(|(_, p)| p == link), || {
            format!("the sidebar links `{link}`, which is no chapter of SUMMARY.md")
        });
    }
    // The sidebar also lists the current page's headings as `#fragment` links.
    for href in links_inside(
        &index.dom,
        "<mdbook-sidebar-scrollbox",
        "</mdbook-sidebar-scrollbox>",
    ) {
        if let Some(frag) = href.strip_prefix('#') {
            f.check(index.dom.contains(&format!(r#"id="{frag}""#)), || {
                format!("the sidebar of index.html links `#{frag}`, which is no id on the page")
            });
        }
    }
    s.done_with(format!("{} chapters linked", sidebar.len()));

    // The tracing page: the current run_completes tree and its timeline.
    let s = step("browser: tracing page shows the run_completes tree and timeline");
    let tracing = visit(
        chromium,
        &url("tracing/index.html"),
        "tracing/index.html",
        &mut console,
    )
    .await?;
    for line in run_completes.body.lines().filter(|l| !l.trim().is_empty()) {
        f.check(tracing.dom.contains(&dom_text(line)), || {
            format!("tracing/index.html does not show this line of run_completes.snap: {line}")
        });
    }
    check_timeline(&mut f, "tracing/index.html", &tracing.dom, run_completes);
    s.done();

    // Next-chapter navigation from the tracing page.
    let s = step("browser: next-chapter link");
    let next = links_inside(&tracing.dom, r#"<a rel="next"#, "</a>");
    let pos = chapters.iter().position(|(_, p)| p == "tracing/index.html");
    match (next.first(), pos.and_then(|i| chapters.get(i + 1))) {
        (Some(href), Some((name, path))) => {
            let target = resolve("tracing/index.html", href);
            f.check(&target == path, || {
                format!("the tracing page's next link goes to {target}, expected {path}")
            });
            let page = visit(chromium, &url(&target), &target, &mut console).await?;
            f.check(
                page.dom.contains(&format!("<title>{}", dom_text(name))),
                || format!("{target} does not have the title `{name}`"),
            );
        }
        (None, _) => {
            f.0.push("the tracing page has no next-chapter link".to_owned())
        }
        (_, None) => {
            f.0.push("the tracing page is not followed by a chapter".to_owned())
        }
    }
    s.done();

    // A page per scenario: its tree, its timeline, its recorded timings (or the note).
    let s = step("browser: every scenario's page (tree, timeline, recorded timings)");
    let mut recorded = 0;
    for snap in snapshots {
        let page_path = format!("scenarios/{}.html", snap.name);
        let page = visit(chromium, &url(&page_path), &page_path, &mut console).await?;
        let first = snap.body.lines().nth(1).unwrap_or_default();
        f.check(page.dom.contains(&dom_text(first)), || {
            format!("{page_path} does not show the tree of {}", snap.name)
        });
        check_timeline(&mut f, &page_path, &page.dom, snap);
        if recordings.join(&snap.name).join("spans.json").is_file() {
            recorded += 1;
            let bars = page.dom.matches(r#"class="recording-bar""#).count();
            f.check(page.dom.contains("Recorded on") && bars > 0, || {
                format!("{page_path}: a recording exists but no waterfall with bars is drawn")
            });
        } else {
            f.check(page.dom.contains("No recording of"), || {
                format!("{page_path}: no recording and no note saying so")
            });
        }
    }
    s.done_with(format!(
        "{} scenario pages, {recorded} with recorded timings",
        snapshots.len()
    ));

    // The quick start shows the transcript and the tree the quick_start scenario pinned.
    let s = step("browser: quick start (transcript and tree) and troubleshooting");
    let quick = visit(
        chromium,
        &url("quickstart.html"),
        "quickstart.html",
        &mut console,
    )
    .await?;
    for line in transcript
        .lines()
        .filter(|l| l.starts_with("$ ") || l.contains("\"state\""))
    {
        f.check(quick.dom.contains(&dom_text(line)), || {
            format!("quickstart.html does not show this transcript line: {line}")
        });
    }
    if let Some(quick_tree) = snapshots.iter().find(|s| s.name == "quick_start") {
        for line in quick_tree.body.lines().filter(|l| !l.trim().is_empty()) {
            f.check(quick.dom.contains(&dom_text(line)), || {
                format!("quickstart.html does not show this line of quick_start.snap: {line}")
            });
        }
    }
    let trouble = visit(
        chromium,
        &url("troubleshooting.html"),
        "troubleshooting.html",
        &mut console,
    )
    .await?;
    for id in [
        "a-run-stays-queued",
        "the-engines-span-is-in-a-trace-of-its-own",
        "no-spans-at-all",
        "how-long-until-a-crashed-engines-runs-fail",
        "a-scenario-failed",
    ] {
        f.check(trouble.dom.contains(&format!(r#"id="{id}""#)), || {
            format!("troubleshooting.html has no section #{id}")
        });
    }
    s.done();

    // The run-state diagram: one arrow per allowed move.
    let s = step("browser: the run-state diagram");
    let lifecycle = visit(
        chromium,
        &url("architecture/lifecycle.html"),
        "architecture/lifecycle.html",
        &mut console,
    )
    .await?;
    // Every move is drawn once: an arrow, or a member of a bundle (each lists its moves).
    let moves: usize = lifecycle
        .dom
        .split(r#"data-moves=""#)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|list| list.split(", ").count())
        .sum();
    f.check(lifecycle.dom.contains(r#"class="metis-states""#) && moves == transitions, || {
        format!("architecture/lifecycle.html: the state diagram draws {moves} moves, State::can_transition allows {transitions}")
    });
    s.done_with(format!("{moves} moves drawn"));

    // Edit links, when the book knows its repository.
    if let Some(repo) = repository {
        let want = format!("https://github.com/{repo}/edit/");
        f.check(
            quick.dom.contains(&want) && quick.dom.contains("book/src/quickstart.md"),
            || {
                format!(
                    "quickstart.html has no edit-this-page link into {want}…/book/src/quickstart.md"
                )
            },
        );
    }

    // Screenshots of the new pages, for a human to look at.
    let s = step(format!("browser: screenshots → {}", shot_dir.display()));
    for (page, png) in [
        ("quickstart.html", "quickstart.png"),
        ("troubleshooting.html", "troubleshooting.png"),
        ("scenarios/run_completes.html", "scenario-run_completes.png"),
        ("architecture/lifecycle.html", "lifecycle.png"),
        ("index.html", "landing.png"),
        (
            "scenarios/engine_killed_mid_run.html",
            "scenario-engine_killed_mid_run.png",
        ),
        ("tracing/spans.html", "span-reference.png"),
    ] {
        let msgs = chromium.screenshot(&url(page), &shot_dir.join(png)).await?;
        console.extend(
            msgs.into_iter()
                .map(|m| (format!("{page} (screenshot)"), m)),
        );
    }
    s.done();

    // Layout: at 1280 px nothing is wider than its column, and every diagram node is labelled.
    let s = step("browser: every page fits its column at 1280 px");
    let mut measured = 0;
    for (_, path) in chapters {
        let page = visit(
            chromium,
            &format!("{}?layout-check", url(path)),
            &format!("{path}?layout-check"),
            &mut console,
        )
        .await?;
        let Some(report) = layout_report(&page.dom) else {
            f.0.push(format!(
                "{path}: no layout report (layout-check.js did not run?)"
            ));
            continue;
        };
        measured += 1;
        for problem in report.lines().filter(|l| !l.trim().is_empty()) {
            f.0.push(format!("{path} at 1280 px: {problem}"));
        }
    }
    s.done_with(format!("{measured} pages measured"));

    // Search.
    let s = step("browser: search for workflow_run");
    let search = visit(
        chromium,
        &url("index.html?search=workflow_run"),
        "index.html?search=…",
        &mut console,
    )
    .await?;
    let results = links_inside(&search.dom, r#"<ul id="mdbook-searchresults""#, "</ul>");
    f.check(!results.is_empty(), || {
        "searching for workflow_run (index.html?search=workflow_run) shows no results".to_owned()
    });
    f.check(results.iter().any(|r| r.starts_with("tracing/")), || {
        format!("no search result for workflow_run is in the tracing chapters: {results:?}")
    });
    s.done_with(format!("{} results", results.len()));

    // The review page of the "reviewing a snapshot change" example, and the chapter linking it.
    let s = step("browser: the snapshot review page (generated/review-demo.html)");
    let review = visit(
        chromium,
        &url("generated/review-demo.html"),
        "generated/review-demo.html",
        &mut console,
    )
    .await?;
    let old_line = run_completes
        .body
        .lines()
        .find(|l| l.contains("create_run") && l.contains("user_id=alice"))
        .unwrap_or_default()
        .to_owned();
    let new_line = old_line.replacen(" user_id=alice", " user=alice", 1);
    // The changed row: the tree drawing in a box of its own (a wrapped line keeps its indent),
    // the words that changed marked on each side, the rest as it was.
    let side = |line: &str, from: &str, to: &str| {
        let text = line.trim_start_matches(['│', '├', '└', '─', ' ']);
        format!(
            r#"<div class="l"><span class="d">{}</span><span class="t">{}</span></div>"#,
            dom_text(&line[..line.len() - text.len()]),
            dom_text(text).replacen(from, to, 1)
        )
    };
    let row = format!(
        r#"<tr class="changed"><td class="old">{}</td><td class="new">{}</td></tr>"#,
        side(&old_line, "user_id=alice", "<del>user_id=alice</del>"),
        side(&new_line, "user=alice", "<ins>user=alice</ins>")
    );
    f.check(!old_line.is_empty() && review.dom.contains(&row), || {
        format!("generated/review-demo.html: no changed row shows `{old_line}` beside `{new_line}`")
    });
    f.check(
        review
            .dom
            .contains("cargo insta accept --snapshot scenarios/snapshots/run_completes.snap"),
        || "generated/review-demo.html: the accept command is missing".to_owned(),
    );
    let chapter = visit(
        chromium,
        &url("harness/reviewing.html"),
        "harness/reviewing.html",
        &mut console,
    )
    .await?;
    f.check(
        chapter.dom.contains("changed  trace#1 › metis-api POST /runs › create_run")
            && chapter.dom.contains(r#"href="../generated/review-demo.html""#),
        || "harness/reviewing.html: the generated pull-request comment or the link to the review page is missing".to_owned(),
    );
    s.done();

    let s = step(format!(
        "browser: screenshot of the tracing page → {}",
        shot.display()
    ));
    let msgs = chromium
        .screenshot(&url("tracing/index.html"), shot)
        .await?;
    console.extend(
        msgs.into_iter()
            .map(|m| ("tracing/index.html (screenshot)".to_owned(), m)),
    );
    s.done();

    for (page, m) in &console {
        f.0.push(format!("console output on {page}: {m}"));
    }
    Ok(f)
}

/// The text of the report `layout-check.js` writes into a page, unescaped.
fn layout_report(dom: &str) -> Option<String> {
    let start = dom.find(r#"id="metis-layout-report""#)?;
    let body = &dom[start..];
    let open = body.find('>')? + 1;
    let close = body.find("</pre>")?;
    Some(
        body[open..close]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Loads `url` and files its console output under `label`.
async fn visit(
    chromium: &Chromium,
    url: &str,
    label: &str,
    console: &mut Vec<(String, String)>,
) -> Result<Page> {
    let page = chromium.dump_dom(url).await?;
    console.extend(page.console.iter().map(|m| (label.to_owned(), m.clone())));
    Ok(page)
}

/// The timeline figure of `snap` is on the page with one bar per span.
fn check_timeline(f: &mut Failures, page: &str, dom: &str, snap: &Snapshot) {
    let open = format!(r#"id="timeline-{}""#, snap.name);
    let Some(start) = dom.find(&open) else {
        f.0.push(format!("{page} has no timeline figure for {}", snap.name));
        return;
    };
    let end = dom[start..]
        .find("</figure>")
        .map_or(dom.len(), |e| start + e);
    let bars = dom[start..end].matches(r#"class="span-bar""#).count();
    let mut spans = 0;
    for t in &snap.traces {
        for r in &t.roots {
            r.walk(0, &mut |_, _| spans += 1);
        }
    }
    f.check(bars == spans, || {
        format!(
            "{page}: the timeline of {} has {bars} span bars, the snapshot has {spans} spans",
            snap.name
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_parsed() {
        let stderr = "[1:1:1124/060035.854024:ERROR:dbus/bus.cc:405] Failed to connect\n\
[12032:12032:1124/060040.006675:INFO:CONSOLE:1] \"canary-console-error\", source: http://x/canary.html (1)\n";
        assert_eq!(
            console_messages(stderr),
            ["\"canary-console-error\", source: http://x/canary.html (1)"]
        );
    }

    #[test]
    fn links_resolve_against_the_page() {
        assert_eq!(
            resolve("tracing/index.html", "../engine/argv.html#x"),
            "engine/argv.html"
        );
        assert_eq!(
            resolve("index.html", "tracing/index.html?highlight=a"),
            "tracing/index.html"
        );
        assert_eq!(
            resolve("tracing/index.html", "configuration.html"),
            "tracing/configuration.html"
        );
        assert_eq!(
            resolve("tracing/index.html", "#heading"),
            "tracing/index.html"
        );
    }

    #[test]
    fn links_inside_an_element() {
        let dom = r#"<nav><a href="a.html">a</a></nav><a href="b.html">b</a>"#;
        assert_eq!(links_inside(dom, "<nav", "</nav>"), ["a.html"]);
    }
}
