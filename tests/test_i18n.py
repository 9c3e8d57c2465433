"""The package speaks the learner's language: language choice, catalogs complete and consistent, wire unchanged."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.pofile import PoFileError, read_po

import smtplab
from smtplab import i18n
from smtplab.errors import UnknownLanguage
from smtplab.i18n import _, current_language, ngettext, resolve_language, set_language, use_language

LANGUAGES = [language for language in i18n.available_languages() if language != i18n.DEFAULT_LANGUAGE]


# --- checks on a directory of catalogs (run on the real one, and on broken ones to prove they can fail) ---

def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a str.format template ("{name!r}" and "{name:>3}" count as written)."""
    try:
        return {
            "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            for _literal, field, spec, conversion in string.Formatter().parse(text)
            if field is not None
        }
    except ValueError:  # not a valid template: compare the braces as they are written
        return set(re.findall(r"\{[^{}]*\}", text.replace("{{", "").replace("}}", "")))


# A .po line is a comment, a keyword and one quoted string, or a continuation string. Babel's reader is lenient
# (it drops an unterminated quote's last character), so the lines are checked as written.
PO_LINE = re.compile(r'^(#.*|(msgctxt|msgid|msgid_plural|msgstr|msgstr\[\d+\]) +"([^"\\]|\\.)*"|"([^"\\]|\\.)*")?$')


