"""livebridge.markup: agents' Markdown as plain text and as safe HTML (table-driven)."""

from __future__ import annotations

import pytest

from livebridge import TextStyle, markdown_to_html, markdown_to_text, render

TEXT = [
    ("plain", "Hello, world", "Hello, world"),
    ("bold", "**Next step:** pay", "Next step: pay"),
    ("italic and strike", "*it* _it_ ~~old~~", "it it old"),
    ("nested emphasis", "***both*** and **a *b* c**", "both and a b c"),
    ("link", "[invoice](https://x.test/i?a=1&b=2)", "invoice (https://x.test/i?a=1&b=2)"),
    ("autolink", "see <https://x.test/a>", "see https://x.test/a"),
    ("mail autolink", "write <a@b.test>", "write a@b.test"),
    ("mailto link", "[Mail us](mailto:a@b.test)", "Mail us (a@b.test)"),
    ("image", "![the *logo*](https://x.test/l.png)", "the logo (https://x.test/l.png)"),
    ("unsafe link stays text", "[x](javascript:alert(1))", "[x](javascript:alert(1))"),
    ("bullets", "* one\n* two\n  * deep", "- one\n- two\n  - deep"),
    ("numbered from 3", "3. x\n4. y", "3. x\n4. y"),
    ("loose list", "- a\n\n- b", "- a\n\n- b"),
    ("item with paragraphs", "1. a\n\n   more", "1. a\n\n   more"),
    ("inline code kept", "run `a*b <c>`", "run a*b <c>"),
    ("code block kept", "```py\nif a < b:\n    **x**\n```", "if a < b:\n    **x**"),
    ("heading", "# Title *x*\ntext", "Title x\n\ntext"),
    ("quote", "> said\n> this", "> said\n> this"),
    ("rule", "a\n\n---\n\nb", "a\n\n---\n\nb"),
    ("raw html is text", "<b>hi</b> & <script>x</script>", "<b>hi</b> & <script>x</script>"),
    ("entities decoded", "&amp; &lt;", "& <"),
    ("escaped markers", r"\*not em\*", "*not em*"),
    ("line breaks", "one\ntwo  \nthree", "one\ntwo\nthree"),
    ("unclosed", "**unclosed [link](", "**unclosed [link]("),
    ("empty", "", ""),
    ("nested as deep as parsed", "> " * 9 + "deep\n\nafter", "> " * 9 + "deep\n\nafter"),
    ("nested too deep is literal", "> " * 30 + "deep\n\n**after**",
     "> " * 30 + "deep\n\n**after**"),
    ("lists too deep are literal", "- " * 30 + "deep\n\nafter", "- " * 30 + "deep\n\nafter"),
]


@pytest.mark.parametrize(("md", "text"), [(md, text) for _, md, text in TEXT],
                         ids=[name for name, _, _ in TEXT])
def test_markdown_to_text(md: str, text: str) -> None:
    assert markdown_to_text(md) == text


HTML = [
    ("bold and link", "**Next:** [invoice](https://x.test/i?a=1&b=2)",
     '<p><strong>Next:</strong> <a href="https://x.test/i?a=1&amp;b=2">invoice</a></p>\n'),
    ("raw html escaped", "<script>alert(1)</script> <b onclick=x>hi</b>",
     "<p>&lt;script&gt;alert(1)&lt;/script&gt; &lt;b onclick=x&gt;hi&lt;/b&gt;</p>\n"),
    ("html block escaped", "<div>\nx\n</div>", "<p>&lt;div&gt;<br />\nx<br />\n&lt;/div&gt;</p>\n"),
    ("javascript link is text", "[x](javascript:alert(1))",
     "<p>[x](javascript:alert(1))</p>\n"),
    ("data link is text", "[x](data:text/html;base64,PHNjcmlwdD4=)",
     "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>\n"),
    ("mailto", "<a@b.test>", '<p><a href="mailto:a@b.test">a@b.test</a></p>\n'),
    ("image as a link", '![a "logo"](https://x.test/l.png)',
     '<p><a href="https://x.test/l.png">a &quot;logo&quot;</a></p>\n'),
    ("image with unsafe src is text", "![x](javascript:alert(1))",
     "<p>![x](javascript:alert(1))</p>\n"),
    ("list", "- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"),
    ("code escaped", "`<b>`", "<p><code>&lt;b&gt;</code></p>\n"),
    ("line break kept", "one\ntwo", "<p>one<br />\ntwo</p>\n"),
    ("strike", "~~old~~", "<p><s>old</s></p>\n"),
    ("nested too deep is literal", "> " * 30 + "<b>\nafter",
     "<p>" + "&gt; " * 30 + "&lt;b&gt;<br />\nafter</p>\n"),
]


@pytest.mark.parametrize(("md", "html"), [(md, html) for _, md, html in HTML],
                         ids=[name for name, _, _ in HTML])
def test_markdown_to_html(md: str, html: str) -> None:
    assert markdown_to_html(md) == html


def test_a_style_changes_only_what_it_overrides() -> None:
    class Shout(TextStyle):
        bullet = "* "

        def strong(self, inner: str) -> str:
            return inner.upper()

    assert render("- **now** and *later*", Shout()) == "* NOW and later"
