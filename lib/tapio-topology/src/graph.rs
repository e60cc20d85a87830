//! The pipeline as a graph: components are nodes, `inputs` become edges from an upstream output
//! (`name` or `name.output`) to the reading component. Resolving the graph checks what only the
//! whole file can show (unknown inputs, globs that match nothing, cycles, sinks with no input,
//! sources that reach no sink) and renders it for `tapio graph`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use tapio_event::metrics::ComponentKind;

use crate::diagnostic::{Diagnostics, Severity, did_you_mean};

/// One entry of a component's `inputs`, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub text: String,
    pub line: usize,
}

/// A component as the graph sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub name: String,
    pub kind: ComponentKind,
    pub type_name: String,
    /// Outputs besides the default one, such as `errors`.
    pub named_outputs: Vec<String>,
    pub inputs: Vec<InputRef>,
    /// Line of the component's table header.
    pub line: usize,
}

/// Events flow from `from`'s `output` (the default one when `None`) into `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: usize,
    pub output: Option<String>,
    pub to: usize,
}

/// The resolved DAG.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<Edge>,
}

fn section(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Source => "sources",
        ComponentKind::Transform => "transforms",
        ComponentKind::Sink => "sinks",
    }
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

impl Graph {
    /// Resolves every node's inputs into edges and checks the graph, recording problems in `diags`.
    pub fn resolve(nodes: Vec<GraphNode>, diags: &mut Diagnostics<'_>) -> Graph {
        let mut edges = BTreeSet::new();
        for (to, node) in nodes.iter().enumerate() {
            let key = format!("{}.{}.inputs", section(node.kind), node.name);
            if node.kind != ComponentKind::Source && node.inputs.is_empty() {
                diags.push(
                    Severity::Error,
                    Some(node.line),
                    key.clone(),
                    format!(
                        "a {} needs inputs: add inputs = [\"<component>\"]",
                        node.kind.as_str()
                    ),
                );
            }
            for input in &node.inputs {
                match resolve_input(&nodes, to, &input.text) {
                    Ok(found) => edges.extend(found),
                    Err(message) => {
                        diags.push(Severity::Error, Some(input.line), key.clone(), message)
                    }
                }
            }
        }
        let graph = Graph {
            nodes,
            edges: edges.into_iter().collect(),
        };
        graph.check_cycles(diags);
        graph.check_reachability(diags);
        graph
    }