def syntax_errors(path: Path) -> list[str]:
    """Lines of a .po file that are not .po syntax."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"{path.name}:{number}: not .po syntax: {line!r}"
            for number, line in enumerate(lines, 1) if not PO_LINE.match(line.strip())]


def catalog_problems(directory: Path) -> list[str]:
    """Syntax errors, differing headers, placeholder mismatches and conflicting translations in the .po files."""
    problems: list[str] = []
    seen: dict[tuple[str, str | None], tuple[str, object]] = {}
    plural_rules: dict[str, str] = {}
    for path in sorted(directory.glob("*.po")):
        problems += syntax_errors(path)
        try:
            with path.open("rb") as handle:
                catalog = read_po(handle, abort_invalid=True)
        except PoFileError as exc:
            problems.append(f"{path.name}: not a valid .po file: {exc}")
            continue
        plural_rules[path.name] = catalog.plural_forms
        for message in catalog:
            if not message.id:
                continue
            ids = message.id if isinstance(message.id, tuple) else (message.id,)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if message.fuzzy or not all(strings):
                continue  # untranslated: test_every_msgid_has_a_translation names it if the source uses it
            wanted = set().union(*(placeholders(text) for text in ids))
            for form, text in enumerate(strings):
                got = placeholders(text)
                # A plural's forms may drop the count ("un mensaje"), never add or rename a field.
                right = got == placeholders(ids[-1]) if len(ids) > 1 and form == len(strings) - 1 else got <= wanted
                if len(ids) == 1:
                    right = got == wanted
                if not right:
                    problems.append(f"{path.name}: {ids[0]!r}: placeholders {sorted(wanted)} "
                                    f"but the translation has {sorted(got)}: {text!r}")
            key = (ids[0], message.context)
            if key in seen and seen[key][1] != message.string:
                problems.append(f"{ids[0]!r} is translated differently in {seen[key][0]} and {path.name}: "
                                f"{seen[key][1]!r} / {message.string!r}")
            seen.setdefault(key, (path.name, message.string))
    if len(set(plural_rules.values())) > 1:
        problems.append(f"the .po files disagree on Plural-Forms: {plural_rules}")
    return problems


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogs_are_valid_and_consistent(language: str) -> None:
    problems = catalog_problems(i18n.LOCALE_DIR / language / "LC_MESSAGES")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_msgid_has_a_translation(language: str) -> None:
    missing = i18n.missing_translations(language)
    assert not missing, f"{len(missing)} msgids have no {language} translation:\n" + "\n".join(missing)


def test_extraction_finds_the_package_strings() -> None:
    """The check above is only as good as the extraction: it must see _(), ngettext() and N_() calls."""
    from babel.messages.extract import extract_from_dir

    found = {message if isinstance(message, str) else message[0]
             for _file, _line, message, _comments, _context in extract_from_dir(Path(i18n.__file__).parent)}
    assert any(msgid.startswith("smtplab has no translation for the language") for msgid in found)


def shadowed_gettext(source: str, filename: str) -> list[str]:
    """Functions (and the module) that bind `_` in a module that imports `_` from smtplab.i18n: there `_("...")`
    raises UnboundLocalError or calls a leftover value (`for name, _ in pairs` makes `_` local to the function)."""
    import symtable

    top = symtable.symtable(source, filename, "exec")
    if "_" not in top.get_identifiers() or not top.lookup("_").is_imported():
        return []
    found = []

    def walk(table: symtable.SymbolTable) -> None:
        comprehension = table.get_name() in ("listcomp", "setcomp", "dictcomp", "genexpr")
        if not comprehension and "_" in table.get_identifiers() and table.lookup("_").is_assigned():
            found.append(f"{filename}:{table.get_lineno()}: {table.get_name()} binds _")
        for child in table.get_children():
            walk(child)

    walk(top)
    return found


def test_no_module_hides_the_gettext_function() -> None:
    package = Path(i18n.__file__).parent
    found = [line for path in sorted(package.rglob("*.py"))
             for line in shadowed_gettext(path.read_text(), str(path.relative_to(package.parent)))]
    assert not found, "rename these throwaway variables (e.g. `_password`):\n" + "\n".join(found)
    assert shadowed_gettext("from smtplab.i18n import _\ndef f(pairs):\n    for a, _ in pairs:\n        pass\n",
                            "example.py") == ["example.py:2: f binds _"]


def gettext_in_fstrings(source: str, filename: str) -> list[str]:
    """`_("...")` / `ngettext("...")` / `N_("...")` written inside an f-string: Python 3.11's tokenizer (and so
    Babel's extraction) sees one string there, so the msgid would never reach a catalog. (`_(variable)` is fine:
    its msgid is marked where the variable is made.)"""
    import io
    import tokenize

    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        prefix = token.string[:token.string.find(token.string.lstrip("rRbBuUfF")[:1])].lower()
        if token.type == tokenize.STRING and "f" in prefix and re.search(r"(?<![\w.])(_|N_|ngettext|pgettext)\(\s*['\"]",
                                                                           token.string):
            found.append(f"{filename}:{token.start[0]}: {token.string[:60]}")
    return found


def test_no_gettext_call_hides_in_an_fstring() -> None:
    package = Path(i18n.__file__).parent
    found = [line for path in sorted(package.rglob("*.py"))
             for line in gettext_in_fstrings(path.read_text(), str(path.relative_to(package.parent)))]
    assert not found, "compute the translation before the f-string:\n" + "\n".join(found)
    assert gettext_in_fstrings("x = f\"<i>{_('next:')}</i>\"\n", "example.py") == [
        "example.py:1: f\"<i>{_('next:')}</i>\""]
    assert gettext_in_fstrings("x = _(\"a {b}\").format(b=f\"{c} {_(d)}\")\n", "example.py") == []


def write_po(directory: Path, name: str, entries: str, plural: str = "nplurals=2; plural=(n != 1);") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(
        'msgid ""\nmsgstr ""\n"Language: es\\n"\n"Content-Type: text/plain; charset=UTF-8\\n"\n'
        f'"Plural-Forms: {plural}\\n"\n\n' + entries, encoding="utf-8")


def test_the_catalog_checks_catch_broken_catalogs(tmp_path: Path) -> None:
    write_po(tmp_path, "core.po", 'msgid "Host {name} is down."\nmsgstr "El host {nombre} está caído."\n\n'
             'msgid "Queue"\nmsgstr "Cola"\n')
    write_po(tmp_path, "widgets.po", 'msgid "Queue"\nmsgstr "Cola de correo"\n')
    write_po(tmp_path, "views.po", 'msgid "Trace"\nmsgstr "Traza\n\nmsgid "Ladder"\nmsgstr "Escalera"\n',
             plural="nplurals=1; plural=0;")
    write_po(tmp_path, "exercises-a.po", 'msgid "Trace"\nbogus "x"\nmsgstr "Traza"\n')
    problems = "\n".join(catalog_problems(tmp_path))
    assert "{name}" in problems and "{nombre}" in problems
    assert "'Queue' is translated differently in core.po and widgets.po" in problems
    assert "views.po:8: not .po syntax: 'msgstr \"Traza'" in problems
    assert "exercises-a.po: not a valid .po file" in problems
    assert "disagree on Plural-Forms" in problems


def test_fuzzy_and_empty_translations_count_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_po(tmp_path / "es" / "LC_MESSAGES", "core.po",
             '#, fuzzy\nmsgid "Queue"\nmsgstr "Cola"\n\nmsgid "Trace"\nmsgstr ""\n\n'
             'msgid "Host"\nmsgstr "Servidor"\n')
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    merged = i18n.merged_catalog("es")
    assert merged is not None
    assert merged.get("Host") is not None and merged.get("Queue") is None and merged.get("Trace") is None


# --- choosing the language ---

@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No language in the environment and no explicit choice: each test sets what it needs."""
    for variable in ("SMTPLAB_LANG", "LANGUAGE", *i18n.LOCALE_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    set_language(None)
    return monkeypatch


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, "en"),
    ({"LANG": "es_ES.UTF-8"}, "es"),
    ({"LANG": "es_MX"}, "es"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "fr_FR.UTF-8"}, "en"),  # a locale smtplab does not speak: English, quietly
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "es_AR.UTF-8"}, "es"),
    ({"LC_ALL": "C", "LC_MESSAGES": "es_ES.UTF-8"}, "en"),  # LC_ALL overrides the others (POSIX)
    ({"LANG": "es_ES.UTF-8", "SMTPLAB_LANG": "en"}, "en"),
    ({"LANG": "C", "SMTPLAB_LANG": "es-AR"}, "es"),
])
def test_the_environment_chooses_the_language(environment: pytest.MonkeyPatch, variables: dict[str, str],
                                              expected: str) -> None:
    for name, value in variables.items():
        environment.setenv(name, value)
    assert resolve_language() == expected
    assert current_language() == expected


