"""Sandboxed templates: checked at save time with line and message, rendered within limits."""

from __future__ import annotations

import pytest

from actions.templates import (
    TemplateEngine,
    TemplateLimits,
    TemplateRenderError,
    check_template,
    has_template_syntax,
)

CONTEXT = {
    "automation": {"name": "etl keeps failing", "id": "a1"},
    "event": {"event": "tripwire.flow-run.Failed", "resource": {"tripwire.resource.id": "run-1"}},
    "events": [{"id": "e1"}, {"id": "e2"}, {"id": "e3"}],
    "labels": {"related:deployment:tripwire.resource.id": "etl"},
    "firing": {"id": "f1", "kind": "triggered"},
}


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine(TemplateLimits(timeout_s=0.5, max_output_bytes=2000, max_range=500))


@pytest.mark.parametrize(
    ("source", "output"),
    [
        pytest.param("plain text", "plain text", id="no-template-syntax"),
        pytest.param("{{ automation.name }}", "etl keeps failing", id="attribute"),
        pytest.param("{{ labels['related:deployment:tripwire.resource.id'] }}", "etl", id="item"),
        pytest.param("{{ events | length }} events", "3 events", id="filter"),
        pytest.param(
            "{% for e in events %}{{ e.id }}{% if not loop.last %},{% endif %}{% endfor %}",
            "e1,e2,e3",
            id="loop",
        ),
        pytest.param("{{ event.resource['tripwire.resource.id'] | upper }}", "RUN-1", id="upper"),
        pytest.param("{{ {'n': events | length} | tojson }}", '{"n": 3}', id="tojson"),
        pytest.param("{{ '%05d' | format(42) }} {{ '{:>4}'.format(7) }}", "00042    7", id="formats"),
        pytest.param("{{ 'error 1700000000: %s' % 'x' }}", "error 1700000000: x", id="big-literal-in-text"),
    ],
)
async def test_templates_render(engine: TemplateEngine, source: str, output: str) -> None:
    assert await engine.render(source, CONTEXT) == output


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("{{ missing }}", "'missing' is undefined", id="undefined-variable"),
        pytest.param(
            "{{ automation.nope }}", "'dict object' has no attribute 'nope'", id="missing-attribute"
        ),
        pytest.param(
            "{{ ''.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe", id="sandbox"
        ),
        pytest.param(
            "{{ labels.update({'a': 1}) }}",
            "access to attribute 'update' of 'dict' object is unsafe",
            id="immutable",
        ),
        pytest.param("{{ 1 / 0 }}", "ZeroDivisionError: division by zero", id="python-error"),
        pytest.param(
            "{{ 'x' * 100000 }}", "a str of 100000 characters is larger than the limit 2000", id="repeat"
        ),
        pytest.param("{{ [0] * 100000 }}", "a list of 100000 items is larger than the limit 2000", id="list"),
        pytest.param(
            "{{ 'x' | center(1000000000) }}",
            "a width of 1000000000 is larger than the limit 2000",
            id="center-filter",
        ),
        pytest.param(
            "{{ 'x'.ljust(1000000000) }}", "a width of 1000000000 is larger than the limit 2000", id="ljust"
        ),
        pytest.param(
            "{{ '%1000000000s' % 'x' }}",
            "a format width of 1000000000 is larger than the limit 2000",
            id="percent-width",
        ),
        pytest.param(
            "{{ '{:>1000000000}'.format('x') }}",
            "a format width of 1000000000 is larger than the limit 2000",
            id="format-width",
        ),
        pytest.param(
            "{{ 2 ** 100000000 }}", "an exponent of 100000000 is larger than the limit 4096", id="pow"
        ),
        pytest.param(
            "{{ range(1000) | list }}", "range of 1000 items is larger than the limit 500", id="range"
        ),
        pytest.param(
            "{% for i in range(300) %}{{ 'abcdefghij' }}{% endfor %}",
            "output is larger than the limit of 2000 bytes",
            id="output",
        ),
        pytest.param(
            "{% set ns = namespace(x='ab') %}"
            "{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
            "a str of 2048 characters is larger than the limit 2000",
            id="doubling-namespace",
        ),
        pytest.param("{{ lipsum(1000) }}", "'lipsum' is undefined", id="no-lipsum"),
    ],
)
async def test_templates_that_break_the_rules_fail_with_a_clear_message(
    engine: TemplateEngine, source: str, message: str
) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        await engine.render(source, CONTEXT)
    assert message in str(caught.value)


async def test_a_template_that_loops_too_long_is_stopped_at_its_deadline(engine: TemplateEngine) -> None:
    nested = "{% for i in range(500) %}{% for j in range(500) %}{% for k in range(500) %}"
    nested += "{% endfor %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateRenderError, match=r"took longer than 0\.5 s"):
        await engine.render(nested, CONTEXT)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "Hello {{ automation.name }", "template syntax error at line 1: unexpected '}'", id="brace"
        ),
        pytest.param(
            "line one\n{% for e in events %}{{ e.id }}",
            "template syntax error at line 2: Unexpected end of template. Jinja was looking for the "
            "following tags: 'endfor' or 'else'.",
            id="unclosed-for",
        ),
        pytest.param(
            "{{ evnt.id }}",
            "template uses unknown variable 'evnt'; templates see automation, event, events, labels, firing",
            id="unknown-variable",
        ),
    ],
)
def test_check_template_refuses_with_line_and_message(source: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_template(source)
    assert str(caught.value).startswith(message)


def test_check_template_accepts_loops_sets_and_globals() -> None:
    source = "{% set n = events | length %}{% for e in events %}{{ loop.index }}{% endfor %}{{ n }}"
    source += "{{ range(2) }}"
    assert check_template(source) == source


def test_saving_does_not_evaluate_the_template() -> None:
    # no constant folding: a huge constant expression costs nothing until it is rendered (and refused)
    assert check_template("{{ 'x' | center(1000000000) }}")


def test_has_template_syntax() -> None:
    assert has_template_syntax("{{ x }}") and has_template_syntax("{% if x %}{% endif %}")
    assert not has_template_syntax("etl.alert.raised")
