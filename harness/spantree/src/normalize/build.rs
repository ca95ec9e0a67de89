//! Building the forest: linking spans to their parents, the stable and causal sibling order,
//! and numbering the placeholders in render order.

use super::*;

// ---------------------------------------------------------------------------------------------
// Tree building, sorting, numbering

/// A redacted span (strings still hold marks) with its sorted children and stable key.
pub(super) struct Draft {
    pub(super) raw: usize,
    pub(super) node: SpanNode,
    pub(super) children: Vec<Draft>,
    pub(super) key: String,
}

pub(super) fn build(raws: &[Raw<'_>], options: &Options) -> Result<SpanForest, TreeError> {
    let mut redactor = Redactor::new(raws, options);
    let mut nodes: Vec<Option<SpanNode>> =
        (0..raws.len()).map(|i| Some(redactor.node(i))).collect();
    if !redactor.unresolved.is_empty() {
        let mut unresolved = std::mem::take(&mut redactor.unresolved);
        unresolved.sort();
        return Err(TreeError::UnresolvedReferences(unresolved));
    }
    redactor.names = nodes.iter().flatten().map(|n| n.name.clone()).collect();
    let redactor = redactor;
    for node in nodes.iter_mut().flatten() {
        node.links
            .sort_by_cached_key(|l| redactor.unnumbered(&render::link_line(l)));
    }

    let mut children: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, r) in raws.iter().enumerate() {
        if let Some(parent) = &r.parent {
            children
                .entry((r.trace.as_str(), parent.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut assembler = Assembler {
        raws,
        redactor: &redactor,
        children,
        nodes,
    };
    let mut traces: Vec<(String, Vec<Draft>)> = group_by_trace(raws)
        .into_iter()
        .map(|(trace, members)| {
            let mut roots: Vec<Draft> = members
                .iter()
                .filter(|&&i| raws[i].parent.is_none())
                .map(|&i| assembler.draft(i))
                .collect();
            roots.sort_by(|a, b| assembler.order(a, b));
            (trace.to_owned(), roots)
        })
        .collect();

    // Every span with a parent hangs below a root unless the parent links form a cycle.
    let mut cycles: Vec<String> = (0..raws.len())
        .filter(|&i| assembler.nodes[i].is_some())
        .map(|i| {
            let parent = raws[i].parent.as_deref().unwrap_or_default();
            format!(
                "{} in trace {}: its parent {parent} is part of a parent cycle",
                raws[i].describe(),
                raws[i].trace
            )
        })
        .collect();
    if !cycles.is_empty() {
        cycles.sort();
        return Err(TreeError::MalformedSpans(cycles));
    }

    let tie = |roots: &[Draft]| roots.iter().map(|r| assembler.tie(r)).min();
    let key = |roots: &[Draft]| {
        roots
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>()
            .join("\u{3}")
    };
    traces.sort_by(|a, b| {
        key(&a.1)
            .cmp(&key(&b.1))
            .then_with(|| tie(&a.1).cmp(&tie(&b.1)))
            .then_with(|| a.0.cmp(&b.0))
    });

    Ok(number(raws, &redactor, traces))
}

/// Builds the sorted subtrees, taking each redacted node out of `nodes` exactly once.
pub(super) struct Assembler<'a, 'r> {
    pub(super) raws: &'a [Raw<'a>],
    pub(super) redactor: &'r Redactor<'a>,
    pub(super) children: HashMap<(&'a str, &'a str), Vec<usize>>,
    pub(super) nodes: Vec<Option<SpanNode>>,
}

impl Assembler<'_, '_> {
    pub(super) fn draft(&mut self, i: usize) -> Draft {
        let node = self.nodes[i].take().expect("each span is placed once");
        let raw = &self.raws[i];
        let kids = self
            .children
            .get(&(raw.trace.as_str(), raw.id.as_str()))
            .cloned()
            .unwrap_or_default();
        let mut kids: Vec<Draft> = kids.into_iter().map(|k| self.draft(k)).collect();
        kids.sort_by(|a, b| self.order(a, b));
        let kids = self.causal(kids);
        let key = stable_key(&node, &kids, self.redactor);
        Draft {
            raw: i,
            node,
            children: kids,
            key,
        }
    }

    /// Sibling order: the stable key; start time and raw id only break ties between siblings
    /// that render identically.
    pub(super) fn order(&self, a: &Draft, b: &Draft) -> std::cmp::Ordering {
        a.key
            .cmp(&b.key)
            .then_with(|| self.tie(a).cmp(&self.tie(b)))
    }

    /// Siblings sorted by [`Self::order`], reordered so that a span that ended before a
    /// sibling of the same process started comes first: each next one is the first (by the
    /// stable key) of those that no remaining sibling is known to precede.
    pub(super) fn causal(&self, mut sorted: Vec<Draft>) -> Vec<Draft> {
        let mut out = Vec::with_capacity(sorted.len());
        while !sorted.is_empty() {
            let next = (0..sorted.len())
                .find(|&k| !sorted.iter().any(|o| self.precedes(o.raw, sorted[k].raw)))
                .expect("'ended before started' has no cycle");
            out.push(sorted.remove(next));
        }
        out
    }

    /// Whether raw span `a` is known to have happened before `b`: both from one process (the
    /// same resource, so one clock), and `a` ended no later than `b` started (and started
    /// earlier, so two zero-length spans at one instant stay concurrent).
    pub(super) fn precedes(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.raws[a], &self.raws[b]);
        a.resource == b.resource
            && a.span.end_time_unix_nano <= b.span.start_time_unix_nano
            && a.span.start_time_unix_nano < b.span.start_time_unix_nano
    }

    pub(super) fn tie(&self, d: &Draft) -> (u64, &str) {
        (
            self.raws[d.raw].span.start_time_unix_nano,
            self.raws[d.raw].id.as_str(),
        )
    }
}

/// The sort key of a span whose children are already sorted (see "Structure" above).
pub(super) fn stable_key(node: &SpanNode, children: &[Draft], redactor: &Redactor<'_>) -> String {
    let mut plain = node.clone();
    map_strings(&mut plain, &mut |s| redactor.unnumbered(s));
    let mut key = format!(
        "{}\u{1}{}\u{1}{}",
        plain.service,
        plain.name,
        render::span_line_rest(&plain)
    );
    for line in render::detail_lines(&plain) {
        key.push('\u{1}');
        key.push_str(&line);
    }
    for child in children {
        key.push('\u{2}');
        key.push_str(&child.key);
    }
    key
}

/// Assigns `trace#N`, `span#N`, `[run#N]`, `[uuid#N]` in render order and resolves every mark.
pub(super) fn number(
    raws: &[Raw<'_>],
    redactor: &Redactor<'_>,
    traces: Vec<(String, Vec<Draft>)>,
) -> SpanForest {
    let mut span_alias: HashMap<usize, String> = HashMap::new();
    let mut trace_alias: HashMap<String, String> = HashMap::new();
    fn alias_spans(d: &Draft, aliases: &mut HashMap<usize, String>) {
        aliases.insert(d.raw, format!("span#{}", aliases.len() + 1));
        d.children.iter().for_each(|c| alias_spans(c, aliases));
    }
    for (n, (trace, roots)) in traces.iter().enumerate() {
        trace_alias.insert(trace.clone(), format!("trace#{}", n + 1));
        roots.iter().for_each(|r| alias_spans(r, &mut span_alias));
    }
    let mut name_counts: HashMap<(&str, &str), usize> = HashMap::new();
    for (r, name) in raws.iter().zip(&redactor.names) {
        *name_counts
            .entry((r.trace.as_str(), name.as_str()))
            .or_default() += 1;
    }
    let mut numbering = Numbering {
        raws,
        redactor,
        span_alias,
        trace_alias,
        name_counts,
        families: HashMap::new(),
        uuids: HashMap::new(),
        instances: HashMap::new(),
        show_alias: HashSet::new(),
    };

    let mut resolved: Vec<(String, Vec<Draft>)> = Vec::new();
    for (trace, mut roots) in traces {
        fn resolve(d: &mut Draft, numbering: &mut Numbering<'_>) {
            let trace = numbering.raws[d.raw].trace.as_str();
            map_strings(&mut d.node, &mut |s| numbering.resolve(s, trace, 0));
            d.children.iter_mut().for_each(|c| resolve(c, numbering));
        }
        roots.iter_mut().for_each(|r| resolve(r, &mut numbering));
        resolved.push((trace, roots));
    }

    fn finish(d: Draft, numbering: &Numbering<'_>) -> SpanNode {
        let mut node = d.node;
        node.alias = numbering.span_alias[&d.raw].clone();
        node.show_alias = numbering.show_alias.contains(&d.raw);
        node.children = d
            .children
            .into_iter()
            .map(|c| finish(c, numbering))
            .collect();
        node
    }
    SpanForest {
        traces: resolved
            .into_iter()
            .map(|(trace, roots)| Trace {
                alias: numbering.trace_alias[&trace].clone(),
                roots: roots.into_iter().map(|r| finish(r, &numbering)).collect(),
            })
            .collect(),
    }
}

/// Numbering state while resolving marks in render order.
pub(super) struct Numbering<'a> {
    pub(super) raws: &'a [Raw<'a>],
    pub(super) redactor: &'a Redactor<'a>,
    pub(super) span_alias: HashMap<usize, String>,
    pub(super) trace_alias: HashMap<String, String>,
    /// (trace, marked span name) → how many spans of that trace carry it.
    pub(super) name_counts: HashMap<(&'a str, &'a str), usize>,
    /// Per id family: UUID → its number.
    pub(super) families: HashMap<usize, HashMap<String, usize>>,
    pub(super) uuids: HashMap<String, usize>,
    /// Per service: instance id → its number.
    pub(super) instances: HashMap<String, HashMap<String, usize>>,
    pub(super) show_alias: HashSet<usize>,
}

impl Numbering<'_> {
    pub(super) fn resolve(&mut self, s: &str, trace: &str, depth: usize) -> String {
        let (raws, redactor) = (self.raws, self.redactor);
        map_marks(s, |index| match &redactor.tokens[index] {
            Token::Family(family, uuid) => {
                let ids = self.families.entry(*family).or_default();
                let next = ids.len() + 1;
                let n = *ids.entry(uuid.clone()).or_insert(next);
                format!("[{}#{n}]", redactor.family_names[*family])
            }
            Token::Uuid(uuid) => {
                let next = self.uuids.len() + 1;
                format!("[uuid#{}]", self.uuids.entry(uuid.clone()).or_insert(next))
            }
            Token::TraceRef(t) => format!("→{}", self.trace_alias[t]),
            Token::Instance(id) => {
                let (service, unordered) = &redactor.instances[id];
                if *unordered {
                    return format!("[{service}#*]");
                }
                let ids = self.instances.entry(service.clone()).or_default();
                let next = ids.len() + 1;
                format!("[{service}#{}]", ids.entry(id.clone()).or_insert(next))
            }
            Token::SpanRef(i) => {
                let target = &raws[*i];
                let alias = self.span_alias[i].clone();
                if depth > 0 {
                    self.show_alias.insert(*i);
                    return format!("→{alias}");
                }
                let name = self.resolve(&redactor.names[*i], &target.trace, depth + 1);
                if target.trace == trace
                    && self.name_counts[&(target.trace.as_str(), redactor.names[*i].as_str())] == 1
                {
                    format!("→{name}")
                } else {
                    self.show_alias.insert(*i);
                    format!("→{name}({alias})")
                }
            }
        })
    }
}
