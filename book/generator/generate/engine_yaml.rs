//! The engine.yaml key reference, generated from the serde types that parse it.
//!
//! `crates/common/src/config.rs` is parsed with `syn`; starting at `FullEngineConfig`, every
//! field of every struct it reaches becomes a row: the YAML key (after `rename_all` /
//! `rename`), its type, whether it is required or its default (evaluated from
//! `#[serde(default = "fn")]` bodies and `impl Default` blocks), and its doc comment. Enums
//! list their accepted values with their docs; the internally tagged `Validation` becomes one
//! row for `type` and one per variant field. The `*_PLACEHOLDERS` constants are listed too.
//!
//! So a new field shows up in the reference by construction, and `check` fails until the
//! regenerated page is committed. A serde attribute this generator does not understand
//! (`flatten`, `skip`, an unknown `deserialize_with`, …) is an error rather than a guess.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use syn::{
    Attribute, Expr, Fields, GenericArgument, Item, ItemEnum, ItemStruct, Lit, PathArguments, Stmt,
    Type,
};

use super::{cell, preamble};
use crate::Workspace;

/// The file that defines the format, relative to the workspace root.
pub const SOURCE: &str = "crates/common/src/config.rs";
/// The root type.
pub const ROOT: &str = "FullEngineConfig";

/// `deserialize_with` functions this generator knows, and what they mean for the reader.
const DESERIALIZERS: [(&str, &str); 2] = [
    ("string_like", " (a number is read as text)"),
    ("strings_like", " (numbers are read as text)"),
];

/// `#[serde(...)]` on a container, field or variant.
#[derive(Default, Debug)]
struct Serde {
    rename: Option<String>,
    rename_all: Option<String>,
    tag: Option<String>,
    deny_unknown_fields: bool,
    /// `Some(None)`: `default`; `Some(Some(f))`: `default = "f"`.
    default: Option<Option<String>>,
    deserialize_with: Option<String>,
}

fn serde_attrs(attrs: &[Attribute], what: &str) -> Result<Serde> {
    let mut s = Serde::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let value = |meta: &syn::meta::ParseNestedMeta<'_>| -> syn::Result<String> {
                Ok(meta.value()?.parse::<syn::LitStr>()?.value())
            };
            match key.as_str() {
                "rename" => s.rename = Some(value(&meta)?),
                "rename_all" => s.rename_all = Some(value(&meta)?),
                "tag" => s.tag = Some(value(&meta)?),
                "deny_unknown_fields" => s.deny_unknown_fields = true,
                "default" => {
                    s.default = Some(if meta.input.peek(syn::Token![=]) {
                        Some(value(&meta)?)
                    } else {
                        None
                    });
                }
                "deserialize_with" => s.deserialize_with = Some(value(&meta)?),
                "skip_serializing_if" => {
                    value(&meta)?;
                }
                other => {
                    return Err(meta.error(format!(
                        "serde attribute `{other}` on {what} is not understood by the book's engine.yaml generator; teach book/generator/generate/engine_yaml.rs"
                    )));
                }
            }
            Ok(())
        })
        .with_context(|| format!("reading #[serde] of {what}"))?;
    }
    Ok(s)
}

pub(super) fn docs(attrs: &[Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.value().trim().to_owned()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rename(ident: &str, rule: Option<&str>) -> Result<String> {
    Ok(match rule {
        None => ident.to_owned(),
        Some("lowercase") => ident.to_ascii_lowercase(),
        Some("camelCase") => {
            let mut out = String::new();
            let mut upper = false;
            for c in ident.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        }
        Some(other) => bail!("rename_all = \"{other}\" is not understood by the generator"),
    })
}

/// Renders a simple expression back to source-like text (literals, paths, calls, methods).
fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => format!("{:?}", s.value()),
            Lit::Int(i) => i.base10_digits().to_owned(),
            Lit::Float(f) => f.base10_digits().to_owned(),
            Lit::Bool(b) => b.value.to_string(),
            _ => "…".to_owned(),
        },
        Expr::Path(p) => p
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::"),
        Expr::Call(c) => format!(
            "{}({})",
            expr_text(&c.func),
            c.args.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        Expr::MethodCall(m) => format!(
            "{}.{}({})",
            expr_text(&m.receiver),
            m.method,
            m.args.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        _ => "…".to_owned(),
    }
}

/// The value a literal-returning function yields, as YAML would spell it.
fn literal_value(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Some(s.value()),
            Lit::Int(i) => Some(i.base10_digits().to_owned()),
            Lit::Float(f) => Some(f.base10_digits().to_owned()),
            Lit::Bool(b) => Some(b.value.to_string()),
            _ => None,
        },
        Expr::MethodCall(m)
            if ["to_owned", "to_string", "into"].contains(&m.method.to_string().as_str()) =>
        {
            literal_value(&m.receiver)
        }
        _ => None,
    }
}

