//! The option tables of `website/components.md` are generated from the config structs: a
//! change to an option (its name, type, default or doc comment) that forgets the page fails
//! here. Regenerate with `TAPIO_BLESS=1 cargo test -p tapio-topology --test reference`.

use std::path::PathBuf;

#[test]
fn committed_reference_matches_the_config_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../website/components.md");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let generated = tapio_topology::reference::update(&committed)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    if std::env::var_os("TAPIO_BLESS").is_some() {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        return;
    }
    assert!(
        committed == generated,
        "{} is stale; regenerate it with TAPIO_BLESS=1 cargo test -p tapio-topology --test reference",
        path.display()
    );
}