    /// Index of the component called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Components reading `from`'s `output` (its default output when `None`).
    pub fn consumers<'a>(
        &'a self,
        from: usize,
        output: Option<&'a str>,
    ) -> impl Iterator<Item = usize> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.from == from && e.output.as_deref() == output)
            .map(|e| e.to)
    }

    fn check_cycles(&self, diags: &mut Diagnostics<'_>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        let mut reported = BTreeSet::new();
        for start in 0..self.nodes.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative depth-first search; `path` holds the nodes on the current branch.
            let mut path = vec![start];
            let mut next_edge = vec![0usize];
            marks[start] = Mark::OnPath;
            while let Some(&node) = path.last() {
                let successors: Vec<usize> = self
                    .edges
                    .iter()
                    .filter(|e| e.from == node)
                    .map(|e| e.to)
                    .collect();
                let index = next_edge.last_mut().expect("parallel to path");
                if let Some(&next) = successors.get(*index) {
                    *index += 1;
                    match marks[next] {
                        Mark::New => {
                            marks[next] = Mark::OnPath;
                            path.push(next);
                            next_edge.push(0);
                        }
                        Mark::OnPath => {
                            let from = path.iter().position(|&n| n == next).expect("on path");
                            let cycle: Vec<usize> = path[from..].to_vec();
                            let first = *cycle.iter().min().expect("non-empty");
                            if reported.insert(first) {
                                let mut names: Vec<&str> =
                                    cycle.iter().map(|&n| self.nodes[n].name.as_str()).collect();
                                names.push(&self.nodes[next].name);
                                let head = &self.nodes[next];
                                diags.push(
                                    Severity::Error,
                                    Some(head.line),
                                    format!("{}.{}.inputs", section(head.kind), head.name),
                                    format!("cycle: {}", names.join(" -> ")),
                                );
                            }
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    path.pop();
                    next_edge.pop();
                }
            }
        }
    }

    fn check_reachability(&self, diags: &mut Diagnostics<'_>) {
        for (start, node) in self.nodes.iter().enumerate() {
            if node.kind != ComponentKind::Source {
                continue;
            }
            let mut seen = vec![false; self.nodes.len()];
            let mut stack = vec![start];
            let mut reaches_sink = false;
            while let Some(current) = stack.pop() {
                if std::mem::replace(&mut seen[current], true) {
                    continue;
                }
                reaches_sink |= self.nodes[current].kind == ComponentKind::Sink;
                stack.extend(
                    self.edges
                        .iter()
                        .filter(|e| e.from == current)
                        .map(|e| e.to),
                );
            }
            if !reaches_sink {
                diags.push(
                    Severity::Warning,
                    Some(node.line),
                    format!("sources.{}", node.name),
                    "reaches no sink: its events go nowhere",
                );
            }
        }
    }

    /// Graphviz DOT, for `tapio graph`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph tapio {\n  rankdir=LR;\n");
        for node in &self.nodes {
            let shape = match node.kind {
                ComponentKind::Source => "invhouse",
                ComponentKind::Transform => "box",
                ComponentKind::Sink => "house",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [shape={shape}, label=\"{}\\n({})\"];",
                node.name, node.name, node.type_name
            );
        }
        for edge in &self.edges {
            let label = edge
                .output
                .as_ref()
                .map(|o| format!(" [label=\"{o}\"]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{label};",
                self.nodes[edge.from].name, self.nodes[edge.to].name
            );
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart, for `tapio graph --format mermaid`.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (index, node) in self.nodes.iter().enumerate() {
            let (open, close) = match node.kind {
                ComponentKind::Source => ("[/", "/]"),
                ComponentKind::Transform => ("[", "]"),
                ComponentKind::Sink => ("[(", ")]"),
            };
            let _ = writeln!(
                out,
                "  n{index}{open}\"{} ({})\"{close}",
                node.name, node.type_name
            );
        }
        for edge in &self.edges {
            match &edge.output {
                Some(output) => {
                    let _ = writeln!(out, "  n{} -- {output} --> n{}", edge.from, edge.to);
                }
                None => {
                    let _ = writeln!(out, "  n{} --> n{}", edge.from, edge.to);
                }
            }
        }
        out
    }
}

/// The edges one `inputs` entry of node `to` stands for.
fn resolve_input(nodes: &[GraphNode], to: usize, text: &str) -> Result<Vec<Edge>, String> {
    let readable = |n: &GraphNode| n.kind != ComponentKind::Sink;
    if is_glob(text) {
        let pattern =
            glob::Pattern::new(text).map_err(|e| format!("invalid pattern \"{text}\": {e}"))?;
        let found: Vec<Edge> = nodes
            .iter()
            .enumerate()
            .filter(|(from, n)| *from != to && readable(n) && pattern.matches(&n.name))
            .map(|(from, _)| Edge {
                from,
                output: None,
                to,
            })
            .collect();
        if found.is_empty() {
            return Err(format!("pattern \"{text}\" matches no source or transform"));
        }
        return Ok(found);
    }
    let (name, output) = match text.split_once('.') {
        Some((name, output)) => (name, Some(output)),
        None => (text, None),
    };
    let Some(from) = nodes.iter().position(|n| n.name == name) else {
        let outputs = nodes
            .iter()
            .filter(|n| readable(n))
            .map(|n| n.name.as_str());
        let hint = did_you_mean(name, outputs)
            .map(|n| format!("; did you mean \"{n}\"?"))
            .unwrap_or_default();
        return Err(format!("no component named \"{name}\"{hint}"));
    };
    let upstream = &nodes[from];
    if !readable(upstream) {
        return Err(format!(
            "\"{name}\" is a sink; sinks have no output to read"
        ));
    }
    if let Some(output) = output
        && !upstream.named_outputs.iter().any(|o| o == output)
    {
        let available = if upstream.named_outputs.is_empty() {
            "it has only its default output".to_owned()
        } else {
            format!("its named outputs: {}", upstream.named_outputs.join(", "))
        };
        return Err(format!(
            "\"{name}\" has no output \"{output}\"; {available}"
        ));
    }
    Ok(vec![Edge {
        from,
        output: output.map(str::to_owned),
        to,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: ComponentKind, inputs: &[&str], line: usize) -> GraphNode {
        GraphNode {
            name: name.into(),
            kind,
            type_name: "t".into(),
            named_outputs: if kind == ComponentKind::Source {
                vec!["errors".into()]
            } else {
                vec![]
            },
            inputs: inputs
                .iter()
                .map(|t| InputRef {
                    text: t.to_string(),
                    line,
                })
                .collect(),
            line,
        }
    }

    fn resolve(nodes: Vec<GraphNode>) -> (Graph, Vec<String>) {
        let text = "\n".repeat(50);
        let mut diags = Diagnostics::new("t.toml", &text);
        let graph = Graph::resolve(nodes, &mut diags);
        (graph, diags.items.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn globs_expand_to_every_match_but_self() {
        let (graph, problems) = resolve(vec![
            node("node_a", ComponentKind::Source, &[], 1),
            node("node_b", ComponentKind::Source, &[], 3),
            node("nodes", ComponentKind::Transform, &["node*"], 5),
            node("out", ComponentKind::Sink, &["nodes", "node_a.errors"], 7),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let into_nodes: Vec<usize> = graph
            .edges
            .iter()
            .filter(|e| e.to == 2)
            .map(|e| e.from)
            .collect();
        assert_eq!(into_nodes, vec![0, 1]);
        assert_eq!(
            graph.consumers(0, Some("errors")).collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn unresolved_inputs_name_the_line_and_suggest() {
        let (_, problems) = resolve(vec![
            node("node", ComponentKind::Source, &[], 1),
            node(
                "out",
                ComponentKind::Sink,
                &["nod", "zz*", "node.oops", "other"],
                14,
            ),
            node("other", ComponentKind::Sink, &[], 20),
        ]);
        assert!(
            problems.contains(
                &"t.toml:14: sinks.out.inputs: no component named \"nod\"; did you mean \"node\"?"
                    .to_string()
            ),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("pattern \"zz*\" matches no source or transform"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"node\" has no output \"oops\"; its named outputs: errors"))
        );
        assert!(problems.iter().any(|p| p.contains("\"other\" is a sink")));
        assert!(problems.contains(&"t.toml:20: sinks.other.inputs: a sink needs inputs: add inputs = [\"<component>\"]".to_string()));
    }

    #[test]
    fn cycles_are_printed_once() {
        let (_, problems) = resolve(vec![
            node("src", ComponentKind::Source, &[], 1),
            node("a", ComponentKind::Transform, &["src", "c"], 3),
            node("b", ComponentKind::Transform, &["a"], 5),
            node("c", ComponentKind::Transform, &["b"], 7),
            node("self", ComponentKind::Transform, &["self"], 9),
            node("out", ComponentKind::Sink, &["c", "self"], 11),
        ]);
        let cycles: Vec<_> = problems.iter().filter(|p| p.contains("cycle")).collect();
        assert_eq!(cycles.len(), 2, "{problems:?}");
        assert!(cycles[0].ends_with("cycle: a -> b -> c -> a"), "{cycles:?}");
        assert!(cycles[1].ends_with("cycle: self -> self"), "{cycles:?}");
    }

    #[test]
    fn warns_about_sources_that_reach_no_sink() {
        let (_, problems) = resolve(vec![
            node("lonely", ComponentKind::Source, &[], 2),
            node("used", ComponentKind::Source, &[], 4),
            node("out", ComponentKind::Sink, &["used"], 6),
        ]);
        assert_eq!(
            problems,
            vec!["t.toml:2: warning: sources.lonely: reaches no sink: its events go nowhere"]
        );
    }

    #[test]
    fn renders_dot_and_mermaid() {
        let (graph, _) = resolve(vec![
            node("in", ComponentKind::Source, &[], 1),
            node("out", ComponentKind::Sink, &["in", "in.errors"], 3),
        ]);
        let dot = graph.to_dot();
        assert!(dot.contains("\"in\" -> \"out\";"), "{dot}");
        assert!(
            dot.contains("\"in\" -> \"out\" [label=\"errors\"];"),
            "{dot}"
        );
        let mermaid = graph.to_mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert!(
            mermaid.contains("n0 --> n1") && mermaid.contains("n0 -- errors --> n1"),
            "{mermaid}"
        );
    }
}
