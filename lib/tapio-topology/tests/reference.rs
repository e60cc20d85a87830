//! The option tables of `website/components.md` are generated from the config structs, and the
//! docs site's page of each component (`website/src/reference/<kind>/<type>.md`, listed in
//! `website/src/SUMMARY.md` and `README.md`) from that file's section of the component: a change to an option
//! (its name, type, default or doc comment), to a component's prose, or a new component, that
//! forgets any of them fails here. Regenerate with
//! `TAPIO_BLESS=1 cargo test -p tapio-topology --test reference`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tapio_topology::reference;

#[test]
fn committed_reference_matches_the_config_types() {
    let website = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../website")
        .canonicalize()
        .expect("the website folder is two levels above the crate");
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    };
    let components = website.join("components.md");
    let summary = website.join("src/SUMMARY.md");
    let readme = website.with_file_name("README.md");
    let generated = reference::generate(&read(&components), &read(&summary), &read(&readme))
        .unwrap_or_else(|error| panic!("{error}"));

    // Every file the reference consists of, with what it must hold; `None` for a page under
    // the generated folder that no component makes any more.
    let mut wanted: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    wanted.insert(components, Some(generated.components));
    wanted.insert(summary, Some(generated.summary));
    wanted.insert(readme, Some(generated.readme));
    let pages_dir = website.join("src").join(reference::PAGES_DIR);
    for existing in markdown_files(&pages_dir) {
        wanted.insert(existing, None);
    }
    for page in generated.pages {
        wanted.insert(website.join("src").join(page.path), Some(page.markdown));
    }
    let stale: Vec<(&PathBuf, &Option<String>)> = wanted
        .iter()
        .filter(|(path, content)| std::fs::read_to_string(path).ok() != **content)
        .collect();

    if std::env::var_os("TAPIO_BLESS").is_some() {
        for (path, content) in stale {
            let written = match content {
                Some(content) => path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(path, content)),
                None => std::fs::remove_file(path),
            };
            written.unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        }
        return;
    }
    let names: Vec<String> = stale
        .iter()
        .map(|(path, content)| {
            let what = if content.is_some() {
                "stale or missing"
            } else {
                "no longer made"
            };
            format!("  {} ({what})", path.display())
        })
        .collect();
    assert!(
        names.is_empty(),
        "the reference is out of date:\n{}\nregenerate it with \
         TAPIO_BLESS=1 cargo test -p tapio-topology --test reference",
        names.join("\n")
    );
}

/// Every `.md` file under `dir`, at any depth; none when it does not exist.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
            .path();
        if path.is_dir() {
            files.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "md") {
            files.push(path);
        }
    }
    files
}
