//! The layering ARCHITECTURE.md promises, checked: a module uses only modules of lower layers,
//! so there is no import circle and storage never reaches up into the cluster or the API.
//! A new top-level module must be given a layer here (and a line in ARCHITECTURE.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/`, lowest layer first. A module may use modules of lower layers
/// only (and itself).
const LAYERS: &[&[&str]] = &[
    &["time", "content", "runtime", "logging", "health", "private_file", "limits", "units", "process"],
    // The command-line client: a plain HTTP client of the node, which nothing of the node
    // reaches into; config only names its commands.
    &["client"],
    &["crypto"],
    &["storage"],
    &["events", "clock"],
    &["cluster"],
    &["node"],
    // The S3 endpoint takes its settings as its own type; config composes every part's
    // settings, and the HTTP app (which also starts peer links) is built from the whole.
    &["s3"],
    &["config"],
    &["http", "offline"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
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

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).unwrap().components().next()?.as_os_str().to_str()?.to_owned();
    let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (module != "lib" && module != "main").then_some(module)
}

/// Every `crate::name` a file refers to, also inside `use crate::{a, b::c}` groups.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String =
        text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(own) = layer_of(&module) else {
            problems.push(format!("src/{module} has no layer in tests/architecture.rs"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_references(&text) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => problems.push(format!(
                    "{} uses crate::{used}, which is not below {module}",
                    file.strip_prefix(&src).unwrap().display()
                )),
                // Not a module (e.g. a macro exported at the crate root): nothing to check.
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_references_and_groups() {
    let refs =
        crate_references("use crate::storage::Store;\nuse crate::{clock::Clock, content};\n// crate::http\n");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["clock", "content", "storage"]);
}
