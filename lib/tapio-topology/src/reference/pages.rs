//! The site's page for each component, `website/src/reference/<kind>/<type>.md`, cut from the
//! component's section of `website/components.md`. That file stays the one place where a
//! component's prose and table are written (and the page a repository reader scrolls); the site
//! also gets a page a user can land on, link to and find in its sidebar for each component. The
//! pages are generated files: `reference/` under `website/src/` holds nothing else.
//!
//! A component's section is the `### ` heading above its `<!-- generated:<kind>.<type> -->`
//! marker, up to the next heading of that level or above. On its page the section's own headings
//! move up two levels and its relative links are rewritten to resolve from the page's folder.

use super::{BEGIN, END};

/// The folder of the generated pages, under `website/src/`.
pub const PAGES_DIR: &str = "reference";
/// Where the site shows `website/components.md`, under `website/src/` (a symlink at the path
/// it has in the repository, so the links it makes resolve the same in both).
const COMPONENTS_PAGE: &str = "website/components.md";
/// The kinds of component in the order the site lists them: the key prefix of their blocks
/// (`sources.kafka`), the title of their part of the sidebar, and one of them in a title.
const KINDS: [(&str, &str, &str); 3] = [
    ("sources", "Sources", "source"),
    ("transforms", "Transforms", "transform"),
    ("sinks", "Sinks", "sink"),
];

/// One generated page: its path under `website/src/`, and its Markdown.
#[derive(Debug)]
pub struct Page {
    /// Where it is written, relative to `website/src/` (`reference/sinks/kafka.md`).
    pub path: String,
    /// What it holds.
    pub markdown: String,
}

/// The page of every `(kind, type)` in `components` (`website/components.md`, tables current),
/// in the order the sidebar lists them: by kind as [`KINDS`] orders them, then by type name.
pub fn pages(components: &str, types: &[(&str, &[&str])]) -> Result<Vec<Page>, String> {
    let lines: Vec<&str> = components.lines().collect();
    let headings = headings(&lines);
    let mut pages = Vec::new();
    for (kind, _, one) in KINDS {
        let mut names: Vec<&str> = types
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        names.sort();
        for name in names {
            let key = format!("{kind}.{name}");
            let section = section(&lines, &headings, &key)?;
            let path = format!("{PAGES_DIR}/{kind}/{name}.md");
            let markdown = page(&key, one, name, kind, &lines[section.0..section.1])?;
            pages.push(Page { path, markdown });
        }
    }
    Ok(pages)
}

/// The sidebar entries of `pages` for `SUMMARY.md`: a part per kind, a line per component.
pub fn summary(pages: &[Page]) -> String {
    let mut list = String::new();
    for (kind, title, _) in KINDS {
        let prefix = format!("{PAGES_DIR}/{kind}/");
        let entries: Vec<&str> = pages
            .iter()
            .filter_map(|page| page.path.strip_prefix(&prefix))
            .collect();
        if entries.is_empty() {
            continue;
        }
        list.push_str(&format!("\n# {title}\n\n"));
        for entry in entries {
            let name = entry.trim_end_matches(".md");
            list.push_str(&format!("- [{name}]({prefix}{entry})\n"));
        }
    }
    list.push('\n');
    list
}

/// The list of `pages` for the repository's `README.md`: a line per kind, linking each page
/// where the repository keeps it.
pub fn readme_list(pages: &[Page]) -> String {
    let mut list = String::new();
    for (kind, title, _) in KINDS {
        let prefix = format!("{PAGES_DIR}/{kind}/");
        let links: Vec<String> = pages
            .iter()
            .filter_map(|page| {
                let name = page.path.strip_prefix(&prefix)?.trim_end_matches(".md");
                Some(format!("[{name}](website/src/{})", page.path))
            })
            .collect();
        if !links.is_empty() {
            list.push_str(&format!("- {title}: {}\n", links.join(", ")));
        }
    }
    list
}

/// The line index and level of each heading of `lines`, skipping fenced code (where a `#`
/// starts a comment, not a heading).
fn headings(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut fence: Option<&str> = None;
    let mut headings = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(open) if trimmed.starts_with(open) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => {
                if let Some(level) = heading_level(line) {
                    headings.push((index, level));
                }
            }
        }
    }
    headings
}

/// The level of the ATX heading `line` (`### x` is 3), if it is one.
fn heading_level(line: &str) -> Option<usize> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    let after = &line[level..];
    ((1..=6).contains(&level) && (after.is_empty() || after.starts_with(' '))).then_some(level)
}

