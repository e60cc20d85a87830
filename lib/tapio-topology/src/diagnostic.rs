//! Config problems as users read them: `file:line: key: message`, every one at once.

use std::fmt;
use std::ops::Range;

/// How bad a config problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The pipeline can run, but probably not as meant (a source that reaches no sink).
    Warning,
    /// The config cannot run.
    Error,
}

/// One config problem, located by file, line and dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based; `None` when the problem is about the file as a whole.
    pub line: Option<usize>,
    /// Dotted path such as `transforms.enrich.inputs`; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.severity == Severity::Warning {
            write!(f, ": warning")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics for one file, turning byte spans into line numbers.
#[derive(Debug)]
pub struct Diagnostics<'a> {
    file: &'a str,
    text: &'a str,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    /// A collector for `text`, read from `file`.
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Diagnostics {
            file,
            text,
            items: Vec::new(),
        }
    }

    /// The 1-based line of byte offset `at`.
    pub fn line_of(&self, at: usize) -> usize {
        self.text.as_bytes()[..at.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The file line of line `inner` (1-based) of the string value at `span`. TOML drops the
    /// newline right after a multi-line string's opening delimiter, so such a string's first
    /// line is the file's next one.
    pub fn line_inside(&self, span: &Range<usize>, inner: usize) -> usize {
        let value = self.text.get(span.clone()).unwrap_or("");
        let after_delimiter = ["'''", "\"\"\""]
            .iter()
            .find_map(|delimiter| value.strip_prefix(delimiter));
        let skipped =
            after_delimiter.is_some_and(|rest| rest.starts_with('\n') || rest.starts_with("\r\n"));
        self.line_of(span.start) + inner.saturating_sub(1) + usize::from(skipped)
    }

    /// Records an error at `span` (a byte range of the file, if known).
    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            span.map(|s| self.line_of(s.start)),
            key,
            message,
        );
    }

    /// Records a warning at `span`.
    pub fn warning(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            span.map(|s| self.line_of(s.start)),
            key,
            message,
        );
    }

    /// Records a problem at a known line.
    pub fn push(
        &mut self,
        severity: Severity,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Whether any error (not just warnings) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Suggests the closest of `candidates` to a mistyped `name`, if one is close enough.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_a_compiler() {
        let mut d = Diagnostics::new("my.toml", "a\nb\nc = 1\n");
        d.error(Some(4..5), "sinks.out.inputs", "no component named \"nod\"");
        d.warning(None, "sources.x", "reaches no sink");
        assert_eq!(
            d.items[0].to_string(),
            "my.toml:3: sinks.out.inputs: no component named \"nod\""
        );
        assert_eq!(
            d.items[1].to_string(),
            "my.toml: warning: sources.x: reaches no sink"
        );
        assert!(d.has_errors());
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("nod", ["node", "sink"]), Some("node"));
        assert_eq!(did_you_mean("zzz", ["node", "sink"]), None);
    }
}
