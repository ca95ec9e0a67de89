//! Internal link check of the built site.
//!
//! Every `href` and `src` in every HTML file under the output folder that is not external
//! (no scheme, not protocol-relative) must name a file that exists — a folder counts when it
//! has an `index.html` — and its `#fragment`, if any, must be an `id` (or `name`) in the
//! target page. A page's `<base href>` is honoured (mdBook's `404.html` has one). Links that
//! JavaScript builds at run time (search results, the sidebar's active marker) are covered by
//! the browser test instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::Regex;

/// What the check saw.
#[derive(Debug, Default)]
pub struct Report {
    /// HTML pages read.
    pub pages: usize,
    /// Internal links checked.
    pub links: usize,
    /// `page: link → why`, one per broken link.
    pub broken: Vec<String>,
}

static URL_ATTR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\s(?:href|src)\s*=\s*"([^"]*)""#).expect("static regex"));
static ID_ATTR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\s(?:id|name)\s*=\s*"([^"]*)""#).expect("static regex"));
static BASE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<base\s+href\s*=\s*"([^"]*)""#).expect("static regex"));
static SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z][A-Za-z0-9+.-]*:").expect("static regex"));

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Joins `rel` onto `dir` lexically; `None` when the result is outside `root`.
fn resolve(root: &Path, dir: &Path, rel: &str) -> Option<PathBuf> {
    let start = if rel.starts_with('/') { root } else { dir };
    let mut out = start.to_owned();
    for c in Path::new(rel.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.starts_with(root).then_some(out)
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            html_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "html") {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks every internal link of the site in `root`, published under the URL path `site`
/// (`/metis/`; `/` at the root): an absolute link or `<base>` under `site` is resolved in
/// `root`, as the published site would serve it (the 404 page links that way).
pub fn check(root: &Path, site: &str) -> Result<Report> {
    let site = format!("/{}/", site.trim_matches('/')).replace("//", "/");
    let in_site = |rel: &str| -> String {
        match rel.strip_prefix(site.as_str()) {
            Some(rest) if site != "/" => format!("/{rest}"),
            _ => rel.to_owned(),
        }
    };
    let mut pages = Vec::new();
    html_files(root, &mut pages)?;
    pages.sort();
    let mut texts = BTreeMap::new();
    for p in &pages {
        texts.insert(
            p.clone(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        );
    }
    let ids: BTreeMap<&PathBuf, BTreeSet<String>> = texts
        .iter()
        .map(|(p, t)| {
            (
                p,
                ID_ATTR
                    .captures_iter(t)
                    .map(|c| html_unescape(&c[1]))
                    .collect(),
            )
        })
        .collect();
    let mut report = Report {
        pages: pages.len(),
        ..Report::default()
    };
    for (page, text) in &texts {
        let rel_page = page
            .strip_prefix(root)
            .unwrap_or(page)
            .display()
            .to_string();
        let dir = match BASE.captures(text) {
            Some(b) => resolve(root, page.parent().unwrap_or(root), &in_site(&b[1]))
                .unwrap_or_else(|| root.to_owned()),
            None => page.parent().unwrap_or(root).to_owned(),
        };
        for c in URL_ATTR.captures_iter(text) {
            let link = html_unescape(&c[1]);
            if link.is_empty() || link.starts_with("//") || SCHEME.is_match(&link) {
                continue;
            }
            report.links += 1;
            let (path_part, fragment) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let path_part = path_part.split('?').next().unwrap_or_default();
            let target = if path_part.is_empty() {
                Some(page.clone())
            } else {
                resolve(root, &dir, &in_site(&percent_decode(path_part)))
                    .map(|t| if t.is_dir() { t.join("index.html") } else { t })
            };
            let Some(target) = target.filter(|t| t.is_file()) else {
                report
                    .broken
                    .push(format!("{rel_page}: `{link}` → no such file"));
                continue;
            };
            if let Some(f) = fragment.filter(|f| !f.is_empty())
                && let Some(target_ids) = ids.get(&target)
                && !target_ids.contains(&percent_decode(f))
            {
                report.broken.push(format!(
                    "{rel_page}: `{link}` → no id `{f}` in {}",
                    target.strip_prefix(root).unwrap_or(&target).display()
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        dir
    }

    #[test]
    fn good_links_pass() {
        let d = site(&[
            (
                "index.html",
                r##"<a href="a/b.html#x">b</a> <a href="https://e.org">e</a> <img src="img/p%20q.png"> <a href="#top">t</a><h1 id="top">"##,
            ),
            (
                "a/b.html",
                r#"<h2 id="x"></h2><a href="../index.html">up</a><a href="../a/">dir</a><a href="c.html?search=y">c</a>"#,
            ),
            ("a/index.html", ""),
            ("a/c.html", ""),
            ("img/p q.png", ""),
        ]);
        let r = check(d.path(), "/").unwrap();
        assert!(r.broken.is_empty(), "{:?}", r.broken);
        assert_eq!((r.pages, r.links), (4, 6));
    }

    #[test]
    fn missing_files_and_fragments_are_reported() {
        let d = site(&[
            (
                "index.html",
                r##"<a href="gone.html">g</a><a href="b.html#nope">n</a><a href="../../etc/passwd">x</a>"##,
            ),
            ("b.html", r#"<h2 id="yes"></h2>"#),
        ]);
        let r = check(d.path(), "/").unwrap();
        assert_eq!(r.broken.len(), 3, "{:?}", r.broken);
        assert!(r.broken[0].contains("gone.html"), "{:?}", r.broken);
        assert!(
            r.broken[1].contains("no id `nope` in b.html"),
            "{:?}",
            r.broken
        );
    }

    #[test]
    fn base_href_is_honoured() {
        let d = site(&[
            (
                "sub/404.html",
                r#"<base href="/"><a href="index.html">home</a>"#,
            ),
            ("index.html", ""),
        ]);
        assert!(check(d.path(), "/").unwrap().broken.is_empty());
    }

    #[test]
    fn links_under_the_site_url_resolve_in_the_site() {
        let d = site(&[
            (
                "404.html",
                r#"<base href="/metis/"><a href="print.html">print</a><a href="/metis/a.html">a</a>"#,
            ),
            ("index.html", ""),
            ("print.html", ""),
            ("a.html", ""),
        ]);
        let r = check(d.path(), "/metis/").unwrap();
        assert!(r.broken.is_empty(), "{:?}", r.broken);
        // Served at the root instead, the same links would be broken (the base, the links).
        assert_eq!(check(d.path(), "/").unwrap().broken.len(), 3);
    }
}
