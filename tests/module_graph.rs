//! The runtime's modules import each other without cycles: between its
//! top-level modules (`http`, `delivery`, `store`...), and between the
//! files of each folder (a folder's `mod.rs` is its face and may assemble
//! its children; its children may not import each other in a circle).
//!
//! The graph is read from the sources: every `crate::...`, `super::...`
//! and `self::...` path outside comments, resolved to the module file it
//! names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as the path of names from the crate root (`["store",
/// "sqlite", "views"]`).
type Module = Vec<String>;

fn sources(root: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap();
            let mut module: Module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            out.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The code of `text` without comments (line comments and doc comments;
/// the runtime has no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") { "" } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate::`, `super::` or `self::`, as its
/// segments, resolved against `module`.  Grouped imports (`crate::{a, b}`)
/// count each group member.
fn references(module: &Module, text: &str) -> Vec<Module> {
    let mut refs = Vec::new();
    let bytes = text.as_bytes();
    let ident = |i: &mut usize| -> String {
        let start = *i;
        while *i < bytes.len() && (bytes[*i].is_ascii_alphanumeric() || bytes[*i] == b'_') {
            *i += 1;
        }
        text[start..*i].to_string()
    };
    for (at, _) in text.match_indices("::") {
        // The word before `::` must start a path here.
        let mut s = at;
        while s > 0 && (bytes[s - 1].is_ascii_alphanumeric() || bytes[s - 1] == b'_') {
            s -= 1;
        }
        let head = &text[s..at];
        if s > 0 && bytes[s - 1] == b':' {
            continue; // inside a longer path: counted from its head
        }
        let mut base: Module = match head {
            "crate" => vec![],
            "self" => module.clone(),
            "super" => {
                let mut m = module.clone();
                m.pop();
                m
            }
            _ => continue,
        };
        // Further `super::` segments.
        let mut i = at + 2;
        while text[i..].starts_with("super::") {
            base.pop();
            i += 7;
        }
        if text[i..].starts_with('{') {
            // A group: each member's first segment.
            let end = text[i..].find('}').map_or(text.len(), |e| i + e);
            for member in text[i + 1..end].split(',') {
                let first = member.trim().split("::").next().unwrap_or("").trim();
                if !first.is_empty() && first != "self" {
                    let mut m = base.clone();
                    m.push(first.to_string());
                    refs.push(m);
                }
            }
            continue;
        }
        let mut path = base;
        loop {
            let seg = ident(&mut i);
            if seg.is_empty() {
                break;
            }
            path.push(seg);
            if text[i..].starts_with("::") {
                i += 2;
            } else {
                break;
            }
        }
        refs.push(path);
    }
    refs
}

/// The longest prefix of `path` that is a module.
fn resolve(modules: &BTreeSet<Module>, path: &Module) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// A cycle in `graph`, if any, as the nodes along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = vec![];
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// (from, to) module edges of the runtime crate.
fn edges() -> Vec<(Module, Module)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let files = sources(&root);
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut out = Vec::new();
    for (module, text) in &files {
        for r in references(module, &code(text)) {
            if let Some(target) = resolve(&modules, &r) {
                if &target != module {
                    out.push((module.clone(), target));
                }
            }
        }
    }
    out
}

#[test]
fn no_cycle_between_top_level_modules() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a != b {
            graph.entry(a.clone()).or_default().insert(b.clone());
        }
    }
    let shown: Vec<String> = graph
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} -> {}",
                v.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!("{}", shown.join("\n"));
    assert!(
        graph.contains_key("delivery"),
        "the graph was read: {shown:?}"
    );
    if let Some(c) = cycle(&graph) {
        panic!(
            "import cycle between modules: {}\n{}",
            c.join(" -> "),
            shown.join("\n")
        );
    }
    // Nothing imports the composition root.
    let into_app: Vec<_> = graph.iter().filter(|(_, v)| v.contains("app")).collect();
    assert!(
        into_app.is_empty(),
        "only the binary may use `app`: {into_app:?}"
    );
}

/// What a top-level module's doc says it may import: the names in
/// backquotes after "May import:" up to the end of that sentence; `None`
/// when it says nothing (the composition root, `app`).
fn allowed_imports(text: &str) -> Option<BTreeSet<String>> {
    let doc: String = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let after = &doc[doc.find("May import:")? + "May import:".len()..];
    let sentence = after.split(". ").next().unwrap_or(after);
    Some(
        sentence
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn every_module_imports_only_what_its_doc_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let files = sources(&root);
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges() {
        if let (Some(a), Some(b)) = (from.first(), to.first()) {
            if a != b {
                used.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    let mut checked = 0;
    for (module, text) in &files {
        if module.len() != 1 {
            continue;
        }
        let name = &module[0];
        let Some(allowed) = allowed_imports(text) else {
            assert_eq!(name, "app", "{name}: its doc must say what it may import");
            continue;
        };
        checked += 1;
        let extra: Vec<_> = used
            .get(name)
            .into_iter()
            .flatten()
            .filter(|m| !allowed.contains(*m))
            .collect();
        assert!(
            extra.is_empty(),
            "`{name}` imports {extra:?}, which its doc (\"May import: ...\") does not allow {allowed:?}"
        );
    }
    assert!(checked >= 10, "{checked} modules checked");
}

#[test]
fn no_cycle_between_the_files_of_a_folder() {
    // folder -> (child -> children it imports)
    let mut folders: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, to) in edges() {
        // The deepest folder containing both, and the child of it each
        // lies under.
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common >= from.len() || common >= to.len() {
            continue; // one contains the other: a folder and its face
        }
        let folder = from[..common].to_vec();
        folders
            .entry(folder)
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .insert(to[common].clone());
    }
    for (folder, graph) in &folders {
        if folder.is_empty() {
            continue; // the top level: the test above
        }
        if let Some(c) = cycle(graph) {
            panic!(
                "import cycle between the files of {}/: {}",
                folder.join("/"),
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_reader_finds_imports_of_every_form() {
    let m: Module = vec!["delivery".into(), "attempt".into()];
    let refs = references(
        &m,
        "use super::retry::{self, Answer};\nuse crate::{store::X, text};\nlet x = crate::time::now();\nuse self::inner::Y;",
    );
    assert_eq!(
        refs,
        vec![
            vec!["delivery".to_string(), "retry".into(), "".into()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
            vec!["store".to_string()],
            vec!["text".to_string()],
            vec!["time".to_string(), "now".into()],
            vec![
                "delivery".to_string(),
                "attempt".into(),
                "inner".into(),
                "Y".into()
            ],
        ]
    );
}
