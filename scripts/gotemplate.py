"""A renderer for the part of Go's text/template language, and of Helm's functions, that the
chart in distribution/helm/tapio uses.

Helm itself is in none of the package registries this project can install from, so CI renders
the chart with this module (scripts/check-kubernetes.py) and validates what comes out. It follows
Go's semantics where the chart relies on them: `{{-`/`-}}` trimming, pipelines passing their value
as the last argument, Go's truth (false, 0, nil and empty are false), `range` over maps in key
order, variables scoped to their block. It is stricter than Helm in one way, on purpose: printing
a value that is missing (a misspelt `.Values` path) is an error instead of an empty string.
Anything outside the subset (an unknown function, `template`, `block`, `break`) is an error too,
never silently passed through.
"""

import base64
import re

import yaml


class TemplateError(Exception):
    """A template that cannot be parsed or rendered, with the template's name and what failed."""


class Files:
    """`.Files` of a chart: `.Files.Get "path"` reads a file below the chart's directory."""

    def __init__(self, files):
        self._files = files

    def Get(self, path):  # noqa: N802 (Helm's name)
        if path not in self._files:
            raise TemplateError(f".Files.Get: the chart has no file {path!r}")
        return self._files[path]


# An action: `{{`, an optional trim marker, the body, an optional trim marker, `}}`. Go requires a
# space after `{{-` and before `-}}`; a comment may take the place of the body.
ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.DOTALL)
TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+)
    | (?P<declare>:=)
    | (?P<assign>=)
    | (?P<pipe>\|)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"if", "else", "end", "range", "with", "define"}


def _tokenize(source, where):
    tokens, position = [], 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = TOKEN.match(source, position)
        if not match:
            raise TemplateError(f"{where}: cannot read {source[position:].strip()!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _split_actions(text, name):
    """The template as ("text", str) and ("action", body) pieces, trim markers applied."""
    pieces, position = [], 0
    for match in ACTION.finditer(text):
        before = text[position : match.start()]
        if match.group(1):
            before = before.rstrip()
        pieces.append(("text", before))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            line = text.count("\n", 0, match.start()) + 1
            pieces.append(("action", body, f"{name}:{line}"))
        position = match.end()
        if match.group(3):
            rest = text[position:]
            position += len(rest) - len(rest.lstrip())
    tail = text[position:]
    if "{{" in tail:
        raise TemplateError(f"{name}: an unclosed {{{{ action")
    pieces.append(("text", tail))
    return pieces


class _Parser:
    """Turns the pieces of one template into a tree of nodes, collecting `define`d templates."""

    def __init__(self, pieces, name, defines):
        self.pieces, self.index, self.name, self.defines = pieces, 0, name, defines

    def parse(self):
        nodes, stop = self._block()
        if stop is not None:
            raise TemplateError(f"{stop[1]}: {{{{ {stop[0]} }}}} without an open block")
        return nodes

    def _block(self):
        """Nodes up to an `else` or `end` (returned with its location) or the end of input."""
        nodes = []
        while self.index < len(self.pieces):
            piece = self.pieces[self.index]
            self.index += 1
            if piece[0] == "text":
                if piece[1]:
                    nodes.append(("text", piece[1]))
                continue
            body, where = piece[1], piece[2]
            tokens = _tokenize(body, where)
            keyword = tokens[0][1] if tokens and tokens[0][0] == "ident" else None
            if keyword in ("else", "end"):
                return nodes, (keyword, where, tokens[1:])
            if keyword in ("if", "with", "range"):
                nodes.append(self._control(keyword, tokens[1:], where))
            elif keyword == "define":
                if len(tokens) != 2 or tokens[1][0] != "string":
                    raise TemplateError(f"{where}: define takes one quoted name")
                body_nodes, stop = self._block()
                if stop is None or stop[0] != "end":
                    raise TemplateError(f"{where}: define without end")
                self.defines[_unquote(tokens[1][1])] = body_nodes
            elif keyword in ("template", "block", "break", "continue"):
                raise TemplateError(f"{where}: {keyword} is not supported by this renderer")
            else:
                nodes.append(("action", _parse_pipeline(tokens, where), where))
        return nodes, None

    def _control(self, keyword, tokens, where):
        branches, otherwise = [(_parse_pipeline(tokens, where), None)], []
        body, stop = self._block()
        branches[0] = (branches[0][0], body)
        while True:
            if stop is None:
                raise TemplateError(f"{where}: {keyword} without end")
            stop_keyword, stop_where, rest = stop
            if stop_keyword == "end":
                break
            if rest and rest[0] == ("ident", keyword) and keyword in ("if", "with"):
                condition = _parse_pipeline(rest[1:], stop_where)
                body, stop = self._block()
                branches.append((condition, body))
                continue
            if rest:
                raise TemplateError(f"{stop_where}: unexpected {rest} after else")
            otherwise, stop = self._block()
            if stop is None or stop[0] != "end" or stop[2]:
                raise TemplateError(f"{where}: {keyword} ... else without end")
            break
        return (keyword, branches, otherwise, where)


def _unquote(token):
    if token.startswith("`"):
        return token[1:-1]
    return bytes(token[1:-1], "utf-8").decode("unicode_escape")


def _parse_pipeline(tokens, where):
    """A pipeline: optional `$a[, $b] :=` or `$a =`, then commands separated by `|`."""
    declare, assign = [], None
    for index, (kind, _) in enumerate(tokens):
        if kind in ("declare", "assign"):
            names = [value for k, value in tokens[:index] if k == "variable"]
            if not names or any(k not in ("variable", "comma") for k, _ in tokens[:index]):
                raise TemplateError(f"{where}: bad variable declaration")
            declare, assign = names, kind
            tokens = tokens[index + 1 :]
            break
    commands, current, depth = [], [], 0
    for token in tokens:
        if token[0] == "open":
            depth += 1
        elif token[0] == "close":
            depth -= 1
        if token[0] == "pipe" and depth == 0:
            commands.append(_parse_command(current, where))
            current = []
        else:
            current.append(token)
    commands.append(_parse_command(current, where))
    return {"declare": declare, "assign": assign, "commands": commands}


def _parse_command(tokens, where):
    operands, index = [], 0
    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "open":
            depth, end = 1, index + 1
            while end < len(tokens) and depth:
                depth += {"open": 1, "close": -1}.get(tokens[end][0], 0)
                end += 1
            if depth:
                raise TemplateError(f"{where}: unbalanced parentheses")
            operands.append(("pipeline", _parse_pipeline(tokens[index + 1 : end - 1], where)))
            index = end
            continue
        if kind in ("string", "raw"):
            operands.append(("literal", _unquote(value)))
        elif kind == "number":
            operands.append(("literal", int(value)))
        elif kind == "ident" and value in ("true", "false"):
            operands.append(("literal", value == "true"))
        elif kind == "ident" and value == "nil":
            operands.append(("literal", None))
        elif kind in ("ident", "field", "variable"):
            operands.append((kind, value))
        else:
            raise TemplateError(f"{where}: unexpected {value!r}")
        index += 1
    if not operands:
        raise TemplateError(f"{where}: an empty command")
    return operands


# A value that is not there (a key absent from a map), told apart from YAML's null.
MISSING = object()
# No value piped into a command (the first command of a pipeline).
NOT_PIPED = object()


def truth(value):
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, (bool, int, float, str, list, dict)):
        return bool(value)
    return True


