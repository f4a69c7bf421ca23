"""The template sandbox: a stored template reaches only its plain context, reads no file, loads
no code, sees no attribute beginning with `_`, and cannot run away (bounded render time and
output size). A render over a limit is a TemplateRenderError naming the part: a 400 in the API,
a failed email (with the reason) in the worker, never a hang.
"""

import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailqueue.errors import TemplateRenderError
from mailqueue.models import EmailJob, EmailStatus
from templates_app.rendering import MAX_FORMAT_WIDTH, MAX_LOREM_COUNT, render_content
from templates_app.services import template_create
from tests.helpers import run_worker
from tests.hypothesis_profiles import examples

TEMPLATES = "/api/v1/templates/"
SECRET_MARKERS = ("root:x:", "<class", "<function", "<module", "Manager", "do-not-leak")


@pytest.fixture
def small_limits(settings):
    """A small output limit; time enough that only the limit a test aims at is hit."""
    settings.MAILQUEUE_TEMPLATE_RENDER_SECONDS = 5
    settings.MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS = 100_000
    settings.SECRET_KEY = "SECRET-do-not-leak-0123456789"
    return settings


@pytest.fixture
def short_time(small_limits):
    """Half a second per email: a runaway loop is stopped within a test's patience."""
    small_limits.MAILQUEUE_TEMPLATE_RENDER_SECONDS = 0.5
    return small_limits


def render_text(source: str, context: dict | None = None) -> str:
    """The text part of `source` rendered with `context`."""
    return render_content(subject="s", html="", text=source, context=context or {}).text


# --- Nothing outside the context --------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ settings.SECRET_KEY }}",
        "{{ request.META }}{{ request.user }}",
        "{{ user }}{{ perms }}{{ csrf_token }}{{ messages }}",
        "{% for k in settings %}{{ k }}{% endfor %}",
    ],
)
def test_settings_request_and_context_processors_are_undefined(small_limits, source):
    """No context processor runs: `settings`, `request`, `user` ... render as nothing."""
    assert render_text(source) == ""


def test_a_model_in_the_context_is_only_its_text(db, small_limits, welcome_template):
    """Even a caller that passes a model gives the template its text: no related object, no
    manager, no method call reaches the database."""
    source = (
        "{{ t.slug }}|{{ t.versions.all }}|{{ t.delete }}|{{ t.pk }}|"
        "{% for v in t.versions.all %}{{ v }}{% endfor %}"
    )

    assert render_text(source, {"t": welcome_template}) == "||||"
    welcome_template.refresh_from_db()  # `t.delete` was not called


def test_a_template_cannot_change_the_callers_data(small_limits):
    """Methods with side effects act on a copy: the caller's context is unchanged."""
    context = {"items": [1, 2, 3], "d": {"a": 1}}

    render_content(
        subject="{{ items.pop }}", html="", text="{{ items.clear }}{{ d.clear }}", context=context
    )

    assert context == {"items": [1, 2, 3], "d": {"a": 1}}


@pytest.mark.parametrize(
    "source",
    [
        "{{ x.__class__ }}",
        "{{ x._meta }}",
        "{% for k in x.__dict__ %}{{ k }}{% endfor %}",
        "{% with c=x.__class__ %}{{ c }}{% endwith %}",
        "{% include '/etc/passwd' %}",
        "{% extends '/etc/passwd' %}",
        "{% ssi '/etc/passwd' %}",
        "{% load static %}",
        "{% load django.templatetags.static %}",
        "{% debug %}",
        "{% url 'admin:index' %}",
    ],
)
def test_private_attributes_files_and_libraries_are_refused_when_saved(api, source):
    """The API answers 400 on the part; nothing of the file or the object shows."""
    response = api.post(
        TEMPLATES, {"slug": "t", "name": "t", "subject": "s", "text": source}, format="json"
    )

    assert response.status_code == 400
    assert "text" in response.json()
    assert "root:x:" not in response.content.decode()


def test_dictsort_cannot_sort_by_a_private_attribute(small_limits):
    """`dictsort` by an attribute beginning with `_` gives nothing, not the attribute."""
    assert render_text('{{ l|dictsort:"__class__" }}', {"l": [{"a": 1}]}) == ""


# --- Bounded time and output ------------------------------------------------------------------


RUNAWAY_CONTEXT = {
    "l": list(range(3000)),
    "pairs": [[1, 2]] * 3000,
    "s": "x" * 2000,
    "n": 10**9,
    "big": "y" * 200_000,
}


