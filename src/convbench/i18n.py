"""The report's language: convbench's gettext catalogues, and numbers written as each language writes them.

REPORT.md and its figures are written in English (the source strings of the code) or in Spanish
(`locale/es/LC_MESSAGES/convbench.po`). The .po file is the catalogue itself: when a language is
first used, Babel reads it and compiles it in memory into a standard `gettext.GNUTranslations`,
so nothing is built or written to disk and an edited .po takes effect at the next report.

    convbench report runs/quick --lang es

After adding or changing a message in the code, refresh the template and the Spanish catalogue,
translate what `pybabel update` marks new or fuzzy, and run the catalogue's test:

    .venv/bin/pybabel extract -F src/convbench/locale/babel.cfg --no-wrap --no-location \\
        -c Translators: --project convbench -o src/convbench/locale/convbench.pot src/convbench
    .venv/bin/pybabel update --no-wrap -i src/convbench/locale/convbench.pot \\
        -d src/convbench/locale -D convbench
    .venv/bin/pytest tests/test_i18n.py -q       # fails while a message has no Spanish translation

Messages are whole sentences with named placeholders, so a translation may put the words in its
own order: `fmt(_("{model} leads by {gain:.2f} points"), model=name, gain=x)`, where `fmt` writes
numbers as the active language does (80,25 in Spanish). Plurals go through `ngettext`; texts made
long before the report (training notes) are stored as a `Message` (msgid and arguments).

This module is a leaf: it imports nothing from convbench but `convbench.errors`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gettext
import io
import numbers
import re
import string
from pathlib import Path
from typing import Any, Iterator

from convbench.errors import ConvbenchError

DOMAIN = "convbench"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
# English is the language of the source strings; every other one has a catalogue in LOCALE_DIR.
SOURCE_LANGUAGE = "en"
LANGUAGES = ("en", "es")

_active: contextvars.ContextVar[str] = contextvars.ContextVar("convbench_language", default=SOURCE_LANGUAGE)


def check_language(lang: str | None) -> str:
    """The language code `lang` names ("en" or "es"), or a one-line error naming the choices.

    Args:
        lang: a code as a user types it ("es", " ES ").

    Returns:
        The code in LANGUAGES.

    Raises:
        ConvbenchError: not a language convbench's reports are written in.
    """
    code = str(lang or "").strip().lower()
    if code not in LANGUAGES:
        raise ConvbenchError(f"unknown report language {lang!r}; pass --lang {' or --lang '.join(LANGUAGES)} "
                             "(en: English, es: Spanish)")
    return code


def catalogue_path(lang: str) -> Path:
    """The .po file of a language's messages (English has none: its messages are the source strings)."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.lru_cache(maxsize=None)
def translations(lang: str) -> gettext.NullTranslations:
    """The gettext translations of one language, compiled in memory from its .po file.

    Args:
        lang: a code of LANGUAGES.

    Returns:
        `gettext.NullTranslations` for English, a `gettext.GNUTranslations` for the others.

    Raises:
        ConvbenchError: the language's catalogue is missing from the installation or unreadable.
    """
    lang = check_language(lang)
    if lang == SOURCE_LANGUAGE:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    path = catalogue_path(lang)
    try:
        with open(path, "rb") as fh:
            catalog = read_po(fh, locale=lang, domain=DOMAIN)
    except (OSError, ValueError) as exc:
        raise ConvbenchError(f"cannot read the {lang} message catalogue {path} ({exc}); reinstall convbench") from None
    buffer = io.BytesIO()
    # Fuzzy entries are guesses `pybabel update` made; a report must not show them as translations.
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(fp=buffer)


def current_language() -> str:
    """The language messages are translated into right now (`use_language` sets it; default en)."""
    return _active.get()


@contextlib.contextmanager
def use_language(lang: str | None) -> Iterator[str]:
    """Translate messages into `lang` inside the block (one report's render), then restore the previous one.

    Args:
        lang: a code of LANGUAGES; None keeps the language already active.

    Yields:
        The language in use.
    """
    code = current_language() if lang is None else check_language(lang)
    translations(code)  # a missing catalogue fails here, before any file is written
    token = _active.set(code)
    try:
        yield code
    finally:
        _active.reset(token)


def _(message: str) -> str:
    """`message` in the active language (the message itself when it has no translation)."""
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message for count `n`, in the active language."""
    return translations(current_language()).ngettext(singular, plural, int(n))


def pgettext(context: str, message: str) -> str:
    """`message` in the active language, where `context` tells translators which meaning it has."""
    return translations(current_language()).pgettext(context, message)


def N_(message: str) -> str:
    """Mark `message` for extraction without translating it now (it is translated where it is shown)."""
    return message


class _LocalFormatter(string.Formatter):
    """str.format whose numeric fields follow the active language (`number`); other fields as usual."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return number(value, format_spec)
        return super().format_field(value, format_spec)