def _field(value, path, where):
    for name in path:
        if value is None or value is MISSING:
            raise TemplateError(f"{where}: nil pointer evaluating .{name}")
        if isinstance(value, dict):
            value = value.get(name, MISSING)
        elif hasattr(value, name):
            value = getattr(value, name)
        else:
            raise TemplateError(f"{where}: can't evaluate field {name} in {type(value).__name__}")
    return value


def to_yaml(value):
    """Helm's toYaml: block style, keys sorted, no trailing newline."""
    if value is MISSING or value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(spaces, text):
    return "\n".join((" " * spaces + line) if line else line for line in str(text).split("\n"))


def _printf(pattern, *args):
    converted = re.sub(r"%v", "%s", pattern)
    return converted % tuple("" if a is MISSING else a for a in args)


def _required(message, value=MISSING):
    """Sprig's required: nil and the empty string are missing; false and 0 are values."""
    if value is MISSING or value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message):
    raise TemplateError(message)


class Renderer:
    """Renders the templates of one chart; `define`s from every template are shared, as in Helm."""

    def __init__(self, templates):
        self.defines, self.trees = {}, {}
        for name, text in templates.items():
            self.trees[name] = _Parser(_split_actions(text, name), name, self.defines).parse()
        self.functions = {
            "include": self._include,
            "tpl": self._tpl,
            "toYaml": to_yaml,
            "indent": _indent,
            "nindent": lambda spaces, text: "\n" + _indent(spaces, text),
            "quote": lambda value: '"' + _text(value).replace("\\", "\\\\").replace('"', '\\"') + '"',
            "default": lambda fallback, value=MISSING: value if truth(value) else fallback,
            "required": _required,
            "fail": _fail,
            "empty": lambda value=MISSING: not truth(value),
            "eq": lambda first, *others: any(first == other for other in others),
            "ne": lambda first, second: first != second,
            "not": lambda value: not truth(value),
            "and": lambda *values: next((v for v in values if not truth(v)), values[-1]),
            "or": lambda *values: next((v for v in values if truth(v)), values[-1]),
            "printf": _printf,
            "trunc": lambda length, text: _text(text)[:length],
            "trimSuffix": lambda suffix, text: _text(text).removesuffix(suffix),
            "b64enc": lambda text: base64.b64encode(_text(text).encode()).decode(),
            "toString": _text,
        }

    def render(self, name, context):
        """The text of template `name` with `context` as its dot (and `$`)."""
        return self._run(self.trees[name], context, [{"$": context}])

    def _include(self, name, context):
        if name not in self.defines:
            raise TemplateError(f"include: no template named {name!r}")
        return self._run(self.defines[name], context, [{"$": context}])

    def _tpl(self, text, context):
        renderer = Renderer({"tpl": text})
        renderer.defines.update({k: v for k, v in self.defines.items() if k not in renderer.defines})
        return renderer.render("tpl", context)

    def _run(self, nodes, dot, scopes):
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                value = self._pipeline(node[1], dot, scopes, node[2])
                if not node[1]["declare"]:
                    if value is MISSING:
                        raise TemplateError(f"{node[2]}: the value printed here is missing")
                    out.append(_text(value))
            else:
                out.append(self._control(node, dot, scopes))
        return "".join(out)

    def _control(self, node, dot, scopes):
        keyword, branches, otherwise, where = node
        for condition, body in branches:
            inner = scopes + [{}]
            value = self._pipeline(condition, dot, inner, where)
            if keyword == "range":
                if not truth(value):
                    break
                return self._range(condition, value, body, dot, inner, where)
            if truth(value):
                return self._run(body, value if keyword == "with" else dot, inner)
        return self._run(otherwise, dot, scopes + [{}])

    def _range(self, condition, value, body, dot, scopes, where):
        names = condition["declare"]
        if isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif isinstance(value, int):
            items = [(i, i) for i in range(value)]
        else:
            raise TemplateError(f"{where}: range can't iterate over {type(value).__name__}")
        out = []
        for key, element in items:
            scope = {}
            if len(names) == 1:
                scope[names[0]] = element
            elif len(names) == 2:
                scope[names[0]], scope[names[1]] = key, element
            out.append(self._run(body, element, scopes + [scope]))
        return "".join(out)

    def _pipeline(self, pipeline, dot, scopes, where):
        value = NOT_PIPED
        for command in pipeline["commands"]:
            value = self._command(command, dot, scopes, where, value)
        names = pipeline["declare"]
        if pipeline["assign"] == "declare" and len(names) == 1:
            scopes[-1][names[0]] = value
        elif pipeline["assign"] == "assign":
            for scope in reversed(scopes):
                if names[0] in scope:
                    scope[names[0]] = value
                    break
            else:
                raise TemplateError(f"{where}: undefined variable {names[0]}")
        return value

    def _command(self, operands, dot, scopes, where, piped):
        head, args = operands[0], operands[1:]
        arguments = [self._operand(operand, dot, scopes, where) for operand in args]
        if piped is not NOT_PIPED:
            arguments.append(piped)
        if head[0] == "ident":
            function = self.functions.get(head[1])
            if function is None:
                raise TemplateError(f"{where}: function {head[1]!r} is not defined")
            try:
                return function(*arguments)
            except TypeError as error:
                raise TemplateError(f"{where}: {head[1]}: {error}") from error
        value = self._operand(head, dot, scopes, where)
        if callable(value):
            return value(*arguments)
        if arguments:
            raise TemplateError(f"{where}: {head[1]} is not a function but is given arguments")
        return value

    def _operand(self, operand, dot, scopes, where):
        kind, value = operand
        if kind == "literal":
            return value
        if kind == "pipeline":
            return self._pipeline(value, dot, scopes, where)
        if kind == "field":
            return dot if value == "." else _field(dot, value[1:].split("."), where)
        if kind == "variable":
            name, *path = value.split(".")
            for scope in reversed(scopes):
                if name in scope:
                    return _field(scope[name], path, where)
            raise TemplateError(f"{where}: undefined variable {name}")
        function = self.functions.get(value)
        if function is None:
            raise TemplateError(f"{where}: function {value!r} is not defined")
        return function()


def _text(value):
    if value is MISSING or value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"printing a {type(value).__name__} needs toYaml: {value!r}")
    return str(value)
