"""The language smtplab speaks to the learner: gettext with catalogs that Babel reads.

    from smtplab.i18n import _, ngettext, N_

    raise UnknownHost(_("No host named {name}: the lab has {names}.").format(name=name, names=names))
    ngettext("{n} message waits in the queue", "{n} messages wait in the queue", n).format(n=n)

`_()` and `ngettext()` translate when they are CALLED, into the language current at that moment: a
module-level `from smtplab.i18n import _` is right, and a language change takes effect at the next call.
A string kept in a module-level constant or table is marked with `N_()` (it returns its argument untouched,
so extraction finds it) and translated where it is shown: `_(TABLE[key])`. Protocol lines on the wire are
never translated: a server says `250 2.1.0 Sender OK` in every language.

Which language (one per process: a notebook kernel runs one lab at a time, and the lab's server thread must
speak the same language as the cells):
1. the last explicit choice in this process: `smtplab.start(lang="es")`, `Lab(..., lang="es")` when it
   starts, or `smtplab.set_language("es")` (`set_language(None)` forgets the choice);
2. else the environment variable `SMTPLAB_LANG` (`es`, `es_MX`, `es-AR` all mean Spanish);
3. else the locale: the first of `LC_ALL`, `LC_MESSAGES`, `LANG` that is set (`es_ES.UTF-8` means Spanish;
   `C` and `POSIX` mean English);
4. else English.
An explicit language smtplab has no catalog for raises `UnknownLanguage` (naming the ones it has); so does
`start()` for such a `SMTPLAB_LANG`. A locale smtplab does not speak quietly falls back to English.

Catalogs: `smtplab/locale/<lang>/LC_MESSAGES/*.po`, one file per part of the package (core.po, widgets.po,
views.po, exercises-*.po) so translators of different parts never edit the same file. They are package data,
read with Babel and merged into one catalog in memory on first use (nothing to compile: an editable install and
a wheel behave the same). English needs no catalog: the msgids are the English text.

How to translate
----------------
- Add a string: wrap it where it is made, `_("Host {name} is down.").format(name=name)`. Never an f-string
  inside `_()`, never a msgid built from pieces (word order differs between languages); one whole sentence
  per msgid, placeholders named. `ngettext(singular, plural, n)` for counts. No `_()` inside an f-string
  either (extraction cannot see it there). Do not use `_` as a throwaway variable in a module that
  translates (`for _ in ...` hides the function; tests/test_i18n.py finds it).
- Extract the strings of your part (babel.cfg is at the repository root; give folders or files):
  `pybabel extract -F babel.cfg -c Translators: -o /tmp/mine.pot smtplab/widgets`
- Update your .po from it (new msgids come in with an empty msgstr; -N: none is guessed from a similar one):
  `pybabel update -N -i /tmp/mine.pot -o smtplab/locale/es/LC_MESSAGES/widgets.po -l es`
  then translate every entry whose msgstr is empty (and remove a `#, fuzzy` flag only once checked).
  A msgid another .po already translates needs no entry in yours (the catalogs are merged; if both
  translate it, they must agree).
- Check: `pytest tests/test_i18n.py` names every msgid without a Spanish translation (or only a fuzzy one),
  every msgid translated differently in two .po files, .po syntax errors, and placeholders that differ between
  a msgid and its translation (`{name}` in one must be `{name}` in the other). Just the list:
  `python -c "from smtplab.i18n import missing_translations as m; print(*m('es'), sep=chr(10))"`.
- Words: "tú" for the learner; correo (not "mail"), servidor de correo saliente / entrante, agente de
  transferencia de correo (MTA), registro MX, bandeja de entrada, notificación de error / rebote (DSN),
  autenticación SMTP, cifrado SSL/TLS, reputación del remitente, listas negras / listas de bloqueo. Commands,
  reply codes and RFC names stay as they are (EHLO, MAIL FROM, 250 2.1.0, RFC 5321).
"""

from __future__ import annotations

import gettext as _gettext
import io
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from babel.messages.catalog import Catalog

__all__ = [
    "_",
    "N_",
    "LazyText",
    "lazy",
    "shown",
    "ngettext",
    "pgettext",
    "available_languages",
    "current_language",
    "normalize_language",
    "resolve_language",
    "set_language",
    "use_language",
    "LOCALE_DIR",
    "DEFAULT_LANGUAGE",
]

DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
# The variables POSIX consults for the language of messages, in its order of precedence.
LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")
ENVIRONMENT_VARIABLES = ("SMTPLAB_LANG", *LOCALE_VARIABLES)

_lock = threading.Lock()
_chosen: str | None = None  # the explicit choice (start(lang=...), set_language); None: follow the environment
_catalogs: dict[str, _gettext.NullTranslations] = {}


_languages: dict[Path, list[str]] = {}  # per catalog folder: looked up once (every _() call needs it)


def available_languages() -> list[str]:
    """The languages smtplab speaks: English, and every language with a catalog under smtplab/locale."""
    known = _languages.get(LOCALE_DIR)
    if known is None:
        found = {DEFAULT_LANGUAGE}
        if LOCALE_DIR.is_dir():
            for entry in LOCALE_DIR.iterdir():
                if any((entry / "LC_MESSAGES").glob("*.po")):
                    found.add(entry.name)
        known = _languages[LOCALE_DIR] = sorted(found)
    return list(known)


def normalize_language(tag: str) -> str:
    """The language part of a tag or locale name: "es_ES.UTF-8", "es-MX", "ES" -> "es"; "C"/"POSIX" -> "en"."""
    text = tag.strip()
    for separator in ".@":
        text = text.split(separator, 1)[0]
    language = text.replace("-", "_").split("_", 1)[0].lower()
    if language in ("c", "posix"):
        return DEFAULT_LANGUAGE
    return language


def _check(language: str, given: str, source: str) -> str:
    from .errors import UnknownLanguage  # errors.py translates its messages with this module

    known = available_languages()
    if language not in known:
        raise UnknownLanguage(given, known, source)
    return language