struct Model {
    structs: BTreeMap<String, ItemStruct>,
    enums: BTreeMap<String, ItemEnum>,
    /// fn name → its tail expression.
    fns: BTreeMap<String, Expr>,
    /// struct → field → expression in its `impl Default`.
    impl_defaults: BTreeMap<String, BTreeMap<String, Expr>>,
    consts: BTreeMap<String, Vec<String>>,
    /// `const NAME: T = <literal>;`
    scalars: BTreeMap<String, String>,
}

fn tail(block: &syn::Block) -> Option<&Expr> {
    match block.stmts.last()? {
        Stmt::Expr(e, None) => Some(e),
        _ => None,
    }
}

impl Model {
    /// A literal, a constant of this file (`DEFAULT_X`), or a list constant turned into a
    /// collection (`DEFAULT_XS.iter().map(..).collect()`), as text.
    fn value_of(&self, e: &Expr) -> Option<String> {
        if let Some(v) = literal_value(e) {
            return Some(v);
        }
        match e {
            Expr::Path(p) => {
                let name = p.path.segments.last()?.ident.to_string();
                self.scalars.get(&name).cloned().or_else(|| {
                    self.consts
                        .get(&name)
                        .map(|v| format!("[{}]", v.join(", ")))
                })
            }
            Expr::MethodCall(m) => self.value_of(&m.receiver),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Self> {
        let file = syn::parse_file(text).context("parsing with syn")?;
        let mut m = Model {
            structs: BTreeMap::new(),
            enums: BTreeMap::new(),
            fns: BTreeMap::new(),
            impl_defaults: BTreeMap::new(),
            consts: BTreeMap::new(),
            scalars: BTreeMap::new(),
        };
        for item in file.items {
            match item {
                Item::Struct(s) => {
                    m.structs.insert(s.ident.to_string(), s);
                }
                Item::Enum(e) => {
                    m.enums.insert(e.ident.to_string(), e);
                }
                Item::Fn(f) => {
                    if let Some(e) = tail(&f.block) {
                        m.fns.insert(f.sig.ident.to_string(), e.clone());
                    }
                }
                Item::Const(c) => {
                    if let Expr::Array(a) = &*c.expr {
                        let values = a.elems.iter().filter_map(literal_value).collect();
                        m.consts.insert(c.ident.to_string(), values);
                    } else if let Some(v) = literal_value(&c.expr) {
                        m.scalars.insert(c.ident.to_string(), v);
                    }
                }
                Item::Impl(i) => {
                    let is_default = i
                        .trait_
                        .as_ref()
                        .and_then(|(_, p, _)| p.segments.last())
                        .is_some_and(|s| s.ident == "Default");
                    let Type::Path(tp) = &*i.self_ty else {
                        continue;
                    };
                    let Some(name) = tp.path.segments.last().map(|s| s.ident.to_string()) else {
                        continue;
                    };
                    if !is_default {
                        continue;
                    }
                    for it in &i.items {
                        if let syn::ImplItem::Fn(f) = it
                            && let Some(Expr::Struct(lit)) = tail(&f.block)
                        {
                            let fields = lit
                                .fields
                                .iter()
                                .filter_map(|fv| match &fv.member {
                                    syn::Member::Named(id) => {
                                        Some((id.to_string(), fv.expr.clone()))
                                    }
                                    syn::Member::Unnamed(_) => None,
                                })
                                .collect();
                            m.impl_defaults.insert(name.clone(), fields);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

/// What a field's type is, for the table.
struct TypeInfo {
    text: String,
    optional: bool,
    list: bool,
    /// The struct or enum of this file that the type is (or is a list of).
    local: Option<String>,
}

fn generic_arg(seg: &syn::PathSegment) -> Option<&Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// `` `a` \| `b` `` for an enum of unit variants, after renaming.
fn enum_values(e: &ItemEnum) -> Result<Vec<(String, String, bool)>> {
    let container = serde_attrs(&e.attrs, &format!("enum {}", e.ident))?;
    e.variants
        .iter()
        .map(|v| {
            let s = serde_attrs(&v.attrs, &format!("variant {}::{}", e.ident, v.ident))?;
            let name = match s.rename {
                Some(r) => r,
                None => rename(&v.ident.to_string(), container.rename_all.as_deref())?,
            };
            let is_default = v.attrs.iter().any(|a| a.path().is_ident("default"));
            Ok((name, docs(&v.attrs), is_default))
        })
        .collect()
}

/// `string` → `strings`, `mapping with `type`` → `mappings with `type``.
fn plural(text: &str) -> String {
    match text {
        "any value" => "values of any type".to_owned(),
        t if t.contains('`') && !t.starts_with("mapping") => format!("one of {t}"),
        t => match t.split_once(' ') {
            Some((noun, rest)) => format!("{noun}s {rest}"),
            None => format!("{t}s"),
        },
    }
}

fn type_info(m: &Model, ty: &Type) -> Result<TypeInfo> {
    let Type::Path(tp) = ty else {
        bail!("a field type that is not a path")
    };
    let seg = tp.path.segments.last().context("an empty type path")?;
    let name = seg.ident.to_string();
    let inner = |what| generic_arg(seg).with_context(|| format!("{what} without a type argument"));
    Ok(match name.as_str() {
        "Option" => TypeInfo {
            optional: true,
            ..type_info(m, inner("Option")?)?
        },
        "BTreeMap" | "HashMap" => {
            let value = match &seg.arguments {
                PathArguments::AngleBracketed(a) => a.args.iter().rev().find_map(|g| match g {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                }),
                _ => None,
            }
            .context("a map without a value type")?;
            let t = type_info(m, value)?;
            TypeInfo {
                text: format!("mapping of names to {}", plural(&t.text)),
                optional: false,
                list: false,
                local: t.local,
            }
        }
        "Vec" => {
            let t = type_info(m, inner("Vec")?)?;
            TypeInfo {
                text: format!("list of {}", plural(&t.text)),
                optional: false,
                list: true,
                local: t.local,
            }
        }
        _ => {
            let (text, local) = match name.as_str() {
                "String" => ("string".to_owned(), None),
                "PathBuf" => ("path".to_owned(), None),
                "usize" | "u64" | "u32" | "u16" | "i64" | "i32" => ("integer".to_owned(), None),
                "f64" | "f32" => ("number".to_owned(), None),
                "bool" => ("boolean".to_owned(), None),
                "Value" => ("any value".to_owned(), None),
                other if m.structs.contains_key(other) => {
                    ("mapping".to_owned(), Some(name.clone()))
                }
                other if m.enums.contains_key(other) => {
                    let e = &m.enums[other];
                    let tagged = serde_attrs(&e.attrs, other)?.tag;
                    let text = match tagged {
                        Some(tag) => format!("mapping with `{tag}`"),
                        None => enum_values(e)?
                            .iter()
                            .map(|(v, _, _)| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(" | "),
                    };
                    (text, Some(name.clone()))
                }
                other => bail!("type `{other}` is not understood by the generator"),
            };
            TypeInfo {
                text,
                optional: false,
                list: false,
                local,
            }
        }
    })
}

/// One table row.
struct Row {
    key: String,
    ty: String,
    default: String,
    meaning: String,
}

/// The keys of one mapping: a heading and a table.
struct Section {
    /// Dotted path of the mapping, e.g. `engine.engineParams`; empty for the top level.
    path: String,
    rows: Vec<Row>,
}

/// A nested mapping to describe after the current one.
enum Child {
    Struct(String, String, bool),
    Tagged(String, String, String),
}

struct Walker<'m> {
    m: &'m Model,
    sections: Vec<Section>,
    accepts_unknown: Vec<String>,
}

impl Walker<'_> {
    /// The section of struct `name` at `prefix` (`engine.`), then its nested mappings;
    /// `section_optional`: the whole mapping may be left out (its `impl Default` applies).
    fn walk_struct(&mut self, name: &str, prefix: &str, section_optional: bool) -> Result<()> {
        let s = self
            .m
            .structs
            .get(name)
            .with_context(|| format!("no struct `{name}` in {SOURCE}"))?;
        let container = serde_attrs(&s.attrs, &format!("struct {name}"))?;
        if !container.deny_unknown_fields {
            self.accepts_unknown
                .push(prefix.trim_end_matches('.').to_owned());
        }
        let Fields::Named(fields) = &s.fields else {
            bail!("struct `{name}` has no named fields")
        };
        let index = self.sections.len();
        self.sections.push(Section {
            path: prefix.trim_end_matches('.').to_owned(),
            rows: Vec::new(),
        });
        let mut children = Vec::new();
        for f in &fields.named {
            let ident = f
                .ident
                .as_ref()
                .context("a named field without a name")?
                .to_string();
            let what = format!("field {name}.{ident}");
            let attrs = serde_attrs(&f.attrs, &what)?;
            let key = match &attrs.rename {
                Some(r) => r.clone(),
                None => rename(&ident, container.rename_all.as_deref())?,
            };
            let full = format!("{prefix}{key}");
            let mut ty = type_info(self.m, &f.ty).with_context(|| what.clone())?;
            if let Some(d) = &attrs.deserialize_with {
                let (_, note) = DESERIALIZERS
                    .iter()
                    .find(|(n, _)| n == d)
                    .with_context(|| {
                        format!(
                            "{what}: deserialize_with = \"{d}\" is not understood by the generator"
                        )
                    })?;
                ty.text.push_str(note);
            }
            let default = self.default_text(name, &ident, &attrs, &ty, section_optional)?;
            let mut meaning = docs(&f.attrs);
            if let Some(local) = &ty.local
                && let Some(e) = self.m.enums.get(local)
                && serde_attrs(&e.attrs, local)?.tag.is_none()
            {
                for (v, doc, _) in enum_values(e)? {
                    let _ = write!(meaning, " `{v}`: {doc}");
                }
            }
            let mut shown = ty.text.clone();
            if let Some(local) = &ty.local {
                let child = if ty.list {
                    format!("{full}[]")
                } else {
                    full.clone()
                };
                if self.m.structs.contains_key(local) {
                    let optional = attrs.default.is_some() || ty.optional;
                    children.push(Child::Struct(
                        local.clone(),
                        child.clone(),
                        optional && !ty.list,
                    ));
                    let _ = write!(shown, ", keys under `{child}`");
                } else if let Some(tag) = serde_attrs(&self.m.enums[local].attrs, local)?.tag {
                    children.push(Child::Tagged(local.clone(), child.clone(), tag));
                    let _ = write!(shown, ", keys under `{child}`");
                }
            }
            self.sections[index].rows.push(Row {
                key,
                ty: shown,
                default,
                meaning,
            });
        }
        for child in children {
            match child {
                Child::Struct(local, path, optional) => {
                    self.walk_struct(&local, &format!("{path}."), optional)?;
                }
                Child::Tagged(local, path, tag) => {
                    self.walk_tagged(&local, &format!("{path}."), &tag)?;
                }
            }
        }
        Ok(())
    }

    fn walk_tagged(&mut self, name: &str, prefix: &str, tag: &str) -> Result<()> {
        let e = &self.m.enums[name];
        let container = serde_attrs(&e.attrs, &format!("enum {name}"))?;
        let values = enum_values(e)?;
        let index = self.sections.len();
        self.sections.push(Section {
            path: prefix.trim_end_matches('.').to_owned(),
            rows: Vec::new(),
        });
        self.sections[index].rows.push(Row {
            key: tag.to_owned(),
            ty: values
                .iter()
                .map(|(v, _, _)| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(" | "),
            default: "**required**".to_owned(),
            meaning: values
                .iter()
                .map(|(v, d, _)| format!("`{v}`: {d}"))
                .collect::<Vec<_>>()
                .join(" "),
        });
        if !container.deny_unknown_fields {
            self.accepts_unknown
                .push(prefix.trim_end_matches('.').to_owned());
        }
        for (variant, (value, _, _)) in e.variants.iter().zip(&values) {
            let Fields::Named(fields) = &variant.fields else {
                continue;
            };
            for f in &fields.named {
                let ident = f.ident.as_ref().context("unnamed field")?.to_string();
                let what = format!("field {name}::{}.{ident}", variant.ident);
                let attrs = serde_attrs(&f.attrs, &what)?;
                let key = attrs.rename.clone().unwrap_or(ident.clone());
                let ty = type_info(self.m, &f.ty).with_context(|| what.clone())?;
                let default = self.default_text(name, &ident, &attrs, &ty, false)?;
                self.sections[index].rows.push(Row {
                    key,
                    ty: ty.text,
                    default,
                    meaning: format!("(`{tag}: {value}`) {}", docs(&f.attrs)),
                });
            }
        }
        Ok(())
    }

    fn default_text(
        &self,
        owner: &str,
        ident: &str,
        attrs: &Serde,
        ty: &TypeInfo,
        section_optional: bool,
    ) -> Result<String> {
        Ok(match &attrs.default {
            Some(Some(f)) => {
                let body = self
                    .m
                    .fns
                    .get(f)
                    .with_context(|| format!("default function `{f}` not found in {SOURCE}"))?;
                let v = self.m.value_of(body).with_context(|| {
                    format!("default function `{f}` does not return a literal or a constant")
                })?;
                format!("`{v}`")
            }
            Some(None) if ty.optional => "unset".to_owned(),
            Some(None) if ty.list => "`[]`".to_owned(),
            Some(None) => match ty.text.as_str() {
                "boolean" => "`false`".to_owned(),
                "integer" | "number" => "`0`".to_owned(),
                "string" => "`\"\"`".to_owned(),
                "mapping" => "the defaults of its keys".to_owned(),
                t if t.starts_with("mapping of names") => "`{}`".to_owned(),
                _ => {
                    let local = ty.local.as_deref().unwrap_or_default();
                    let e = self
                        .m
                        .enums
                        .get(local)
                        .with_context(|| format!("no default known for {owner}.{ident}"))?;
                    let (v, _, _) = enum_values(e)?
                        .into_iter()
                        .find(|(_, _, d)| *d)
                        .with_context(|| format!("enum {local} has no #[default] variant"))?;
                    format!("`{v}`")
                }
            },
            None if ty.optional => "unset".to_owned(),
            None => match self.m.impl_defaults.get(owner).and_then(|f| f.get(ident)) {
                Some(e) if section_optional => format!(
                    "**required** when the section is written; without the section: `{}`",
                    expr_text(e)
                ),
                _ => "**required**".to_owned(),
            },
        })
    }
}

/// Generates `engine-yaml.md` from the source text of `config.rs`.
pub fn generate_from(text: &str) -> Result<String> {
    let m = Model::parse(text)?;
    let mut w = Walker {
        m: &m,
        sections: Vec::new(),
        accepts_unknown: Vec::new(),
    };
    w.walk_struct(ROOT, "", false)?;
    let mut out = preamble("engine_yaml", SOURCE);
    for section in &w.sections {
        if section.path.is_empty() {
            out.push_str("\n### Top level\n");
        } else {
            let _ = writeln!(out, "\n### `{}`", section.path);
        }
        out.push_str("\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
        for r in &section.rows {
            let cells = [
                format!("`{}`", r.key),
                r.ty.clone(),
                r.default.clone(),
                r.meaning.clone(),
            ];
            let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    out.push('\n');
    if w.accepts_unknown.is_empty() {
        out.push_str("Every mapping rejects unknown keys, so a typo is an error naming the key.\n");
    } else {
        let _ = writeln!(
            out,
            "Unknown keys are rejected everywhere except in: {}.",
            w.accepts_unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (konst, what) in [
        ("COMMAND_PLACEHOLDERS", "`engine.commandTemplate`"),
        ("WORKDIR_PLACEHOLDERS", "`runs.workdir.pattern`"),
    ] {
        let values = m
            .consts
            .get(konst)
            .with_context(|| format!("no const {konst} in {SOURCE}"))?;
        let _ = writeln!(
            out,
            "\nPlaceholders of {what}: {}.",
            values
                .iter()
                .map(|v| format!("`{{{v}}}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// Generates `engine-yaml.md`.
pub fn generate(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let path = ws.root.join(SOURCE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((generate_from(&text)?, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> String {
        generate(&Workspace::locate()).unwrap().0
    }

    /// Every serde field name in config.rs, found without syn: a cross-check of the walker.
    fn field_idents(text: &str) -> Vec<String> {
        let re = regex::Regex::new(r"(?m)^\s+pub ([a-z_]+):").unwrap();
        re.captures_iter(text).map(|c| c[1].to_owned()).collect()
    }

    #[test]
    fn every_field_of_the_rust_types_is_in_the_reference() {
        let ws = Workspace::locate();
        let text = std::fs::read_to_string(ws.root.join(SOURCE)).unwrap();
        let md = generated();
        // ConfigError's fields are not YAML keys.
        let skip = ["path", "source", "key", "message"];
        for ident in field_idents(&text) {
            if skip.contains(&ident.as_str()) {
                continue;
            }
            let camel = rename(&ident, Some("camelCase")).unwrap();
            let key = if ident == "kind" {
                "type".to_owned()
            } else {
                camel
            };
            assert!(
                md.contains(&format!("{key}` |")),
                "field `{ident}` (key `{key}`) is missing from the reference:\n{md}"
            );
        }
    }

    /// The table of the section with heading `heading`.
    fn section<'a>(md: &'a str, heading: &str) -> &'a str {
        let start = md
            .find(&format!("### {heading}\n"))
            .unwrap_or_else(|| panic!("no section {heading} in:\n{md}"));
        let rest = &md[start + 4..];
        &rest[..rest.find("\n### ").unwrap_or(rest.len())]
    }

    #[track_caller]
    fn check_rows(md: &str, heading: &str, rows: &[&str]) {
        let table = section(md, heading);
        for row in rows {
            assert!(
                table.contains(row),
                "missing `{row}` in section {heading}:\n{table}"
            );
        }
    }

    #[test]
    fn keys_types_and_defaults_come_from_the_types() {
        let md = generated();
        check_rows(
            &md,
            "Top level",
            &["| `engine` | mapping, keys under `engine` | **required** |"],
        );
        check_rows(
            &md,
            "`engine`",
            &[
                "| `name` | string | **required** | Engine name (`workflow_engine`). |",
                "| `version` | string (a number is read as text) | **required** |",
                "| `maxConcurrentRuns` | integer | `4` |",
                "| `engineParams` | mapping, keys under `engine.engineParams` | the defaults of its keys |",
                "| `deniedParams` | list of mappings, keys under `engine.deniedParams[]` | `[]` |",
            ],
        );
        check_rows(
            &md,
            "`engine.engineParams`",
            &["| `unknownParamsBehavior` | `reject` \\| `pass` \\| `strip` | `reject` |"],
        );
        check_rows(
            &md,
            "`engine.engineParams.validatedParams[]`",
            &["| `type` | `string` \\| `int` \\| `float` \\| `bool` \\| `list` | **required** |"],
        );
        check_rows(
            &md,
            "`engine.engineParams.validatedParams[].validate[]`",
            &[
                "| `type` | `enum` \\| `regex` \\| `range` | **required** |",
                "| `min` | number | unset | (`type: range`)",
            ],
        );
        check_rows(
            &md,
            "`engine.deniedParams[]`",
            &["| `type` | `exact` \\| `regex` | `exact` |"],
        );
        check_rows(
            &md,
            "`runs`",
            &["| `cancelGracePeriodMs` | integer | `5000` |"],
        );
        check_rows(
            &md,
            "`runs.workdir`",
            &[
                "| `pattern` | string | `{user_id}/{run_id}` |",
                "| `base` | path | **required** when the section is written; without the section: `std::env::temp_dir().join(\"metis-runs\")` |",
            ],
        );
        assert!(md.contains("`{workflow_path}`"), "{md}");
        assert!(md.contains("Every mapping rejects unknown keys"), "{md}");
    }

    #[test]
    fn an_unknown_serde_attribute_is_an_error_not_a_guess() {
        let src = "pub struct FullEngineConfig { #[serde(flatten)] pub x: String }\n";
        let err = format!("{:#}", generate_from(src).unwrap_err());
        assert!(
            err.contains("flatten") && err.contains("FullEngineConfig.x"),
            "{err}"
        );
    }

    #[test]
    fn a_new_field_appears_in_the_reference() {
        let ws = Workspace::locate();
        let text = std::fs::read_to_string(ws.root.join(SOURCE)).unwrap();
        let changed = text.replace(
            "pub struct RunsConfig {",
            "pub struct RunsConfig {\n    /// Keep finished workdirs.\n    #[serde(default)]\n    pub keep_workdirs: bool,",
        );
        let md = generate_from(&changed).unwrap();
        check_rows(
            &md,
            "`runs`",
            &["| `keepWorkdirs` | boolean | `false` | Keep finished workdirs. |"],
        );
    }
}
