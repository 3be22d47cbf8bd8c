//! A crate's module graph, read from its sources, and the cycles in it.
//!
//! From the crate root, every `mod name;` is followed to its file; every path in
//! code that starts with `crate::`, `super::`, `self::` or the name of a child
//! module (grouped `use a::{b, c::d}` included) is resolved to the deepest module
//! file it names. A file naming another module is an edge between the two
//! modules where their paths part: `vm::apt` naming `test` is `vm → test` among
//! the crate root's modules, `vm::apt` naming `vm::boot` is `apt → boot` among
//! `vm`'s. Cycles are looked for among siblings. A child naming its parent (an
//! `impl super::Type` in a file of its own, a type the crate root defines for
//! its modules) is not one: the child is part of its parent, which may name it.
//!
//! Comments and string literals never count: the sources are read as Rust tokens.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    str::FromStr as _,
};

use anyhow::{Context as _, bail};
use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// A module by its path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// The edges among one parent's children: (from, to) → where it was seen.
type Edges = BTreeMap<(String, String), String>;

/// The modules of one crate and which names which.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every module with a file of its own, and that file.
    files: BTreeMap<ModPath, PathBuf>,
    /// (from, to) between module files, with where it was seen (`file: path`).
    uses: BTreeMap<(ModPath, ModPath), String>,
}

/// Where the files of a module's children are: `dir/` for a `mod.rs`, `lib.rs`
/// or `main.rs` (and any crate root), `dir/<stem>/` for `stem.rs`.
fn children_dir(file: &Path, is_root: bool) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if is_root || stem == "mod" {
        dir
    } else {
        dir.join(stem)
    }
}

fn tokens_of(file: &Path) -> anyhow::Result<Vec<TokenTree>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let stream = TokenStream::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not Rust tokens: {e}", file.display()))?;
    Ok(stream.into_iter().collect())
}

fn ident(token: Option<&TokenTree>) -> Option<String> {
    match token {
        Some(TokenTree::Ident(i)) => Some(i.to_string()),
        _ => None,
    }
}

fn is_punct(token: Option<&TokenTree>, c: char) -> bool {
    matches!(token, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// Whether `tokens[i..]` starts with `::`.
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(tokens.get(i + 1), ':')
}

/// The module declarations (`mod name;`, and `mod name { … }` inline) in
/// `tokens`, with the inline ones' own declarations.
fn declarations(tokens: &[TokenTree], module: &ModPath, out: &mut Vec<(ModPath, bool)>) {
    let mut i = 0;
    while i < tokens.len() {
        if ident(tokens.get(i)).as_deref() == Some("mod")
            && let Some(name) = ident(tokens.get(i + 1))
        {
            let mut path = module.clone();
            path.push(name);
            match tokens.get(i + 2) {
                Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    declarations(&inner, &path, out);
                    out.push((path, false));
                }
                _ if is_punct(tokens.get(i + 2), ';') => out.push((path, true)),
                _ => {}
            }
            i += 3;
            continue;
        }
        i += 1;
    }
}

/// One path as written: its segments, then (for `use a::{b, c}`) its branches.
#[derive(Debug, Default)]
struct WrittenPath {
    segments: Vec<String>,
    branches: Vec<WrittenPath>,
}

impl WrittenPath {
    /// Every full path this stands for (`a::{b, c::d}` → `a::b`, `a::c::d`).
    fn flatten(&self, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut full = prefix.to_vec();
        full.extend(self.segments.iter().cloned());
        if self.branches.is_empty() {
            out.push(full);
        } else {
            for branch in &self.branches {
                branch.flatten(&full, out);
            }
        }
    }
}

