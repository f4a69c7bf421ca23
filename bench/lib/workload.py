"""The work every contestant does: one template, its contexts and the message bodies.

Plain Python with no imports beyond the standard library, so the post_office peer (in its own
virtualenv) uses the very same definitions as Mailqueue.
"""

TEMPLATE_SLUG = "bench"
FROM_EMAIL = "Bench <bench@example.com>"
# A subject, HTML and text with a couple of variables and a small for-loop.
SUBJECT = "Order {{ order }} for {{ name }}"
HTML = (
    "<p>Hello {{ name }},</p><p>your order {{ order }}:</p>"
    "<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>"
)
TEXT = (
    "Hello {{ name }},\nyour order {{ order }}:\n{% for item in items %}- {{ item }}\n{% endfor %}"
)
ITEMS = ["tea", "cups", "saucers"]


def address(number: int) -> str:
    """The recipient of the email with this number."""
    return f"user{number}@example.com"


def context_for(number: int) -> dict:
    """The full template context of the email with this number."""
    return {"name": f"User {number}", "order": number, "items": ITEMS}


def recipient_context(number: int) -> dict:
    """The per-recipient part of the context in a batch (ITEMS is shared by the batch)."""
    return {"name": f"User {number}", "order": number}


def rendered(number: int) -> tuple[str, str, str]:
    """Subject, text and HTML as the template renders them (for the raw smtplib peer)."""
    items_text = "".join(f"- {item}\n" for item in ITEMS)
    items_html = "".join(f"<li>{item}</li>" for item in ITEMS)
    name = f"User {number}"
    return (
        f"Order {number} for {name}",
        f"Hello {name},\nyour order {number}:\n{items_text}",
        f"<p>Hello {name},</p><p>your order {number}:</p><ul>{items_html}</ul>",
    )
