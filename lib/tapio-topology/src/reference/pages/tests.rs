use super::*;

/// A components page in the shape of `website/components.md`, with one source and one sink.
const COMPONENTS: &str = "# Components reference

## Options every sink has

## Sources

### `tail`
Reads files; see [the guide](../ebpf/README.md#overhead) and [dead letters](#dead-letters).

```toml
# a comment, not a heading
[sources.logs]
```

#### Checkpoints
Kept under `data_dir`, as in `[a](b)`.

<!-- generated:sources.tail -->
| option |
<!-- /generated -->

## Sinks

### `null`
Discards; [Rhai](https://rhai.rs).

<!-- generated:sinks.null -->
| option |
<!-- /generated -->

## Dead letters
";

const TYPES: [(&str, &[&str]); 2] = [("sources", &["tail"]), ("sinks", &["null"])];

#[test]
fn a_page_is_its_section_with_headings_moved_up_and_links_rerooted() {
    let pages = pages(COMPONENTS, &TYPES).unwrap();
    let paths: Vec<&str> = pages.iter().map(|page| page.path.as_str()).collect();
    assert_eq!(
        paths,
        ["reference/sources/tail.md", "reference/sinks/null.md"]
    );
    let tail = &pages[0].markdown;
    assert!(tail.contains("\n# The `tail` source\n\nReads files; see [the guide](../../ebpf/README.md#overhead) and [dead letters](../../website/components.md#dead-letters).\n"), "{tail}");
    assert!(
        tail.contains("```toml\n# a comment, not a heading\n"),
        "{tail}"
    );
    assert!(
        tail.contains("\n## Checkpoints\nKept under `data_dir`, as in `[a](b)`.\n"),
        "{tail}"
    );
    assert!(tail.contains("\n| option |\n"), "{tail}");
    assert!(
        !tail.contains("generated:") && !tail.contains("## Sinks"),
        "{tail}"
    );
    assert!(!tail.contains("options-every-sink-has"), "{tail}");
    let null = &pages[1].markdown;
    assert!(null.contains("[Rhai](https://rhai.rs)"), "{null}");
    assert!(
        null.contains("(../../website/components.md#options-every-sink-has)"),
        "{null}"
    );
    assert!(!null.contains("Dead letters"), "{null}");
}

#[test]
fn the_sidebar_lists_the_pages_by_kind() {
    let pages = pages(COMPONENTS, &TYPES).unwrap();
    assert_eq!(
        summary(&pages),
        "\n# Sources\n\n- [tail](reference/sources/tail.md)\n\n\
         # Sinks\n\n- [null](reference/sinks/null.md)\n\n"
    );
}

#[test]
fn a_component_without_a_section_of_its_own_is_an_error_saying_what_it_needs() {
    let otlp: [(&str, &[&str]); 1] = [("sinks", &["otlp"])];
    let error = pages(COMPONENTS, &otlp).unwrap_err();
    assert!(
        error.contains("no `<!-- generated:sinks.otlp -->` line"),
        "{error}"
    );

    let flat = COMPONENTS.replace("### `null`\n", "");
    let error = pages(&flat, &TYPES[1..]).unwrap_err();
    assert!(
        error.contains("sits under `## Sinks`: give the component its own `### `null`` heading"),
        "{error}"
    );

    let error = pages(&COMPONENTS.replace("../ebpf", "../../../x"), &TYPES).unwrap_err();
    assert!(
        error.contains("`../../../x/README.md#overhead` leaves the site"),
        "{error}"
    );
}

#[test]
fn the_readme_links_each_page_where_the_repository_keeps_it() {
    let pages = pages(COMPONENTS, &TYPES).unwrap();
    assert_eq!(
        readme_list(&pages),
        "- Sources: [tail](website/src/reference/sources/tail.md)\n\
         - Sinks: [null](website/src/reference/sinks/null.md)\n"
    );
}
