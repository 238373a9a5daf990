//! The library's top-level modules import each other without a cycle: capabilities
//! never import the façade (`facade`), the assembly (`app`) or the modules above it.
//! Run alone: `cargo test -p frontdesk --test it -- modules::` (no database needed).
//! It reads `src/**`, takes every `crate::x` path (and each name of a
//! `crate::{x, y::z}` group) as an edge from the file's top-level module to `x`, and
//! fails naming the first cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> modules it imports`, from the sources under `src`.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    walk(src, &mut files);
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let entry = graph.entry(top.clone()).or_default();
        for target in crate_paths(&code) {
            if target != top && target != "self" && target != "super" {
                entry.insert(target);
            }
        }
    }
    // Only edges between the crate's own modules (not `crate::Result` re-exports).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    graph
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first segment after each `crate::` (each item of a `crate::{…}` group).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 0 of the group, each up to its first `::` or `,`.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphanumeric() || c == '_') => {
                        out.push(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// A cycle in `graph`, as the path `a -> b -> … -> a`.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_are_acyclic() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 20, "read too few modules: {:?}", graph.keys());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn capabilities_never_import_the_facade_or_the_assembly() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    // Above the façade: the assembly, the routes that read the whole façade, the
    // embedding layer, dev mode, the CLI and the operator console.
    let above = ["app", "cli", "devmode", "embed", "ops", "console", "facade"];
    for (module, targets) in &graph {
        if above.contains(&module.as_str()) {
            continue;
        }
        for t in ["facade", "app", "cli", "embed", "ops", "console"] {
            assert!(
                !targets.contains(t),
                "{module} imports {t}: capabilities take their handles in their constructor"
            );
        }
    }
}

#[test]
fn the_checker_finds_a_cycle() {
    let code = "use crate::{a::X, b}; fn f() { crate::c::g(); }";
    assert_eq!(crate_paths(code), vec!["a", "b", "c"]);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g).map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_string())
    );
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}
