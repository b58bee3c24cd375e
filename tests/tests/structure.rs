//! The house rules that no compiler checks: no import circle between the
//! modules of a crate, and no source file over 800 lines unless it says why.
//!
//! Reads the `crate::`, `super::` and `self::` paths in each file (tests at
//! the end of a file, after `#[cfg(test)]`, are left out) and resolves each to
//! the deepest module that exists; a module's use of its own ancestors counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["dataplane/src", "control/src", "bench/src"];
const MAX_LINES: usize = 800;
/// A file over the limit says so in its first fifteen lines, with the reason.
const LONG_FILE_MARK: &str = "800 lines";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `shard/mod.rs` → `["shard"]`, `shard/ingest.rs` → `["shard", "ingest"]`,
/// `lib.rs` and `main.rs` → the crate root `[]`; `src/bin/x.rs` is its own root.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Some(Vec::new());
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The code of a file without comments, strings and its trailing tests.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && !line.starts_with(' ') {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate::`, `super::` or `self::`, expanded
/// over `{a::b, c}` groups, as segments relative to the crate root.
fn paths_in(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(start) {
            let i = at + i;
            at = i + start.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let base: Vec<String> = match start {
                "crate::" => Vec::new(),
                // In `a/b.rs` (module a::b) and in `a/b/mod.rs` (module
                // a::b), `self` is a::b and `super` is a.
                "self::" => here.to_vec(),
                _ => {
                    let mut p = here.to_vec();
                    p.pop();
                    p
                }
            };
            let mut rest = &code[at..];
            let mut supers = base;
            // `super::super::x`
            while let Some(r) = rest.strip_prefix("super::") {
                supers.pop();
                rest = r;
            }
            expand(rest, supers, &mut found);
        }
    }
    found
}

fn expand(rest: &str, prefix: Vec<String>, found: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut s = rest;
    loop {
        if let Some(r) = s.strip_prefix('{') {
            // Split the group at top-level commas.
            let mut depth = 0;
            let mut item = 0;
            for (i, c) in r.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(r[item..i].trim(), path.clone(), found);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(r[item..i].trim(), path.clone(), found);
                        item = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end == 0 {
            break;
        }
        path.push(s[..end].to_string());
        s = &s[end..];
        match s.strip_prefix("::") {
            Some(r) => s = r.trim_start(),
            None => break,
        }
    }
    found.push(path);
}

struct Crate {
    files: BTreeMap<Vec<String>, (PathBuf, String)>,
}

fn load(src: &Path) -> Crate {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let mut files = BTreeMap::new();
    for p in paths {
        if let Some(m) = module_of(src, &p) {
            let text = std::fs::read_to_string(&p).unwrap();
            files.insert(m, (p, text));
        }
    }
    Crate { files }
}

/// Module → the modules it names (its own descendants and itself left out).
fn edges(c: &Crate) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut out = BTreeMap::new();
    // What the crate root re-exports: `pub use a::b::{X, Y}` names X and Y
    // after module a::b, so `crate::X` is a use of a::b.
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some((_, root_text)) = c.files.get(&Vec::new()) {
        for line in code_of(root_text).lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let mut found = Vec::new();
            expand(rest.trim_end_matches(';'), Vec::new(), &mut found);
            for path in found {
                if let Some((last, module)) = path.split_last() {
                    reexports.insert(last.clone(), module.to_vec());
                }
            }
        }
    }
    for (m, (_, text)) in &c.files {
        let mut to = BTreeSet::new();
        for mut path in paths_in(&code_of(text), m) {
            if let Some(module) = path.first().and_then(|n| reexports.get(n)) {
                let tail = path.split_off(1);
                path = module.iter().cloned().chain(tail).collect();
            }
            // The deepest module on the path that is a file of this crate.
            let mut target = path.clone();
            while !target.is_empty() && !c.files.contains_key(&target) {
                target.pop();
            }
            if target.starts_with(m) {
                continue;
            }
            // The crate root only re-exports; naming it is naming what it exports.
            if target.is_empty() {
                continue;
            }
            to.insert(target);
        }
        out.insert(m.clone(), to);
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let Some((w, _)) = t.g.get_key_value(w) else {
                continue;
            };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_import_circle_between_modules() {
    let mut report = Vec::new();
    for dir in CRATES {
        let c = load(&root().join(dir));
        let g = edges(&c);
        for comp in circles(&g) {
            let members: BTreeSet<_> = comp.iter().collect();
            let mut lines = vec![format!("{dir}: circle of {} modules:", comp.len())];
            for m in &comp {
                for to in &g[m] {
                    if members.contains(to) {
                        lines.push(format!("  {} -> {}", name(m), name(to)));
                    }
                }
            }
            report.push(lines.join("\n"));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn source_files_stay_under_800_lines_or_say_why() {
    let mut long = Vec::new();
    for dir in ["dataplane/src", "control/src"] {
        let mut files = Vec::new();
        rust_files(&root().join(dir), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let lines = text.lines().count();
            let says_why = text.lines().take(15).any(|l| l.contains(LONG_FILE_MARK));
            if lines > MAX_LINES && !says_why {
                long.push(format!("{} ({lines} lines)", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines without a `{LONG_FILE_MARK}` reason near the top: {long:?}"
    );
}

#[test]
fn the_circle_finder_finds_a_planted_circle() {
    let here = vec!["a".to_string()];
    let code = "use crate::{b::X, c::{d::Y, Z}};\nfn f() { super::e::g(); self::h::i(); }\n";
    let mut got: Vec<String> = paths_in(code, &here).iter().map(|p| p.join("::")).collect();
    got.sort();
    assert_eq!(got, ["a::h::i", "b::X", "c::Z", "c::d::Y", "e::g"]);

    let m = |s: &str| -> Vec<String> { s.split("::").map(String::from).collect() };
    let mut g = BTreeMap::new();
    g.insert(m("a"), BTreeSet::from([m("b")]));
    g.insert(m("b"), BTreeSet::from([m("c")]));
    g.insert(m("c"), BTreeSet::from([m("a")]));
    g.insert(m("d"), BTreeSet::from([m("a")]));
    let found = circles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
}
