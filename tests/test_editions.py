"""The English and Spanish editions of the course have the same structure.

A Spanish notebook is the English one with its prose translated: the same cells in the same order, the same
cell ids and tags (core/optional), and every code cell the same code except for comments, the text of string
literals a learner reads, and `lang="es"` given to `smtplab.start(...)`. So both editions have the same
exercises, call the same checkers in the same order, and a teacher's plan built from the core cells fits both.
Markdown cells cite the same RFCs.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SPANISH = NOTEBOOKS / "es"

# English notebook -> its Spanish edition (the same names in solutions/).
EDITIONS = {
    "00-welcome": "00-bienvenida",
    "01-smtp-handshake": "01-dialogo-smtp",
    "02-mx-lookup": "02-busqueda-mx",
    "03-relay-and-delivery": "03-reenvio-y-entrega",
    "04-imap": "04-imap",
    "05-auth-tls": "05-autenticacion-tls",
    "06-anti-spam": "06-antispam",
    "07-capstone": "07-proyecto-final",
    "08-wireshark": "08-wireshark",
    "09-the-message": "09-el-mensaje",
    "10-your-own-client": "10-tu-propio-cliente",
    "11-reputation": "11-reputacion",
    "12-tls-downgrade": "12-degradacion-tls",
    "13-pop3-and-imap": "13-pop3-e-imap",
}
PAIRS = [
    (NOTEBOOKS / sub / f"{en}.ipynb", SPANISH / sub / f"{es}.ipynb")
    for sub in ("", "solutions")
    for en, es in EDITIONS.items()
    if (SPANISH / sub / f"{es}.ipynb").exists()
]
RFC = re.compile(r"RFC[\s\u00a0-]*(\d{3,4})")
LANG_ES = [(tokenize.NAME, "lang"), (tokenize.OP, "="), (tokenize.STRING, "<str>")]


def skeleton(source: str) -> list[tuple[int, str]]:
    """The code of a cell with comments, string texts, layout and a `lang="es"` argument taken out."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    magics = [line.strip() for line in source.splitlines() if line.lstrip().startswith(("%", "!"))]
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    except (tokenize.TokenError, SyntaxError) as exc:  # pragma: no cover - shown as a failure to the author
        raise AssertionError(f"cannot read this code cell as Python ({exc}):\n{source}") from exc
    kept: list[tuple[int, str]] = []
    for token in tokens:
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                          tokenize.ENDMARKER):
            continue
        if token.type == tokenize.STRING or token.type == getattr(tokenize, "FSTRING_START", -1):
            kept.append((tokenize.STRING, "<str>"))
            continue
        if token.type in (getattr(tokenize, "FSTRING_MIDDLE", -1), getattr(tokenize, "FSTRING_END", -1)):
            continue
        kept.append((token.type, token.string))
    # smtplab.start(lang="es") and friends: drop the keyword argument (and the comma that joins it).
    out: list[tuple[int, str]] = []
    index = 0
    while index < len(kept):
        if kept[index:index + 3] == LANG_ES:
            index += 3
            if index < len(kept) and kept[index] == (tokenize.OP, ","):
                index += 1
            elif out and out[-1] == (tokenize.OP, ","):
                out.pop()
            continue
        out.append(kept[index])
        index += 1
    return out + [(0, magic) for magic in magics]


def rfcs(source: str) -> list[str]:
    return sorted(RFC.findall(source))


def test_the_editions_table_names_every_english_notebook() -> None:
    english = {path.stem for path in NOTEBOOKS.glob("*.ipynb")}
    assert english == set(EDITIONS), f"update EDITIONS: {sorted(english ^ set(EDITIONS))}"


def test_no_spanish_notebook_is_outside_the_table() -> None:
    spanish = {p.stem for p in SPANISH.glob("*.ipynb")} | {p.stem for p in SPANISH.glob("solutions/*.ipynb")}
    assert spanish <= set(EDITIONS.values()), f"unknown Spanish notebooks: {sorted(spanish - set(EDITIONS.values()))}"


@pytest.mark.parametrize(("english", "spanish"), PAIRS,
                         ids=[f"{es.parent.name}/{es.stem}" for _, es in PAIRS])
