"""The built-in HTML pages: the form, the thank-you page and the error page.

Plain, self-contained HTML (no scripts, no external assets), every value html-escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from html import escape

from livebridge_form.settings import FormSettings

__all__ = ["STYLE_HASH", "error_page", "form_page", "thanks_page"]

_STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2330;font:16px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}
main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border:1px solid #dde1e7;
border-radius:8px}
h1{margin:0 0 .5rem;font-size:1.6rem}
p{margin:0 0 1.25rem}
.field{margin-bottom:1rem}
label{display:block;margin-bottom:.25rem;font-weight:600}
.opt,.hint{font-weight:400;color:#596273;font-size:.9rem}
.hint{margin:.25rem 0 0}
input,textarea{width:100%;padding:.55rem .65rem;border:1px solid #9aa3b2;border-radius:6px;
font:inherit;color:inherit;background:#fff}
textarea{min-height:8rem;resize:vertical}
input:focus,textarea:focus,button:focus,a:focus{outline:3px solid #8ab4f8;outline-offset:1px}
button{padding:.6rem 1.4rem;border:0;border-radius:6px;background:#1f5fbf;color:#fff;
font:inherit;font-weight:600;cursor:pointer}
button:hover{background:#174c9a}
a{color:#1f5fbf}
.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
"""
#: The Content-Security-Policy source that allows exactly the inline style above.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

_LABELS = {"name": "Name", "email": "Email", "phone": "Phone", "message": "Message"}
_INPUTS = {  # type, autocomplete, maxlength
    "name": ("text", "name", 200),
    "email": ("email", "email", 254),
    "phone": ("tel", "tel", 32),
}


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _html_required(settings: FormSettings) -> set[str]:
    """Fields the page marks ``required``: for alternatives (``email|phone``) the page asks
    for the first one; the server accepts any of them."""
    return {group[0] for group in settings.required_groups}


def form_page(settings: FormSettings, token: str) -> str:
    """The contact form; ``token`` (a hidden field) makes a double-submitted post count once."""
    required = _html_required(settings)
    rows = []
    for key in ("name", "email", "phone", "message"):
        name = escape(settings.fields.posted(key))
        fid = f"f-{key}"
        need = key in required
        label = _LABELS[key] + ("" if need else ' <span class="opt">(optional)</span>')
        attrs = " required" if need else ""
        hint = ""
        if key == "phone":
            hint = (f'<p id="{fid}-hint" class="hint">International format, '
                    "for example +44 20 7946 0000</p>")
            attrs += f' aria-describedby="{fid}-hint"'
        if key == "message":
            control = (f'<textarea id="{fid}" name="{name}" rows="6" maxlength="20000"'
                       f"{attrs}></textarea>")
        else:
            kind, auto, size = _INPUTS[key]
            control = (f'<input id="{fid}" name="{name}" type="{kind}" autocomplete="{auto}"'
                       f' maxlength="{size}"{attrs}>')
        rows.append(f'<div class="field">\n<label for="{fid}">{label}</label>\n'
                    f"{control}{hint}\n</div>")
    if settings.honeypot:
        rows.append(
            '<div class="hp" aria-hidden="true">\n'
            '<label for="f-hp">Leave this field empty</label>\n'
            f'<input id="f-hp" name="{escape(settings.honeypot)}" type="text" tabindex="-1"'
            ' autocomplete="off">\n</div>'
        )
    fields = "\n".join(rows)
    body = (
        f"<h1>{escape(settings.title)}</h1>\n"
        "<p>Send us a message and we will get back to you.</p>\n"
        f'<form method="post" action="{escape(settings.path)}" accept-charset="utf-8">\n'
        f'<input type="hidden" name="_idempotency_key" value="{escape(token)}">\n'
        f'{fields}\n<button type="submit">Send message</button>\n</form>'
    )
    return _document(settings.title, body)


def thanks_page(settings: FormSettings) -> str:
    """The built-in thank-you page."""
    body = (
        "<h1>Thank you</h1>\n"
        f"<p>Your message to {escape(settings.title)} has been sent. "
        "We will get back to you soon.</p>\n"
        f'<p><a href="{escape(settings.path)}">Send another message</a></p>'
    )
    return _document(f"Thank you: {settings.title}", body)


def error_page(settings: FormSettings, status: int, reason: str,
               fields: Mapping[str, str] | None = None) -> str:
    """What a browser sees when its post is refused (scripts get JSON instead)."""
    items = "".join(f"<li><strong>{escape(name)}</strong>: {escape(problem)}</li>"
                    for name, problem in (fields or {}).items())
    problems = f'<ul role="alert">{items}</ul>\n' if items else ""
    body = (
        f"<h1>Your message was not sent</h1>\n<p>{escape(reason.capitalize())}"
        f" (error {status}).</p>\n{problems}"
        "<p>Use your browser's Back button to correct the form, or "
        f'<a href="{escape(settings.path)}">start again</a>.</p>'
    )
    return _document(f"Not sent: {settings.title}", body)