/// Reads the path starting at `tokens[i]` (an identifier); returns it and the
/// index after it.
fn read_path(tokens: &[TokenTree], mut i: usize) -> (WrittenPath, usize) {
    let mut path = WrittenPath::default();
    while let Some(segment) = ident(tokens.get(i)) {
        path.segments.push(segment);
        i += 1;
        if !is_path_sep(tokens, i) {
            return (path, i);
        }
        i += 2;
        if let Some(TokenTree::Group(g)) = tokens.get(i)
            && g.delimiter() == Delimiter::Brace
        {
            let inner: Vec<TokenTree> = g.stream().into_iter().collect();
            path.branches = inner
                .split(|t| is_punct(Some(t), ','))
                .filter_map(|item| {
                    ident(item.first())?;
                    Some(read_path(item, 0).0)
                })
                .collect();
            return (path, i + 1);
        }
    }
    (path, i)
}

impl Graph {
    /// Reads the crate whose root file is `root` (`src/lib.rs`, `src/main.rs`,
    /// `tests/kernel/main.rs`, …).
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let mut graph = Self::default();
        // Modules declared in code, file or inline, for resolving paths.
        let mut known: BTreeSet<ModPath> = BTreeSet::from([Vec::new()]);
        let mut pending = vec![(Vec::new(), root.to_path_buf())];
        let mut parsed = Vec::new();
        while let Some((module, file)) = pending.pop() {
            let tokens = tokens_of(&file)?;
            let mut declared = Vec::new();
            declarations(&tokens, &module, &mut declared);
            let dir = children_dir(&file, module.is_empty());
            for (path, has_file) in declared {
                if has_file {
                    // A file module's name is the last segment; inline modules
                    // between it and `module` are directories too.
                    let relative = &path[module.len()..];
                    let mut base = dir.clone();
                    for segment in &relative[..relative.len() - 1] {
                        base.push(segment);
                    }
                    let name = &relative[relative.len() - 1];
                    let flat = base.join(format!("{name}.rs"));
                    let nested = base.join(name).join("mod.rs");
                    let child_file = if flat.exists() {
                        flat
                    } else if nested.exists() {
                        nested
                    } else {
                        bail!(
                            "{}: mod {name}: neither {} nor {}",
                            file.display(),
                            flat.display(),
                            nested.display()
                        );
                    };
                    pending.push((path.clone(), child_file));
                }
                known.insert(path);
            }
            graph.files.insert(module.clone(), file.clone());
            parsed.push((module, file, tokens));
        }
        for (module, file, tokens) in &parsed {
            graph.collect_uses(tokens, module, module, file, &known);
        }
        Ok(graph)
    }

    /// The module with a file of its own that holds `path` (inline modules
    /// belong to their file).
    fn file_module(&self, path: &[String]) -> ModPath {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.files.contains_key(p))
            .unwrap_or_default()
    }

    /// Records the modules named in `tokens`, code of `file`, inside `module`
    /// (which may be an inline module of `file_module`).
    fn collect_uses(
        &mut self,
        tokens: &[TokenTree],
        module: &ModPath,
        file_module: &ModPath,
        file: &Path,
        known: &BTreeSet<ModPath>,
    ) {
        let mut i = 0;
        while i < tokens.len() {
            // An inline module: its paths are relative to it.
            if ident(tokens.get(i)).as_deref() == Some("mod")
                && let (Some(name), Some(TokenTree::Group(g))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                && g.delimiter() == Delimiter::Brace
            {
                let mut inner_module = module.clone();
                inner_module.push(name);
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                self.collect_uses(&inner, &inner_module, file_module, file, known);
                i += 3;
                continue;
            }
            match &tokens[i] {
                TokenTree::Group(g) => {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    self.collect_uses(&inner, module, file_module, file, known);
                    i += 1;
                }
                TokenTree::Ident(_) if is_path_sep(tokens, i + 1) => {
                    // A path's later segments (`std::process::x`) are not starts,
                    // nor is `$crate`.
                    let continues = (i >= 2 && is_path_sep(tokens, i - 2))
                        || is_punct(i.checked_sub(1).and_then(|p| tokens.get(p)), '$');
                    let (path, next) = read_path(tokens, i);
                    if !continues {
                        let mut full = Vec::new();
                        path.flatten(&[], &mut full);
                        for written in full {
                            self.resolve(&written, module, file_module, file, known);
                        }
                    }
                    i = next.max(i + 1);
                }
                _ => i += 1,
            }
        }
    }

    /// Records the module file `written` (seen inside `module`) names, if any.
    fn resolve(
        &mut self,
        written: &[String],
        module: &ModPath,
        file_module: &ModPath,
        file: &Path,
        known: &BTreeSet<ModPath>,
    ) {
        let Some((first, rest)) = written.split_first() else {
            return;
        };
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            child => {
                let mut path = module.clone();
                path.push(child.to_owned());
                if !known.contains(&path) {
                    return;
                }
                path
            }
        };
        let mut rest = rest.iter();
        for segment in rest.by_ref() {
            if segment == "super" {
                base.pop();
                continue;
            }
            let mut deeper = base.clone();
            deeper.push(segment.clone());
            if !known.contains(&deeper) {
                break;
            }
            base = deeper;
        }
        let target = self.file_module(&base);
        if target != *file_module {
            self.uses
                .entry((file_module.clone(), target))
                .or_insert_with(|| format!("{}: {}", file.display(), written.join("::")));
        }
    }

    /// Every cycle among siblings, as `parent: a → b → a (file: path; file:
    /// path)`; empty when there is none.
    pub fn cycles(&self) -> Vec<String> {
        let mut levels: BTreeMap<ModPath, Edges> = BTreeMap::new();
        for ((from, to), seen) in &self.uses {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            let parent = from[..common].to_vec();
            // Between a module and one inside it: not among siblings.
            let (Some(a), Some(b)) = (from.get(common), to.get(common)) else {
                continue;
            };
            levels
                .entry(parent)
                .or_default()
                .entry((a.clone(), b.clone()))
                .or_insert_with(|| seen.clone());
        }
        let mut found = Vec::new();
        for (parent, edges) in &levels {
            for cycle in cycles_in(edges.keys()) {
                let evidence: Vec<&str> = cycle
                    .windows(2)
                    .filter_map(|w| edges.get(&(w[0].clone(), w[1].clone())))
                    .map(String::as_str)
                    .collect();
                let parent = if parent.is_empty() {
                    "crate".to_owned()
                } else {
                    parent.join("::")
                };
                found.push(format!(
                    "{parent}: {} ({})",
                    cycle.join(" → "),
                    evidence.join("; ")
                ));
            }
        }
        found
    }

    /// The module files, by module path (`a::b`; the crate root is ``).
    pub fn modules(&self) -> impl Iterator<Item = (String, &Path)> {
        self.files.iter().map(|(m, f)| (m.join("::"), f.as_path()))
    }
}