/// The lines `start..end` of the section of the component `key`: from the `### ` heading above
/// its marker (past any deeper headings of its own) to the next heading of level 3 or above.
fn section(
    lines: &[&str],
    headings: &[(usize, usize)],
    key: &str,
) -> Result<(usize, usize), String> {
    let marker = format!("{BEGIN}{key} -->");
    let at = lines
        .iter()
        .position(|line| line.trim() == marker)
        .ok_or_else(|| format!("no `{marker}` line, on a line of its own"))?;
    let (start, level) = headings
        .iter()
        .rev()
        .find(|(index, level)| *index < at && *level <= 3)
        .copied()
        .ok_or_else(|| format!("`{marker}` has no heading above it"))?;
    if level != 3 {
        let (kind, name) = key.split_once('.').unwrap_or((key, key));
        return Err(format!(
            "`{marker}` sits under `{}`: give the component its own `### `{name}`` heading \
             under `## {}`, with its prose and the marker pair, as the other {kind} have; its \
             page on the site is made from that section",
            lines[start],
            title_of(kind)
        ));
    }
    let end = headings
        .iter()
        .find(|(index, other)| *index > start && *other <= level)
        .map_or(lines.len(), |(index, _)| *index);
    Ok((start, end))
}

/// The sidebar title of `kind` (`Sources`).
fn title_of(kind: &str) -> &str {
    KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map_or(kind, |(_, title, _)| title)
}

/// The page of the component `name` (a `one` of `kind`) from its section `lines` (heading
/// first): a note saying where it is made from, a title, the section with headings moved up
/// and links rewritten, and where to find what every component of the kind shares.
fn page(key: &str, one: &str, name: &str, kind: &str, lines: &[&str]) -> Result<String, String> {
    let up = "../".repeat(PAGES_DIR.matches('/').count() + 2);
    let components = format!("{up}{COMPONENTS_PAGE}");
    let mut body = String::new();
    let mut fence: Option<&str> = None;
    for line in &lines[1..] {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            body.push_str(line);
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            body.push_str(line);
        } else if trimmed.starts_with(BEGIN) || trimmed == END {
            continue;
        } else if let Some(level) = heading_level(line) {
            let level = level.saturating_sub(2).max(2);
            let text = rewrite_links(line.trim_start_matches('#'), &up)
                .map_err(|error| format!("{key}: {error}"))?;
            body.push_str(&"#".repeat(level));
            body.push_str(&text);
        } else {
            let line = rewrite_links(line, &up).map_err(|error| format!("{key}: {error}"))?;
            body.push_str(&line);
        }
        body.push('\n');
    }
    let mut markdown = format!(
        "<!-- Made from the `{name}` section of website/components.md by \
         lib/tapio-topology/tests/reference.rs: edit that section, then run \
         TAPIO_BLESS=1 cargo test -p tapio-topology --test reference -->\n\
         # The `{name}` {one}\n\n{}",
        body.trim()
    );
    markdown.push_str("\n\n---\n\n");
    if kind == "sinks" {
        markdown.push_str(&format!(
            "Like every sink, it also takes `inputs` (required) and `buffer`: see \
             [options every sink has]({components}#options-every-sink-has).\n"
        ));
    } else if kind == "transforms" {
        markdown.push_str(&format!(
            "Like every transform, it also takes `inputs` (required): see \
             [transforms]({components}#transforms).\n"
        ));
    }
    markdown.push_str(&format!(
        "How `duration`, `size`, `template` and the other value types are written: \
         [value types]({components}#value-types). Every component on one page: \
         [components reference]({components}).\n"
    ));
    Ok(markdown)
}

/// `line` with the target of each inline link (`[text](target)`, outside code spans) made to
/// resolve from a page `up` below the site's root instead of from `website/components.md`:
/// `#fragment` links go to that page's fragment, relative paths are re-rooted, URLs are kept.
fn rewrite_links(line: &str, up: &str) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut in_code = false;
    while let Some(at) = rest.find(['`', ']']) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // Both characters looked for are one byte long.
        let (found, after) = from.split_at(1);
        out.push_str(found);
        rest = after;
        if found == "`" {
            in_code = !in_code;
            continue;
        }
        let Some(link) = after.strip_prefix('(').filter(|_| !in_code) else {
            continue;
        };
        let end = link
            .find(')')
            .ok_or_else(|| format!("a link is not closed on its line: {line}"))?;
        out.push('(');
        out.push_str(&rewrite_target(&link[..end], up)?);
        out.push(')');
        rest = &link[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One link target of `website/components.md`, made to resolve from a page `up` below the root.
fn rewrite_target(target: &str, up: &str) -> Result<String, String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Ok(target.to_owned());
    }
    if target.starts_with('#') {
        return Ok(format!("{up}{COMPONENTS_PAGE}{target}"));
    }
    let (dir, _) = COMPONENTS_PAGE
        .rsplit_once('/')
        .unwrap_or(("", COMPONENTS_PAGE));
    let mut parts: Vec<&str> = dir.split('/').filter(|part| !part.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts
                    .pop()
                    .ok_or_else(|| format!("the link `{target}` leaves the site"))?;
            }
            part => parts.push(part),
        }
    }
    Ok(format!("{up}{}", parts.join("/")))
}

#[cfg(test)]
mod tests;
