# ruff: noqa: RUF001  (Japanese uses full-width punctuation)
"""Every text the form's pages show, in English and Japanese, and the choice of language.

Each text can be overridden per language in ``bridge.yaml`` (``texts: {ja: {submit: 送信}}``);
``{title}``, ``{fields}`` are filled in where the built-in text has them.
"""

from __future__ import annotations

from string import Formatter
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

__all__ = ["LANGUAGES", "TEXTS", "Language", "TextOverrides", "Texts", "negotiate"]

Language = Literal["en", "ja"]
#: The languages the form speaks; the first is the fallback.
LANGUAGES: tuple[Language, ...] = get_args(Language)


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(text) if name is not None}


class Texts(BaseModel):
    """The texts of one language (the defaults are the English ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = "Contact us"
    intro: str = "Send us a message and we will get back to you."
    label_name: str = "Name"
    label_email: str = "Email"
    label_phone: str = "Phone"
    label_message: str = "Message"
    optional: str = "(optional)"
    hint_phone: str = "International format, for example +44 20 7946 0000"
    #: Shown once for alternatives such as ``email|phone``; ``{fields}``: their labels.
    hint_one_of: str = "Fill in at least one of these: {fields}."
    list_separator: str = ", "
    submit: str = "Send message"
    honeypot: str = "Leave this field empty"
    #: The page title when the post was refused.
    title_error: str = "Error: {title}"
    summary: str = "There is a problem"
    #: Read out before each inline error (visually hidden).
    error_prefix: str = "Error:"
    error_required_name: str = "Enter your name"
    error_required_email: str = "Enter your email address"
    error_required_phone: str = "Enter your phone number"
    error_required_message: str = "Enter your message"
    error_one_of: str = "Enter at least one of these: {fields}"
    error_email: str = "Enter an email address in the correct format, like name@example.com"
    error_phone: str = "Enter a phone number in international format, like +44 20 7946 0000"
    error_name_too_long: str = "Name must be 200 characters or fewer"
    #: Refusals that are not about one field.
    refused_origin: str = "This form can only be sent from its own page. Please send it here."
    refused_rate: str = ("You have sent several messages in a short time. "
                         "Please wait a while and try again.")
    refused_size: str = ("Your message or its files are too large. "
                         "Please shorten the message or attach smaller files.")
    refused_unreadable: str = "Your message could not be read. Please try again."
    refused_busy: str = "We cannot take your message right now. Please try again in a few minutes."
    thanks_title: str = "Thank you: {title}"
    thanks_heading: str = "Thank you"
    thanks_body: str = "Your message to {title} has been sent. We will get back to you soon."
    thanks_again: str = "Send another message"

    @field_validator("*")
    @classmethod
    def _known_placeholders(cls, value: str, info: ValidationInfo) -> str:
        assert info.field_name is not None
        allowed = _placeholders(cls.model_fields[info.field_name].default)
        try:
            unknown = sorted(_placeholders(value) - allowed)
        except ValueError:
            raise ValueError("unmatched '{' or '}' (write {{ and }} for a brace)") from None
        if unknown:
            can = ", ".join(f"{{{name}}}" for name in sorted(allowed)) or "none"
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (this text can use: {can})")
        return value

    def fill(self, key: str, **values: str) -> str:
        """Text ``key`` with its placeholders filled in."""
        return str(getattr(self, key)).format(**values)


class TextOverrides(BaseModel):
    """The ``texts:`` setting: for each language, the texts to change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    en: Texts | None = None
    ja: Texts | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_languages(cls, data: Any) -> Any:
        unknown = [key for key in data if key not in LANGUAGES] if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown language {unknown[0]!r} (the form speaks "
                             f"{', '.join(LANGUAGES)})")
        return data

    def changes(self, language: Language) -> dict[str, str]:
        """The texts changed in ``language``."""
        texts: Texts | None = getattr(self, language)
        return texts.model_dump(exclude_unset=True) if texts else {}


TEXTS: dict[Language, Texts] = {
    "en": Texts(),
    "ja": Texts(
        title="お問い合わせ",
        intro="以下のフォームからお気軽にお問い合わせください。担当者より折り返しご連絡いたします。",
        label_name="お名前",
        label_email="メールアドレス",
        label_phone="電話番号",
        label_message="お問い合わせ内容",
        optional="（任意）",
        hint_phone="国際電話番号の形式でご入力ください（例：+81 3 1234 5678）",
        hint_one_of="{fields}のうち、少なくとも1つをご入力ください。",
        list_separator="、",
        submit="送信する",
        honeypot="この欄には何も入力しないでください",
        title_error="エラー：{title}",
        summary="入力内容に誤りがあります",
        error_prefix="エラー：",
        error_required_name="お名前をご入力ください",
        error_required_email="メールアドレスをご入力ください",
        error_required_phone="電話番号をご入力ください",
        error_required_message="お問い合わせ内容をご入力ください",
        error_one_of="{fields}のいずれかをご入力ください",
        error_email="メールアドレスを正しい形式でご入力ください（例：name@example.com）",
        error_phone="電話番号を国際電話番号の形式でご入力ください（例：+81 3 1234 5678）",
        error_name_too_long="お名前は200文字以内でご入力ください",
        refused_origin="このフォームは、こちらのページからのみ送信できます。お手数ですが、"
                       "このページから送信してください。",
        refused_rate="短時間に多くのメッセージが送信されました。しばらく時間をおいてから、"
                     "もう一度お試しください。",
        refused_size="メッセージまたは添付ファイルのサイズが大きすぎます。内容を短くするか、"
                     "より小さいファイルを添付してください。",
        refused_unreadable="メッセージを読み取れませんでした。お手数ですが、もう一度お試しください。",
        refused_busy="ただいまメッセージを受け付けることができません。"
                     "数分後にもう一度お試しください。",
        thanks_title="送信完了：{title}",
        thanks_heading="お問い合わせありがとうございます",
        thanks_body="お問い合わせを受け付けました。内容を確認のうえ、担当者より折り返し"
                    "ご連絡いたします。",
        thanks_again="別のメッセージを送る",
    ),
}


def negotiate(accept_language: str | None) -> Language:
    """The language a browser prefers most (``Accept-Language``, with q-values) among
    ``LANGUAGES``; ``en`` when it names none of them."""
    weights: dict[Language, tuple[float, int]] = {}
    for index, item in enumerate((accept_language or "").split(",")[:50]):
        tag, *params = (p.strip() for p in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        for language in LANGUAGES:
            if tag.split("-")[0].lower() == language and 0 < quality <= 1:
                weights[language] = max(weights.get(language, (0, 0)), (quality, -index))
    return max(weights, key=weights.__getitem__, default=LANGUAGES[0])