def test_an_explicit_choice_wins_over_the_environment(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("SMTPLAB_LANG", "en")
    assert set_language("es_ES") == "es"
    assert current_language() == resolve_language() == "es"
    assert resolve_language("en") == "en"
    assert set_language(None) == "en"


def test_an_unknown_language_names_the_known_ones(environment: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownLanguage) as raised:
        set_language("xx")
    assert isinstance(raised.value, smtplab.SmtpLabError)
    assert raised.value.known == i18n.available_languages()
    assert "'xx'" in str(raised.value) and "en, es" in str(raised.value)
    assert current_language() == "en"
    environment.setenv("SMTPLAB_LANG", "klingon")
    assert current_language() == "en"  # text is still shown; start() is where the learner hears about it
    with pytest.raises(UnknownLanguage, match="SMTPLAB_LANG='klingon'"):
        resolve_language()


def test_start_checks_the_language_before_anything_happens(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with smtplab.start() as running:
        with pytest.raises(UnknownLanguage):
            smtplab.start(directory=tmp_path / "lab", lang="fr")
        assert smtplab.current() is running and running.running  # the lab in use was not stopped
        assert not (tmp_path / "lab").exists()
        environment.setenv("SMTPLAB_LANG", "fr")
        with pytest.raises(UnknownLanguage, match="SMTPLAB_LANG"):
            smtplab.Lab(directory=tmp_path / "lab")
        assert not (tmp_path / "lab").exists()


def test_a_lab_made_with_a_language_speaks_it_once_started(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lab = smtplab.Lab(directory=tmp_path / "lab", lang="es_AR")
    assert lab.language == "es" and current_language() == "en"  # nothing changes before it starts
    with lab.start():
        assert current_language() == "es"
        with pytest.raises(smtplab.UnknownHost, match="no hay ningún host 'nowhere' en este laboratorio"):
            lab.host("nowhere")


def test_a_module_level_import_follows_the_language_at_once(environment: pytest.MonkeyPatch) -> None:
    """`_` translates when called: a module imported in English speaks Spanish after the switch."""
    msgid = "smtplab has no translation for the language {given!r}. It speaks: {known}. " \
            "Give one of them, e.g. lang={example!r}."
    assert _(msgid) == msgid
    with use_language("es"):
        assert _(msgid).startswith("smtplab no está traducido al idioma")
        with pytest.raises(UnknownLanguage, match="no está traducido"):
            set_language("fr")
    assert _(msgid) == msgid and current_language() == "en"


def test_plurals_follow_the_language_rule(environment: pytest.MonkeyPatch) -> None:
    assert ngettext("{n} message", "{n} messages", 1) == "{n} message"
    assert ngettext("{n} message", "{n} messages", 0) == "{n} messages"
    with use_language("es"):
        # Untranslated text falls back to English with English plural rules; the test above forbids it in the package.
        assert ngettext("{n} message", "{n} messages", 2) == "{n} messages"
        assert i18n.translations().ngettext("a", "b", 1) == "a"
        assert i18n.translations().plural(0) == 1  # Spanish: 0 takes the plural form, like English


def test_the_shared_exercise_words_are_spanish_with_lang_es() -> None:
    """What every check shares ("not answered yet", the changed-answer note) follows the learner's language."""
    from smtplab.exercises import changed_answer_note, unanswered
    from smtplab.i18n import use_language

    with use_language("es"):
        assert unanswered("Escribe tu respuesta.").message == "aún sin responder. Escribe tu respuesta."
        assert changed_answer_note("a", "b").startswith("(Has cambiado tu respuesta a 'b'")
    assert unanswered("Type it.").message == "not answered yet. Type it."


# --- acceptance: with lang="es" the learner reads Spanish, and the wire is what it is in English ---

def smtp_conversation(lab: smtplab.Lab) -> tuple[list[str], list[str]]:
    """A real smtplib session with the MX (a known and an unknown recipient, a message): the replies smtplib
    got, and the protocol lines the trace recorded; queue ids (random) are blanked."""
    import smtplib

    mx = lab.host("mx1.example.net")
    replies = []
    with smtplib.SMTP(mx.address, mx.ports["smtp"], local_hostname="client.example.com", timeout=10) as client:
        replies.append(client.ehlo())
        replies.append(client.mail("alice@example.org"))
        replies.append(client.rcpt("bob@example.net"))
        replies.append(client.rcpt("nobody@example.net"))
        replies.append(client.data(b"Subject: hola\r\n\r\nSame bytes in every language.\r\n"))
    def blank(text: str) -> str:
        return re.sub(r"(queued|delivered) as \S+", r"\1 as ID", text)

    wire = [f"{code} {blank(text.decode())}" for code, text in replies]
    lines = [f"{e.direction}: {blank(e.text)}" for e in lab.trace.events()
             if e.protocol == "smtp" and e.kind == "line" and e.peer == "client" and e.host == mx.name]
    return wire, lines


def test_spanish_lab_speaks_spanish_and_its_wire_is_english(tmp_path: Path) -> None:
    with smtplab.start(lang="en") as english:
        english_wire = smtp_conversation(english)
    with smtplab.start(lang="es") as lab:
        assert current_language() == "es"
        spanish_wire = smtp_conversation(lab)
        # An error.
        with pytest.raises(smtplab.SmtpLabError, match="el reloj del laboratorio solo avanza"):
            lab.clock.advance(-5)
        # A wrong exercise answer (lesson 09's encoded-word check, translated on main by its owners).
        from smtplab.exercises import message

        wrong = message.check_encoded_word("=?utf-8?q?Caf=C3=A9?=")
        assert not wrong.ok and wrong.answered
        assert "un lector de correo decodifica tu respuesta como 'Café'" in wrong.message
        assert wrong.exercise.startswith("Ejercicio 2")
        # A reply's explanation, and a queue state.
        assert smtplab.explain(550, "5.1.1").startswith("Buzón no disponible")
        assert "no existe ese usuario" in smtplab.explain(550, "5.1.1")
        from smtplab.mail.queue import state_name
        assert state_name("deferred") == "aplazado"
        # A widget: its buttons, its summary, a reply card.
        from smtplab.widgets import HandshakeConsole, RelayTracker

        console = HandshakeConsole(lab)
        assert console.send_button.description == "Enviar" and console.buttons["message"].description == "mensaje"
        assert console.buttons["EHLO"].description == "EHLO"  # command names are protocol
        assert console.summary().startswith("Consola del diálogo SMTP")
        console.send_line("EHLO client.example.com")
        assert "significado:" in console.reply_html.value and "siguiente paso:" in console.reply_html.value
        tracker = RelayTracker(lab)
        assert [label for label, _value in tracker.faults["mx1.example.net"].options][:2] == ["normal", "caído"]
        tracker.faults["mx1.example.net"].value = "down"  # the values stay the identifiers the code uses
        assert not lab.host("mx1.example.net").is_up
    assert spanish_wire == english_wire
    assert any(line.startswith("S: 550 5.1.1") for line in spanish_wire[1])  # the refusal is on the wire, in English


def test_the_command_line_speaks_spanish() -> None:
    import os
    import subprocess
    import sys

    def run(*args: str, lang: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "smtplab", *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SMTPLAB_LANG": lang})

    spanish, english = run("--help", lang="es"), run("--help", lang="en")
    assert spanish.returncode == english.returncode == 0
    assert spanish.stdout.startswith("uso: python -m smtplab") and "muestra esta ayuda y termina" in spanish.stdout
    assert "inicia el laboratorio" in spanish.stdout and "órdenes:" in spanish.stdout
    assert english.stdout.startswith("usage: python -m smtplab") and "start the lab" in english.stdout
    assert "uso:" in run("up", "--ports", "5", lang="es").stderr
    unknown = run("--help", lang="xx")
    assert unknown.returncode == 2 and "SMTPLAB_LANG='xx'" in unknown.stderr


def test_a_spanish_ladder_has_a_spanish_legend() -> None:
    """The ladder of a message sent in a Spanish lab: its legend in Spanish, its protocol lines as sent."""
    from smtplab.i18n import merged_catalog

    catalog = merged_catalog("es")
    if catalog is None or catalog.get("2xx done") is None:
        pytest.skip("the views' legend is not translated yet (views.po, engineer outputs)")
    with smtplab.start(lang="es") as lab:
        sent = lab.send("alice@example.org", "bob@example.net", "Hola", "¿Qué tal?\n")
        assert lab.wait_for_delivery(sent.queue_id)
        source = lab.ladder(sent.queue_id).source
    assert catalog.get("2xx done").string in source and "2xx done" not in source
    assert "250 2.0.0" in source  # replies stay as they crossed the wire


def test_a_spanish_learner_can_answer_and_write_in_spanish() -> None:
    """The Spanish edition's learner answers 'rechaza', names the notebook 'cuaderno', and writes scams in Spanish."""
    from smtplab.auth import spam
    from smtplab.exercises import msa
    from smtplab.i18n import use_language

    assert msa._verdict("Rechaza") == "refuse" and msa._verdict("acepta") == "accept"
    scam = b"From: a@example.org\r\nSubject: Premio\r\n\r\nHas ganado la loteria: urgente, verifica tu cuenta.\r\n"
    assert "BAIT_WORDS" in [hit.name for hit in spam.score(scam).hits]
    rule = next(r for r in spam.RULES if r.name == "BAIT_WORDS")
    with use_language("es"):
        assert rule.description != rule.text  # shown in Spanish, as .explain() is
    assert rule.description == rule.text