def fmt(message: str, /, **values: Any) -> str:
    """`message.format(**values)`, with every number written as the active language writes it.

    Pass numbers as numbers to have them localised (`{acc:.2f}` gives 80,25 in Spanish) and code or
    config values as strings (`str(0.1)` stays 0.1 inside a YAML snippet).

    Args:
        message: a translated message, e.g. `_("{n} images")`.
        **values: its named placeholders.

    Returns:
        The formatted text.
    """
    return _LocalFormatter().vformat(message, (), values)


class Message(str):
    """An English text that keeps its msgid and arguments, so a report can show it in another language.

    Training and the ablation write such texts into results.json and ablation.json (a note, the
    reason a precision was chosen or a variant skipped) long before, and in another process than,
    the report that shows them. A Message is the English text wherever a str is expected (logs,
    JSON, tests); `message_data` is what to store beside it and `render_stored` shows it in the
    active language.

        Message(N_("{isa} present"), isa="AMX bf16")  # == "AMX bf16 present"
    """

    msgid: str
    args: dict

    def __new__(cls, msgid: str, /, **args: Any) -> "Message":
        # A list argument (of texts or Messages) is shown comma-separated.
        text = msgid.format(**{k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in args.items()})
        self = super().__new__(cls, text)
        self.msgid, self.args = msgid, args
        return self

    def __reduce__(self):
        # pickle and deepcopy (dataclasses.asdict, Ray) rebuild it from msgid and args, not from its text.
        return (_rebuild_message, (self.msgid, dict(self.args)))


def _rebuild_message(msgid: str, args: dict) -> Message:
    return Message(msgid, **args)


def message_data(text: Any) -> Any:
    """The JSON form of a Message ({"msgid", "args"}, arguments likewise), or the text as it is."""
    if isinstance(text, Message):
        return {"msgid": text.msgid, "args": {k: message_data(v) for k, v in text.args.items()}}
    if isinstance(text, list):
        return [message_data(v) for v in text]
    return text


def translate_text(text: Any) -> str:
    """A text made in this process in the active language: a Message from its msgid and arguments,
    any other string looked up as a msgid (itself when the catalogue has no such message)."""
    if isinstance(text, Message):
        return render_stored(message_data(text), fallback=str(text))
    return _(str(text)) if text else ""


def render_stored(data: Any, fallback: str | None = None) -> str:
    """A stored message (`message_data`'s form) in the active language.

    Args:
        data: {"msgid", "args"}, or plain text (shown as it is).
        fallback: shown when `data` is None or unusable (e.g. the English text of a run saved
            before messages were stored).

    Returns:
        The text.
    """
    if isinstance(data, dict) and isinstance(data.get("msgid"), str):
        args = {k: render_stored(v) if isinstance(v, (dict, list)) else v for k, v in (data.get("args") or {}).items()}
        try:
            return fmt(_(data["msgid"]), **args)
        except (KeyError, IndexError, ValueError):
            return fallback if fallback is not None else data["msgid"]
    if isinstance(data, list):
        return ", ".join(render_stored(v) for v in data)
    if data is None:
        return fallback or ""
    return str(data)


# ---------------------------------------------------------------------------------------------
# Numbers


# Digits before the first group separator is written, where CLDR's minimumGroupingDigits says
# more than 1 (Babel 2.19 does not apply it): Spanish writes 2000 imágenes but 45.000 imágenes.
_MINIMUM_GROUPING = {"es": 2}


@functools.lru_cache(maxsize=None)
def _number_symbols(lang: str) -> tuple[str, str, int]:
    """(decimal mark, group separator, minimum digits of a group) of a language; the marks are CLDR's, via Babel."""
    if lang == SOURCE_LANGUAGE:
        return ".", ",", 1
    from babel import Locale
    from babel.numbers import get_decimal_symbol, get_group_symbol

    locale = Locale.parse(lang)
    return get_decimal_symbol(locale), get_group_symbol(locale), _MINIMUM_GROUPING.get(lang, 1)


_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+")


def number(value: float, spec: str = "") -> str:
    """`format(value, spec)` with the decimal mark and digit grouping of the active language.

    The digits are Python's (the same rounding in every language); only the marks change:
    English 80.25 and 45,000, Spanish 80,25 and 45.000 (but 1000, not 1.000).
    For prose and tables only; code, commands and config values keep Python's own spelling.

    Args:
        value: the number.
        spec: a format spec, e.g. ".2f", "+.2f", ",.0f", ".3g".

    Returns:
        The formatted number.
    """
    text = format(value, spec)
    lang = current_language()
    if lang == SOURCE_LANGUAGE:
        return text
    decimal, group, min_grouping = _number_symbols(lang)

    def regroup(match: re.Match) -> str:
        digits = match.group(0).replace(",", "")
        # A group separator only from 3 + min_grouping digits on ("1000" stays whole in Spanish).
        return match.group(0).replace(",", "\x00") if len(digits) >= 3 + min_grouping else digits

    text = _GROUPED.sub(regroup, text)
    return text.replace(".", decimal).replace("\x00", group)


def join_names(names: list[str] | tuple[str, ...]) -> str:
    """"a", "a and b", "a, b and c" in the active language."""
    names = [str(n) for n in names]
    if len(names) <= 1:
        return "".join(names)
    return _("{first} and {last}").format(first=", ".join(names[:-1]), last=names[-1])
