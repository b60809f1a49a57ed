"""The built-in HTML pages: the form (also re-shown with the problems when a post is refused)
and the thank-you page, in the language of their ``Texts``.

Plain, self-contained HTML (no scripts, no external assets), every value html-escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from livebridge_form.settings import FIELD_KEYS, FormSettings
from livebridge_form.texts import Texts

__all__ = ["STYLE_HASH", "FieldError", "form_page", "thanks_page"]

_STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2330;font:16px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"Hiragino Sans","Noto Sans JP","Yu Gothic UI",Meiryo,sans-serif}
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
.summary{margin:0 0 1.5rem;padding:1rem 1.25rem;border:4px solid #b3261e;border-radius:6px}
.summary:focus{outline:3px solid #8ab4f8}
.summary h2{margin:0 0 .5rem;font-size:1.2rem}
.summary ul{margin:0;padding-left:1.25rem}
.summary a{color:#b3261e;font-weight:600}
.group{margin-bottom:1rem;padding:.75rem 1rem 0;border:1px solid #dde1e7;border-radius:6px}
.group>.hint{margin:0 0 .75rem}
.invalid{padding-left:.9rem;border-left:4px solid #b3261e}
.error{margin:.25rem 0;color:#b3261e;font-weight:600}
[aria-invalid=true]{border:2px solid #b3261e}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
"""
#: The Content-Security-Policy source that allows exactly the inline style above.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

_INPUTS = {  # type, autocomplete, maxlength
    "name": ("text", "name", 200),
    "email": ("email", "email", 254),
    "phone": ("tel", "tel", 32),
}


@dataclass(frozen=True)
class FieldError:
    """Why a field was refused: ``text`` names a ``Texts`` message; ``group`` is set when a
    required field (or each of required alternatives, ``email|phone``) was left empty."""

    text: str
    group: tuple[str, ...] = ()