@pytest.mark.parametrize(
    "source",
    [
        # Nested loops whose bodies are empty: only the clock stops them.
        "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
        "{% for a, b in pairs %}{% for c in l %}{% for d in l %}{% endfor %}{% endfor %}"
        "{% endfor %}",
        "{% for a in l %}{% for b in l %}{% if a == b %}{% endif %}{% endfor %}{% endfor %}",
    ],
)
def test_runaway_loops_stop_at_the_time_limit(short_time, source):
    """Loops that would run for hours stop after the configured time, with the reason."""
    started = time.monotonic()
    with pytest.raises(TemplateRenderError) as info:
        render_text(source, RUNAWAY_CONTEXT)

    assert time.monotonic() - started < 5
    assert info.value.field == "text"
    assert "longer than 0.5 s (MAILQUEUE_TEMPLATE_RENDER_SECONDS)" in info.value.message


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        # Nested loops producing output: the output limit stops them.
        ("{% for a in l %}{% for b in l %}{{ s }}{% endfor %}{% endfor %}", "too large"),
        ("{{ s|center:1000000000 }}", "at most 10000"),
        ("{{ s|ljust:99999999 }}", "at most 10000"),
        ("{{ s|rjust:'99999999' }}", "at most 10000"),
        ("{{ 1.5|floatformat:100000000 }}", "at most 10000"),
        ("{{ 1.5|floatformat:'-100000000g' }}", "at most 10000"),
        ('{{ 1|stringformat:"0999999999d" }}', "at most 10000"),
        ('{{ 1.5|stringformat:".999999999f" }}', "at most 10000"),
        ("{% lorem 100000000 p %}", f"at most {MAX_LOREM_COUNT}"),
        ("{% lorem n w %}", f"at most {MAX_LOREM_COUNT}"),
        ("{{ l|join:s }}", "'join' would make"),
        (
            "{% with a=s|add:s %}{% with b=a|add:a %}{% with c=b|add:b %}{% with d=c|add:c %}"
            "{% with e=d|add:d %}{% with f=e|add:e %}{{ f|length }}{% endwith %}{% endwith %}"
            "{% endwith %}{% endwith %}{% endwith %}{% endwith %}",
            "too large",
        ),
        ("{{ big|make_list|length }}", "too large"),
        ("{% for a in l %}{{ s|center:9000 }}{% endfor %}", "too large"),
    ],
)
def test_runaway_output_stops_with_a_clear_error(small_limits, source, reason):
    """Padding, precision, lorem, join, doubling and loops stop at a cap or the output limit
    before they allocate much more than it."""
    with pytest.raises(TemplateRenderError) as info:
        render_text(source, RUNAWAY_CONTEXT)

    assert info.value.field == "text"
    assert reason in info.value.message
    assert "MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS" in info.value.message or "at most" in (
        info.value.message
    )


def test_widths_and_counts_up_to_the_caps_still_render(small_limits):
    """The caps refuse only abuse: ordinary padding, precision and lorem work."""
    text = render_text(
        "{{ s|center:9 }}|{{ 3.14159|floatformat:2 }}|{{ 7|stringformat:'03d' }}|"
        "{% lorem 3 w %}|{{ l|join:', ' }}",
        {"s": "abc", "l": ["a", "b"]},
    )

    assert text == "   abc   |3.14|007|lorem ipsum dolor|a, b"
    assert MAX_FORMAT_WIDTH >= 1000


def test_the_output_limit_counts_all_parts_of_an_email(small_limits):
    """Subject, HTML and text share one budget: three parts just under it together are over."""
    small_limits.MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS = 10_000
    part = "{% for a in l %}x{% endfor %}"
    context = {"l": list(range(4000))}

    assert len(render_text(part, context)) == 4000
    with pytest.raises(TemplateRenderError) as info:
        render_content(subject="s", html=part, text=part + part, context=context)

    assert info.value.field == "text"


def test_the_api_preview_answers_400_naming_the_part(api, short_time):
    """POST /templates/{slug}/render/ with data that makes a loop run away: a 400 on `html`."""
    template_create(
        slug="loop",
        name="Loop",
        subject="Hi",
        html="{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
    )
    started = time.monotonic()

    response = api.post(
        f"{TEMPLATES}loop/render/", {"context": {"l": list(range(2000))}}, format="json"
    )

    assert response.status_code == 400
    assert "longer than 0.5 s" in response.json()["html"][0]
    assert time.monotonic() - started < 10


