//! `${VAR}` and `${VAR:-default}` in `tapio.toml`, replaced before the TOML is parsed (so a
//! variable can hold any value: a number, a list) and skipped inside comments (so a commented-out
//! line never fails on a variable nobody set). `$$` writes a literal `$`.

/// A `${VAR}` with no value and no default, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable {
    pub line: usize,
    pub name: String,
}

/// Where the scanner is in the TOML text, so comments can be told from `#` inside strings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Code,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// Replaces variables using `lookup`; every missing one is reported (and replaced by nothing).
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<MissingVariable>) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut context = Context::Code;
    let mut line = 1;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        if c == '$' && context != Context::Comment {
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
                continue;
            }
            if let Some((body, close)) = after.strip_prefix('{').and_then(|body| {
                Some((body, body.find('}').filter(|&i| !body[..i].contains('\n'))?))
            }) {
                let expression = &body[..close];
                let (name, default) = match expression.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expression, None),
                };
                match lookup(name).filter(|v| default.is_none() || !v.is_empty()) {
                    Some(value) => out.push_str(&value),
                    None => match default {
                        Some(default) => out.push_str(default),
                        None => missing.push(MissingVariable {
                            line,
                            name: name.to_owned(),
                        }),
                    },
                }
                rest = &body[close + 1..];
                continue;
            }
        }
        let (next, width) = step(context, rest);
        context = next;
        line += rest[..width].matches('\n').count();
        out.push_str(&rest[..width]);
        rest = &rest[width..];
    }
    (out, missing)
}

/// The context after the token at the start of `rest`, and the token's length in bytes.
/// Escapes and triple quotes are single tokens so they never look like a string's end.
fn step(context: Context, rest: &str) -> (Context, usize) {
    let c = rest.chars().next().unwrap_or('\n');
    let width = c.len_utf8();
    let escape = || 1 + rest[1..].chars().next().map_or(0, char::len_utf8);
    match context {
        Context::Code => match c {
            '#' => (Context::Comment, 1),
            '"' if rest.starts_with("\"\"\"") => (Context::MultiBasic, 3),
            '\'' if rest.starts_with("'''") => (Context::MultiLiteral, 3),
            '"' => (Context::Basic, 1),
            '\'' => (Context::Literal, 1),
            _ => (Context::Code, width),
        },
        Context::Comment if c == '\n' => (Context::Code, 1),
        Context::Basic | Context::MultiBasic if c == '\\' => (context, escape()),
        Context::Basic if c == '"' || c == '\n' => (Context::Code, 1),
        Context::Literal if c == '\'' || c == '\n' => (Context::Code, 1),
        Context::MultiBasic if rest.starts_with("\"\"\"") => (Context::Code, 3),
        Context::MultiLiteral if rest.starts_with("'''") => (Context::Code, 3),
        _ => (context, width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("127.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "RATE" => Some("500".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_defaults() {
        let (out, missing) = interpolate(
            "a = \"${HOST}:${PORT:-9092}\"\nrate = ${RATE}\nb = \"${EMPTY:-fallback}\"\nc = \"${EMPTY}\"",
            env,
        );
        assert_eq!(
            out,
            "a = \"127.0.0.1:9092\"\nrate = 500\nb = \"fallback\"\nc = \"\""
        );
        assert!(missing.is_empty());
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let (_, missing) = interpolate("a = \"${NOPE}\"\n\nb = \"${ALSO_NOPE}\"", env);
        assert_eq!(
            missing,
            vec![
                MissingVariable {
                    line: 1,
                    name: "NOPE".into()
                },
                MissingVariable {
                    line: 3,
                    name: "ALSO_NOPE".into()
                },
            ]
        );
    }

    #[test]
    fn skips_comments_but_not_hashes_in_strings() {
        let text = "# uses ${NOPE}\na = \"#${HOST}\" # ${NOPE}\nb = '''\n# ${HOST}\n'''\nc = \"\\\"${HOST}\"";
        let (out, missing) = interpolate(text, env);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(
            out,
            "# uses ${NOPE}\na = \"#127.0.0.1\" # ${NOPE}\nb = '''\n# 127.0.0.1\n'''\nc = \"\\\"127.0.0.1\""
        );
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        let (out, missing) = interpolate("a = \"$${HOST} costs $$5\"", env);
        assert_eq!(out, "a = \"${HOST} costs $5\"");
        assert!(missing.is_empty());
    }
}
