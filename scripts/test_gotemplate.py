"""Tests of scripts/gotemplate.py against what Go's text/template and Helm produce for the same
templates (the expected strings are Go's output). Run: python3 -m unittest scripts/test_gotemplate.py
"""

import random
import string
import unittest

import yaml

from gotemplate import Files, Renderer, TemplateError


def render(text, context=None, extra=None):
    templates = {"t": text}
    templates.update(extra or {})
    return Renderer(templates).render("t", context if context is not None else {})


class Trimming(unittest.TestCase):
    def test_markers_trim_whitespace_and_newlines_on_their_side_only(self):
        self.assertEqual(render("a  \n {{- 1 -}} \n  b"), "a1b")
        self.assertEqual(render("a \n{{- 1 }} \nb"), "a1 \nb")
        self.assertEqual(render("a \n{{ 1 -}} \nb"), "a \n1b")

    def test_comments_print_nothing(self):
        self.assertEqual(render("a {{- /* note */}} b"), "a b")


class Values(unittest.TestCase):
    def test_fields_variables_and_root(self):
        context = {"Values": {"a": {"b": "x"}}, "Release": {"Name": "r"}}
        self.assertEqual(render("{{ .Values.a.b }}-{{ $.Release.Name }}", context), "x-r")
        self.assertEqual(render("{{ $v := .Values.a }}{{ $v.b }}", context), "x")

    def test_printing_a_missing_value_is_an_error_naming_the_line(self):
        with self.assertRaisesRegex(TemplateError, r"t:2: the value printed here is missing"):
            render("\n{{ .Values.typo }}", {"Values": {}})

    def test_a_field_of_a_missing_map_is_an_error(self):
        with self.assertRaisesRegex(TemplateError, "nil pointer evaluating .b"):
            render("{{ .Values.a.b }}", {"Values": {}})

    def test_null_prints_empty_as_helm_does(self):
        self.assertEqual(render("[{{ .Values.a }}]", {"Values": {"a": None}}), "[]")

    def test_booleans_print_as_go_does(self):
        self.assertEqual(render("{{ true }} {{ .x }}", {"x": False}), "true false")


class Control(unittest.TestCase):
    def test_if_else_if_else_with_go_truth(self):
        template = "{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}"
        self.assertEqual(render(template, {"a": 1, "b": 1}), "A")
        self.assertEqual(render(template, {"a": 0, "b": "x"}), "B")
        for falsy in (0, "", [], {}, None, False):
            self.assertEqual(render(template, {"a": falsy, "b": falsy}), "C", falsy)

    def test_with_sets_dot_and_its_else(self):
        self.assertEqual(render("{{ with .a }}{{ .b }}{{ end }}", {"a": {"b": 2}}), "2")
        self.assertEqual(render("{{ with .a }}x{{ else }}none{{ end }}", {"a": ""}), "none")

    def test_range_over_lists_and_maps_in_key_order(self):
        self.assertEqual(render("{{ range .l }}<{{ . }}>{{ end }}", {"l": [1, 2]}), "<1><2>")
        keys = random.sample(string.ascii_lowercase, 8)
        context = {"m": {key: key.upper() for key in keys}}
        expected = "".join(f"{key}={key.upper()};" for key in sorted(keys))
        self.assertEqual(render("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", context), expected)
        self.assertEqual(render("{{ range .l }}x{{ else }}empty{{ end }}", {"l": []}), "empty")

    def test_variables_are_scoped_to_their_block(self):
        with self.assertRaisesRegex(TemplateError, "undefined variable"):
            render("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}")
        self.assertEqual(render("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}"), "2")

    def test_unclosed_blocks_and_unknown_actions_are_errors(self):
        for bad in ("{{ if .a }}x", "{{ end }}", "{{ template \"x\" }}", "{{ nosuch 1 }}", "{{ .a"):
            with self.assertRaises(TemplateError, msg=bad):
                render(bad, {"a": 1})


class Functions(unittest.TestCase):
    def test_pipes_pass_the_value_as_the_last_argument(self):
        self.assertEqual(render('{{ .a | default "d" }} {{ .b | default "d" }}', {"a": "", "b": "v"}), "d v")
        self.assertEqual(render('{{ printf "%s-%d" "a" 3 | quote }}'), '"a-3"')
        self.assertEqual(render('{{ "abcdef" | trunc 3 }}{{ "x.yaml" | trimSuffix ".yaml" }}'), "abcx")

    def test_to_yaml_and_nindent_give_yaml_that_reads_back(self):
        value = {"b": [1, {"c": "two words"}], "a": True}
        out = render("spec:{{ toYaml .v | nindent 2 }}", {"v": value})
        self.assertEqual(out, "spec:\n  a: true\n  b:\n  - 1\n  - c: two words")
        self.assertEqual(yaml.safe_load(out), {"spec": value})

    def test_quote_escapes(self):
        self.assertEqual(render("{{ quote .s }}", {"s": 'a "b" \\c'}), '"a \\"b\\" \\\\c"')

    def test_include_define_and_tpl(self):
        helpers = {"_h.tpl": '{{- define "name" -}}{{ .n }}-app{{- end }}'}
        self.assertEqual(render('[{{ include "name" . }}]', {"n": "x"}, helpers), "[x-app]")
        self.assertEqual(render('{{ tpl .t . }}', {"t": '{{ include "name" . }}!', "n": "y"}, helpers), "y-app!")

    def test_required_fails_on_missing_and_empty_but_not_on_false(self):
        with self.assertRaisesRegex(TemplateError, "set kafka.brokers"):
            render('{{ required "set kafka.brokers" .k }}', {"k": ""})
        self.assertEqual(render('{{ required "x" .k }}', {"k": False}), "false")

    def test_eq_and_or_not(self):
        self.assertEqual(render('{{ if eq .m "a" "b" }}y{{ end }}', {"m": "b"}), "y")
        self.assertEqual(render('{{ if and .a (not .b) }}y{{ end }}', {"a": 1, "b": 0}), "y")
        self.assertEqual(render('{{ or .a .b }}', {"a": "", "b": "z"}), "z")

    def test_files_get(self):
        context = {"Files": Files({"files/a.toml": "x = 1\n"})}
        self.assertEqual(render('{{ .Files.Get "files/a.toml" }}', context), "x = 1\n")
        with self.assertRaisesRegex(TemplateError, "no file 'files/b.toml'"):
            render('{{ .Files.Get "files/b.toml" }}', context)


if __name__ == "__main__":
    unittest.main()