def test_a_runaway_subject_is_a_400_on_the_context_when_the_email_is_created(api, small_limits):
    """The subject renders when the email is accepted: a runaway one is the caller's 400."""
    template_create(slug="huge", name="Huge", subject="{{ s|center:100000 }}", text="t")

    response = api.post(
        "/api/v1/emails/",
        {"to": "ada@example.com", "template": "huge", "context": {"s": "x"}},
        format="json",
    )

    assert response.status_code == 400
    assert "at most 10000" in response.json()["context"][0]


def test_the_worker_fails_a_runaway_email_with_the_reason_and_moves_on(
    api, short_time, django_capture_on_commit_callbacks
):
    """A body that would loop for hours fails its email (no retry) within the limit."""
    template_create(
        slug="loop",
        name="Loop",
        subject="Hi",
        html="{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
    )
    with django_capture_on_commit_callbacks(execute=True):
        email_id = api.post(
            "/api/v1/emails/",
            {"to": "ada@example.com", "template": "loop", "context": {"l": list(range(2000))}},
            format="json",
        ).json()["id"]
    started = time.monotonic()

    run_worker()

    email = EmailJob.objects.get(pk=email_id)
    assert time.monotonic() - started < 20
    assert email.status == EmailStatus.FAILED
    assert email.attempts == 1
    assert "html" in email.last_error
    assert "longer than 0.5 s" in email.last_error


# --- Arbitrary templates ----------------------------------------------------------------------

NUMBERS = ["1", "3", "100", "10000", "10001", "1000000", "1000000000", "-5", "x", "'a'"]
FRAGMENTS = [
    "{{ x }}",
    "{{ x.y }}",
    "{{ d.items }}",
    "{{ l.pop }}",
    "{{ d.clear }}",
    "{{ settings.SECRET_KEY }}",
    "{{ request }}",
    "{{ x.__class__ }}",
    "{{ x._meta }}",
    "{% for a in l %}",
    "{% for a, b in d.items %}",
    "{% endfor %}",
    "{% if x %}",
    "{% else %}",
    "{% endif %}",
    "{% with y=x|add:x %}",
    "{% endwith %}",
    "{% include '/etc/passwd' %}",
    "{% load static %}",
    "{% debug %}",
    "{% lorem {n} w %}",
    "{% widthratio {n} {n} {n} %}",
    "{{ x|center:{n} }}",
    "{{ x|ljust:{n} }}",
    "{{ x|floatformat:{n} }}",
    "{{ x|stringformat:'0{n}d' }}",
    "{{ l|join:x }}",
    "{{ x|make_list }}",
    "{{ l|dictsort:'_x' }}",
    "{{ x|truncatechars:{n} }}",
    "{{ x|wordwrap:{n} }}",
    "{% cycle 'a' 'b' %}",
    "{% spaceless %}",
    "{% endspaceless %}",
    "text ",
]
fragments = st.builds(
    lambda fragment, number: fragment.replace("{n}", number),
    st.sampled_from(FRAGMENTS),
    st.sampled_from(NUMBERS),
)
sources = st.lists(st.one_of(fragments, st.text(max_size=5)), max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)
contexts = st.fixed_dictionaries(
    {
        "x": json_values,
        "l": st.lists(json_values, max_size=25),
        "d": st.dictionaries(st.text(max_size=4), json_values, max_size=6),
    }
)


@settings(max_examples=examples())
@given(source=sources, context=contexts)
@example(
    source="{% for a in l %}{% for b in l %}{% for c in l %}{{ x }}{% endfor %}{% endfor %}"
    "{% endfor %}",
    context={"x": "y" * 20, "l": list(range(60)), "d": {}},
)
@example(source="{{ x|center:10000 }}" * 20, context={"x": "a", "l": [], "d": {}})
def test_any_template_renders_within_limits_or_fails_naming_its_part(small_limits, source, context):
    """Whatever the source and JSON context: output within the limit and nothing private,
    or a TemplateRenderError naming the part; never another exception, never a long wait."""
    small_limits.MAILQUEUE_TEMPLATE_RENDER_SECONDS = 0.1  # either outcome is fine: keep it quick
    started = time.monotonic()
    try:
        rendered = render_content(subject="s", html=source, text=source, context=context)
    except TemplateRenderError as exc:
        assert exc.field in ("subject", "html", "text")
        assert exc.message
        output = exc.message
    else:
        output = rendered.html + rendered.text
        assert len(output) <= 100_000
    # 0.1 s of budget; one filter call cannot be interrupted, and the machine may be busy.
    assert time.monotonic() - started < 3
    assert not any(marker in output for marker in SECRET_MARKERS), output[:500]