def _document(language: str, title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="{escape(language)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _say(texts: Texts, key: str, group: tuple[str, ...] = ()) -> str:
    """Text ``key``, escaped, ``{title}`` and ``{fields}`` (the labels of ``group``) filled in."""
    fields = texts.list_separator.join(texts.fill(f"label_{k}") for k in group)
    return escape(texts.fill(key, title=texts.title, fields=fields))


def _error(texts: Texts, ident: str, error: FieldError) -> str:
    return (f'<p id="{ident}" class="error"><span class="vh">{_say(texts, "error_prefix")} '
            f"</span>{_say(texts, error.text, error.group)}</p>\n")


def _field(settings: FormSettings, texts: Texts, key: str, value: str,
           error: FieldError | None, group: list[str] | None = None) -> str:
    """One labelled control with its hint and inline ``error``; ``group``: the ids of the
    hint (and error) its group of alternatives shows once for all of them."""
    fid = f"f-{key}"
    required = (key,) in settings.required_groups
    label = _say(texts, f"label_{key}")
    if not required and group is None:
        label += f' <span class="opt">{_say(texts, "optional")}</span>'
    described, extra = list(group or []), ""
    if key == "phone":
        extra += f'<p id="{fid}-hint" class="hint">{_say(texts, "hint_phone")}</p>\n'
        described.append(f"{fid}-hint")
    if error is not None:
        extra += _error(texts, f"{fid}-error", error)
        described.append(f"{fid}-error")
    attrs = " required" if required else ""
    if any(ident.endswith("-error") for ident in described):
        attrs += ' aria-invalid="true"'
    if described:
        attrs += f' aria-describedby="{" ".join(described)}"'
    name = escape(settings.fields.posted(key))
    if key == "message":
        control = (f'<textarea id="{fid}" name="{name}" rows="6" maxlength="20000"{attrs}>'
                   f"{escape(value)}</textarea>")
    else:
        kind, auto, size = _INPUTS[key]
        control = (f'<input id="{fid}" name="{name}" type="{kind}" autocomplete="{auto}"'
                   f' maxlength="{size}" value="{escape(value)}"{attrs}>')
    css = "field invalid" if error is not None else "field"
    return f'<div class="{css}">\n<label for="{fid}">{label}</label>\n{extra}{control}\n</div>'


def _group(settings: FormSettings, texts: Texts, group: tuple[str, ...], members: list[str],
           values: Mapping[str, str], errors: Mapping[str, FieldError]) -> str:
    """Alternatives (``email|phone``): one hint, and one error when all were left empty."""
    gid = f"g-{members[0]}"
    shared = next((e for k in members if (e := errors.get(k)) and e.group == group), None)
    head = f'<p id="{gid}-hint" class="hint">{_say(texts, "hint_one_of", group)}</p>\n'
    ids = [f"{gid}-hint"]
    if shared is not None:
        head += _error(texts, f"{gid}-error", shared)
        ids.append(f"{gid}-error")
    fields = "\n".join(
        _field(settings, texts, k, values.get(k, ""),
               None if errors.get(k) == shared else errors.get(k), ids)
        for k in members)
    css = "group invalid" if shared is not None else "group"
    return f'<div class="{css}">\n{head}{fields}\n</div>'


def _summary(texts: Texts, errors: Mapping[str, FieldError], problem: str | None) -> str:
    """The problems at the top (GOV.UK's error summary), each error linked to its field."""
    items, seen = [], set()
    for key in FIELD_KEYS:
        error = errors.get(key)
        if error is not None and error not in seen:
            seen.add(error)
            items.append(f'<li><a href="#f-{key}">{_say(texts, error.text, error.group)}</a></li>')
    if problem is not None:
        items.append(f"<li>{_say(texts, problem)}</li>")
    return (
        '<div id="summary" class="summary" role="alert" tabindex="-1" autofocus'
        ' aria-labelledby="summary-title">\n'
        f'<h2 id="summary-title">{_say(texts, "summary")}</h2>\n'
        f'<ul>\n{"".join(items)}\n</ul>\n</div>\n'
    )


def form_page(settings: FormSettings, texts: Texts, language: str, token: str, *,
              values: Mapping[str, str] | None = None,
              errors: Mapping[str, FieldError] | None = None,
              problem: str | None = None) -> str:
    """The contact form in ``texts``; ``token`` (a hidden field) makes a double-submitted post
    count once. A refused post gets it again with the posted ``values`` (field key → text),
    its ``errors`` (field key → error) next to their fields and, with ``problem`` (a
    ``Texts`` key), summarised on top.

    A required field is marked ``required``; alternatives (``email|phone``) are grouped
    under a hint instead, and an error about them is shown once, at the group."""
    values, errors = values or {}, errors or {}
    rows, placed = [], set()
    for key in FIELD_KEYS:
        if key in placed:
            continue
        group = next((g for g in settings.required_groups if len(g) > 1 and key in g), None)
        if group is None:
            placed.add(key)
            rows.append(_field(settings, texts, key, values.get(key, ""), errors.get(key)))
            continue
        members = [k for k in FIELD_KEYS if k in group and k not in placed]
        placed.update(members)
        rows.append(_group(settings, texts, group, members, values, errors))
    if settings.honeypot:
        rows.append(
            '<div class="hp" aria-hidden="true">\n'
            f'<label for="f-hp">{_say(texts, "honeypot")}</label>\n'
            f'<input id="f-hp" name="{escape(settings.honeypot)}" type="text" tabindex="-1"'
            ' autocomplete="off">\n</div>'
        )
    refused = bool(errors) or problem is not None
    fields = "\n".join(rows)
    body = (
        (_summary(texts, errors, problem) if refused else "")
        + f"<h1>{_say(texts, 'title')}</h1>\n<p>{_say(texts, 'intro')}</p>\n"
        f'<form method="post" action="{escape(settings.path)}" accept-charset="utf-8"'
        " novalidate>\n"
        f'<input type="hidden" name="_idempotency_key" value="{escape(token)}">\n'
        f'{fields}\n<button type="submit">{_say(texts, "submit")}</button>\n</form>'
    )
    title = texts.fill("title_error" if refused else "title", title=texts.title)
    return _document(language, title, body)


def thanks_page(settings: FormSettings, texts: Texts, language: str) -> str:
    """The built-in thank-you page."""
    body = (
        f"<h1>{_say(texts, 'thanks_heading')}</h1>\n<p>{_say(texts, 'thanks_body')}</p>\n"
        f'<p><a href="{escape(settings.path)}">{_say(texts, "thanks_again")}</a></p>'
    )
    return _document(language, texts.fill("thanks_title", title=texts.title), body)
