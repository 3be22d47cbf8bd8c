//! The library's layers depend only downwards: this test reads every source file,
//! collects which top-level modules each top-level module uses (`crate::x`,
//! `super::…` stays inside), and checks the graph against the architecture in
//! `src/lib.rs`: the model imports nothing, and no two layers import each other.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Each top-level module and the ones it may use. Anything not listed is a new
/// dependency that needs a decision (and an entry here).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("sys", &["model"]),
    ("probes", &["model", "sys"]),
    ("config", &["model"]),
    ("collect", &["model", "sys", "probes", "config"]),
    ("tune", &["model", "sys", "config"]),
    ("serve", &["model"]),
    (
        "diagnose",
        &["model", "sys", "probes", "collect", "config", "tune"],
    ),
    ("check", &["model", "sys", "collect", "config", "tune"]),
    (
        "engine",
        &["model", "sys", "probes", "collect", "config", "tune"],
    ),
    (
        "top",
        &["model", "config", "engine", "probes", "serve", "sys"],
    ),
    (
        "daemon",
        &[
            "model", "sys", "probes", "collect", "config", "engine", "serve",
        ],
    ),
];

/// Top-level modules `text` names as `crate::<module>` in code (comments, which
/// may link anywhere, are skipped).
fn used_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // `crate::{a::{x, y}, b, c::z}`: the first name of each item at depth 0.
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[i..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_depend_only_downwards_and_the_model_on_nothing() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let mut parts = relative.components();
        let first = parts.next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        // The binary's own files (main.rs, commands/) and lib.rs sit above every layer.
        if matches!(module.as_str(), "main" | "lib" | "commands") {
            continue;
        }
        let Some(may_use) = allowed.get(module.as_str()) else {
            problems.push(format!("{module} is not a known layer (add it to ALLOWED)"));
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        for used in used_modules(&text) {
            if used != module && !may_use.contains(&used.as_str()) {
                problems.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_allowed_graph_has_no_cycles() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(m: &'a str, allowed: &BTreeMap<&'a str, &'a [&'a str]>, path: &mut Vec<&'a str>) {
        assert!(!path.contains(&m), "cycle: {path:?} -> {m}");
        path.push(m);
        for next in allowed.get(m).copied().unwrap_or_default() {
            visit(next, allowed, path);
        }
        path.pop();
    }
    for m in allowed.keys() {
        visit(m, &allowed, &mut Vec::new());
    }
}

#[test]
fn the_scanner_sees_grouped_and_inline_uses() {
    let text = "use crate::{\n    model::{a, b},\n    sys::X,\n};\nlet x = crate::tune::f();";
    assert_eq!(
        used_modules(text).into_iter().collect::<Vec<_>>(),
        ["model", "sys", "tune"]
    );
}