def _from_environment(environ: Mapping[str, str], strict: bool) -> str:
    tag = environ.get("SMTPLAB_LANG", "").strip()
    if tag:
        language = normalize_language(tag)
        if language in available_languages():
            return language
        if strict:
            _check(language, tag, "SMTPLAB_LANG")
        return DEFAULT_LANGUAGE
    for variable in LOCALE_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            language = normalize_language(value)
            # A locale in a language smtplab does not speak is no error: the learner did not ask smtplab for it.
            return language if language in available_languages() else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def resolve_language(lang: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language `start(lang=lang)` would use, checked: raises UnknownLanguage for one without a catalog.

    `lang` first, else the explicit choice made earlier in this process, else SMTPLAB_LANG, else the locale,
    else English (see the module's documentation).
    """
    if lang is not None:
        return _check(normalize_language(lang), lang, "lang")
    if _chosen is not None:
        return _chosen
    return _from_environment(os.environ if environ is None else environ, strict=True)


_from_variables: dict[tuple[Path, tuple[str, ...]], str] = {}  # the variables' values -> their language


def current_language() -> str:
    """The language learner-facing text is in right now (never raises: an unknown SMTPLAB_LANG means English)."""
    if _chosen is not None:
        return _chosen
    # Every _() call asks: read the variables each time (a cell may set them), decide once per set of values.
    key = (LOCALE_DIR, tuple(os.environ.get(name, "") for name in ENVIRONMENT_VARIABLES))
    language = _from_variables.get(key)
    if language is None:
        language = _from_variables[key] = _from_environment(os.environ, strict=False)
    return language


def set_language(lang: str | None) -> str:
    """Speak `lang` ("en", "es", or a locale name like "es_AR") from now on in this process; return it.

    `None` forgets an earlier choice, so SMTPLAB_LANG and the locale decide again. Raises UnknownLanguage
    (before changing anything) for a language smtplab has no catalog for.
    """
    global _chosen
    language = None if lang is None else _check(normalize_language(lang), lang, "lang")
    with _lock:
        _chosen = language
    return current_language()


@contextmanager
def use_language(lang: str | None) -> Iterator[str]:
    """Speak `lang` inside the `with` block, then go back to the choice in force before it."""
    global _chosen
    previous = _chosen
    language = set_language(lang)
    try:
        yield language
    finally:
        with _lock:
            _chosen = previous


def catalog_files(language: str) -> list[Path]:
    """The .po files of `language`, core.po first (its header gives the merged catalog's plural rule)."""
    files = sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.po"))
    return sorted(files, key=lambda path: path.name != "core.po")


def merged_catalog(language: str) -> Catalog | None:
    """Every translated, non-fuzzy entry of `language`'s .po files in one Babel catalog (None: no .po file)."""
    # Babel loads only when a learner asks for another language: an English lab never pays for it.
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po

    merged: Catalog | None = None
    for path in catalog_files(language):
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=language)
        if merged is None:
            merged = Catalog(locale=language)
            merged.mime_headers = catalog.mime_headers  # Plural-Forms, charset
        for message in catalog:
            if not message.id or message.fuzzy or merged.get(message.id, message.context) is not None:
                continue  # tests/test_i18n.py fails on a msgid translated differently in two files
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if all(strings):
                merged[message.id] = message
    return merged


def _load(language: str) -> _gettext.NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return _gettext.NullTranslations()
    from babel.messages.mofile import write_mo

    merged = merged_catalog(language)
    if merged is None:
        return _gettext.NullTranslations()
    buffer = io.BytesIO()
    write_mo(buffer, merged, use_fuzzy=False)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def translations(language: str | None = None) -> _gettext.NullTranslations:
    """The merged catalog of `language` (the current one by default), loaded once per process."""
    language = current_language() if language is None else language
    catalog = _catalogs.get(language)
    if catalog is None:
        with _lock:
            catalog = _catalogs.get(language)
            if catalog is None:
                catalog = _catalogs[language] = _load(language)
    return catalog


def _(message: str) -> str:
    """Translate `message` into the current language (the English msgid itself when there is no translation)."""
    return translations().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """Translate a message with a count: the form that `n` needs in the current language."""
    return translations().ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """Translate a short `message` whose meaning depends on `context` (e.g. a one-word label)."""
    return translations().pgettext(context, message)


def N_(message: str) -> str:  # noqa: N802 (the gettext name extraction looks for)
    """Mark `message` for extraction without translating it now: translate it with `_()` where it is shown."""
    return message


class LazyText(str):
    """Text kept as its msgid and named parameters, shown in the language current when it is READ.

    It IS the English text (a `str`: code that stores, compares or searches it sees English), and
    `translated()` renders it again in the current language. The trace keeps its descriptions this way: an
    event recorded by the lab's thread reads in the learner's language whenever and wherever it is shown.
    Make one with `lazy(N_("connection from {peer}"), peer=peer)` (the `N_` lets extraction find the msgid).
    """

    msgid: str
    params: dict[str, object]

    def __new__(cls, msgid: str, /, **params: object) -> LazyText:
        self = super().__new__(cls, msgid.format(**params))
        self.msgid, self.params = msgid, params
        return self

    def translated(self, language: str | None = None) -> str:
        """The text in `language` (the current one by default); parameters that are LazyText translate too."""
        params = {name: value.translated(language) if isinstance(value, LazyText) else value
                  for name, value in self.params.items()}
        return translations(language).gettext(self.msgid).format(**params)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_lazy, (self.msgid, self.params)


def _rebuild_lazy(msgid: str, params: dict[str, object]) -> LazyText:
    return LazyText(msgid, **params)


def lazy(msgid: str, /, **params: object) -> LazyText:
    """`msgid.format(**params)`, translated each time it is shown: `lazy(N_("fault set: {fault}"), fault=f)`."""
    return LazyText(msgid, **params)


def shown(text: str) -> str:
    """`text` in the current language if it is a LazyText, else as it is (a protocol line stays a protocol line)."""
    return text.translated() if isinstance(text, LazyText) else text


def missing_translations(language: str = "es") -> list[str]:
    """Each msgid in the package's source with no translation in `language`, as "file:line: msgid" lines."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    root = Path(__file__).resolve().parent
    config = root.parent / "babel.cfg"
    method_map: list[tuple[str, str]] = [("**.py", "python")]
    options_map: dict[str, dict[str, Any]] = {}
    if config.is_file():
        with config.open() as handle:
            method_map, options_map = parse_mapping_cfg(handle, str(config))
        method_map = [(pattern.removeprefix("smtplab/"), method) for pattern, method in method_map]
        options_map = {pattern.removeprefix("smtplab/"): options for pattern, options in options_map.items()}
    catalog = merged_catalog(language)
    lines = []
    for filename, lineno, message, _comments, context in extract_from_dir(root, method_map, options_map):
        ids = message if isinstance(message, tuple) else (message,)
        msgid = ids[0]
        if not msgid:
            continue
        if catalog is None or catalog.get(msgid, context) is None:
            lines.append(f"smtplab/{filename}:{lineno}: {msgid!r}")
    return lines