def test_spanish_edition_has_the_same_structure(english: Path, spanish: Path) -> None:
    en = nbformat.read(english, as_version=4)
    es = nbformat.read(spanish, as_version=4)
    nbformat.validate(es)
    assert es.metadata.get("kernelspec", {}).get("name") == "python3"
    assert es.metadata.get("language_info", {}).get("name", "python") == "python"
    assert len(es.cells) == len(en.cells), f"{spanish.name}: {len(es.cells)} cells, the English has {len(en.cells)}"
    problems = []
    for index, (a, b) in enumerate(zip(en.cells, es.cells, strict=True)):
        where = f"cell {index} (id {a.get('id')})"
        if a.cell_type != b.cell_type:
            problems.append(f"{where}: {b.cell_type}, the English is {a.cell_type}")
            continue
        if a.get("id") != b.get("id"):
            problems.append(f"{where}: id {b.get('id')!r}")
        if sorted(a.metadata.get("tags", [])) != sorted(b.metadata.get("tags", [])):
            problems.append(f"{where}: tags {b.metadata.get('tags')} != {a.metadata.get('tags')}")
        if a.cell_type == "code" and skeleton(a.source) != skeleton(b.source):
            problems.append(f"{where}: the code differs beyond comments and strings:\n{a.source}\n--- es ---\n{b.source}")
        if a.cell_type == "markdown" and rfcs(a.source) != rfcs(b.source):
            problems.append(f"{where}: cites RFCs {rfcs(b.source)}, the English {rfcs(a.source)}")
    assert not problems, f"{spanish.relative_to(NOTEBOOKS)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("spanish", [es for _, es in PAIRS if es.parent == SPANISH], ids=lambda p: p.stem)
def test_spanish_notebook_starts_its_lab_in_spanish(spanish: Path) -> None:
    code = "\n".join(c.source for c in nbformat.read(spanish, as_version=4).cells if c.cell_type == "code")
    # The capstone starts its lab through the exercise module (nb07.start_mystery_lab, which takes lang too).
    starts = code.count("smtplab.start(") + code.count("start_mystery_lab(")
    assert starts, f"{spanish.name} never starts a lab"
    assert code.count('lang="es"') >= starts, f"{spanish.name}: every smtplab.start(...) needs lang=\"es\""


def test_skeleton_sees_code_changes_and_ignores_prose() -> None:
    english = 'lab = smtplab.start()\nprint("Bob got", n)  # count\nnb01.check_x(a, lab)'
    spanish = 'lab = smtplab.start(lang="es")\nprint("Bob recibió", n)  # cuenta\nnb01.check_x(a, lab)'
    assert skeleton(english) == skeleton(spanish)
    assert skeleton("smtplab.start(scenario=s)") == skeleton('smtplab.start(lang="es", scenario=s)')
    assert skeleton("nb01.check_x(a, lab)") != skeleton("nb01.check_y(a, lab)")
    assert skeleton("x = 1") != skeleton("x = 2")


def test_every_lesson_has_its_spanish_edition_and_solution() -> None:
    missing = [f"{sub}{es}.ipynb" for es in EDITIONS.values() for sub in ("", "solutions/")
               if not (SPANISH / f"{sub}{es}.ipynb").exists()]
    assert not missing, f"lessons without a Spanish edition in notebooks/es/: {missing}"


def test_the_spanish_edition_keeps_the_glossarys_terms() -> None:
    """docs/glosario.md chose one word where translators hesitated: a mail relay is 'relay' (servidor de
    retransmisión), never 'relé', the electrical device."""
    root = NOTEBOOKS.parent
    texts = [*SPANISH.glob("**/*.ipynb"), *(root / "smtplab" / "locale" / "es").glob("**/*.po"),
             root / "docs" / "glosario.md", root / "docs" / "teaching.es.md"]
    found = [str(path.relative_to(root)) for path in texts if re.search(r"\brelés?\b", path.read_text(), re.I)]
    assert not found, f"'relé' (say 'relay', servidor de retransmisión): {found}"