/// One cycle through each strongly connected group of `edges` (a node first,
/// then back to it), found by depth-first search.
fn cycles_in<'a, N: Ord + Clone + 'a>(edges: impl Iterator<Item = &'a (N, N)>) -> Vec<Vec<N>> {
    let mut next: BTreeMap<N, Vec<N>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a.clone()).or_default().push(b.clone());
    }
    let mut cycles: Vec<Vec<N>> = Vec::new();
    let mut in_a_cycle: BTreeSet<N> = BTreeSet::new();
    for start in next.keys() {
        if in_a_cycle.contains(start) {
            continue;
        }
        // A path from `start` back to `start`, if there is one.
        let mut stack = vec![(start.clone(), 0usize)];
        let mut seen = BTreeSet::from([start.clone()]);
        while let Some((node, edge)) = stack.pop() {
            let Some(target) = next.get(&node).and_then(|t| t.get(edge)).cloned() else {
                continue;
            };
            stack.push((node, edge + 1));
            if target == *start {
                let mut cycle: Vec<N> = stack.iter().map(|(n, _)| n.clone()).collect();
                cycle.push(start.clone());
                in_a_cycle.extend(cycle.iter().cloned());
                cycles.push(cycle);
                break;
            }
            if seen.insert(target.clone()) {
                stack.push((target, 0));
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a temporary directory: (relative path, text) per file.
    fn crate_of(tag: &str, files: &[(&str, &str)]) -> (PathBuf, Graph) {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let graph = Graph::read(&dir.join("lib.rs")).unwrap();
        (dir, graph)
    }

    #[test]
    fn a_cycle_through_three_modules_and_grouped_uses_is_found() {
        let (dir, graph) = crate_of(
            "three",
            &[
                ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
                ("a.rs", "use crate::{b::{x, y}, std_like};\n"),
                ("b.rs", "fn f() { crate::c::g(); }\n"),
                ("c.rs", "use super::a::Thing;\n"),
            ],
        );
        let cycles = graph.cycles();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(
            cycles[0].starts_with("crate: a → b → c → a ("),
            "{cycles:?}"
        );
    }

    #[test]
    fn comments_strings_later_segments_and_tests_modules_do_not_count() {
        let (dir, graph) = crate_of(
            "quiet",
            &[
                ("lib.rs", "pub mod a;\npub mod b;\n"),
                (
                    "a.rs",
                    "//! See [`crate::b`].\nuse std::process::Command;\nuse crate::b::X;\n",
                ),
                (
                    "b.rs",
                    "/// Not [`crate::a`].\nconst T: &str = \"crate::a::x\";\nfn f() { \
                     std::a::x(); }\n#[cfg(test)]\nmod tests { use super::*; }\n",
                ),
            ],
        );
        let cycles = graph.cycles();
        let _ = std::fs::remove_dir_all(dir);
        assert!(cycles.is_empty(), "{cycles:?}");
    }

    #[test]
    fn cycles_among_nested_siblings_count_and_a_child_naming_its_parent_does_not() {
        let (dir, graph) = crate_of(
            "nested",
            &[
                ("lib.rs", "mod vm;\nmod test;\n"),
                ("test.rs", "use crate::vm::run;\n"),
                (
                    "vm/mod.rs",
                    "mod apt;\nmod boot;\npub use boot::run;\nfn dir() {}\n",
                ),
                ("vm/apt.rs", "pub fn f() { super::boot::g() }\n"),
                ("vm/boot.rs", "use super::{apt, dir};\n"),
            ],
        );
        let modules: Vec<String> = graph.modules().map(|(m, _)| m).collect();
        let cycles = graph.cycles();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(modules, ["", "test", "vm", "vm::apt", "vm::boot"]);
        // boot uses apt and apt uses boot; vm's file and boot name each other,
        // which is a parent and its child.
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].starts_with("vm: apt → boot → apt"), "{cycles:?}");
    }

    /// No module dependency cycle in xtask or bpf-tests: every target of both
    /// packages (libraries, binaries, tests, benches, build scripts) is read from
    /// its root file, and a module that uses another which, directly or through
    /// others, uses it back fails this test. (A unit test, not one in `tests/`:
    /// an integration test would make `cargo test` rebuild the xtask binary that
    /// `cargo xtask test` is running.)
    #[test]
    fn xtask_and_bpf_tests_have_no_module_cycle() {
        let metadata = cargo_metadata::MetadataCommand::new()
            .manifest_path(crate::toolchain::workspace_root().join("Cargo.toml"))
            .no_deps()
            .exec()
            .expect("cargo metadata");
        let mut checked = Vec::new();
        let mut cycles = Vec::new();
        for package in metadata
            .workspace_packages()
            .into_iter()
            .filter(|p| ["xtask", "bpf-tests"].contains(&p.name.as_str()))
        {
            for target in &package.targets {
                let graph = Graph::read(target.src_path.as_std_path())
                    .unwrap_or_else(|e| panic!("{}: {e:#}", target.src_path));
                checked.push(format!(
                    "{} {} ({} modules)",
                    package.name,
                    target.name,
                    graph.modules().count()
                ));
                cycles.extend(
                    graph
                        .cycles()
                        .into_iter()
                        .map(|c| format!("{} {}: {c}", package.name, target.name)),
                );
            }
        }
        println!("checked: {}", checked.join(", "));
        assert!(checked.len() >= 6, "too few targets found: {checked:?}");
        assert!(
            cycles.is_empty(),
            "module cycles (a module uses one that uses it back):\n{}",
            cycles.join("\n")
        );
    }
}
