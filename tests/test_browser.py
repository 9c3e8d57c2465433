"""The course in a real browser: JupyterLab on loopback, driven by Playwright with Debian's chromium.

Headless runs (test_notebooks.py) prove the kernel side; this is what a learner sees. Every course notebook
is opened in JupyterLab and run from the Run menu, the widgets are clicked, and a screenshot of the whole
notebook goes to test-artifacts/browser/<name>.png. No browser is downloaded: the system chromium is used
(Debian: apt install chromium), started so that it does not try to reach the Internet.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import IN_CI, require_tool

if not IN_CI:  # CI installs requirements.txt: there a missing Playwright fails, it is not skipped
    pytest.importorskip("playwright.sync_api")
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright  # noqa: E402
from playwright.sync_api import Error as PlaywrightError  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # without these chromium keeps calling home (updates, safe browsing, sync) on a network that has no Internet
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START = 60  # seconds for JupyterLab to answer /api/status
RUN_ALL = 90  # seconds for a notebook's cells to run in the browser (headless they take a few seconds)
WIDGETS_RENDER = 30  # seconds for the widget views to replace "Loading widget..."
CLICK_REPLY = 15_000  # milliseconds for a widget click to reach the kernel and its answer to be shown

# What each course notebook shows: widget views and Diagram figures (lab.ladder / lab.topology) in its outputs.
EXPECTED = {
    "00-welcome": {"widgets": 0, "diagrams": 2},
    "01-smtp-handshake": {"widgets": 1, "diagrams": 2},
    "02-mx-lookup": {"widgets": 1, "diagrams": 1},
    "03-relay-and-delivery": {"widgets": 1, "diagrams": 2},
    "04-imap": {"widgets": 1, "diagrams": 0},
    "05-auth-tls": {"widgets": 0, "diagrams": 3},
    "06-anti-spam": {"widgets": 0, "diagrams": 0},
    "07-capstone": {"widgets": 0, "diagrams": 2},
    "08-wireshark": {"widgets": 0, "diagrams": 0},
    "09-the-message": {"widgets": 0, "diagrams": 0},
    "10-your-own-client": {"widgets": 0, "diagrams": 0},
    "11-reputation": {"widgets": 0, "diagrams": 0},
    "12-tls-downgrade": {"widgets": 0, "diagrams": 3},
    "13-pop3-and-imap": {"widgets": 0, "diagrams": 0},
}

# JupyterLab's user settings for the test: every cell stays in the DOM (no windowing), no "scroll past the
# end" padding (the screenshot ends with the last cell), and no question about fetching news from the Internet.
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "scrollPastEnd": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


@dataclass(frozen=True)
class JupyterServer:
    """A running `jupyter lab` serving a copy of the course."""

    base_url: str
    token: str
    root_dir: Path

    def url(self, path: str) -> str:
        separator = "&" if "?" in path else "?"
        return f"{self.base_url}/{path}{separator}token={self.token}"

    def api(self, method: str, path: str, body: object = None, prefix: str = "api") -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}/{prefix}/{path}", method=method, data=data,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        sessions = self.api("GET", "sessions")
        assert isinstance(sessions, list)
        for session in sessions:
            self.api("DELETE", f"sessions/{session['id']}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """JupyterLab on loopback, on a copy of notebooks/ (the tests never write into the repository)."""
    home = tmp_path_factory.mktemp("jupyter")
    root_dir = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", root_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = home / "settings"
    for name, values in USER_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    # Nothing from the user's own Jupyter/IPython setup (kernels, config, startup files) leaks into the test.
    env = {**os.environ, **{var: str(home / var.lower()) for var in
                            ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")}}
    token = secrets.token_hex(16)
    port = free_port()
    log = (home / "jupyter.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", "--ServerApp.disable_check_xsrf=False",
            f"--ServerApp.root_dir={root_dir}", "--ServerApp.allow_root=True",  # CI runs as root
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
            # nothing fetched from the Internet: no news, no update check, no extension catalogue
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
    )
    running = JupyterServer(f"http://127.0.0.1:{port}", token, root_dir)
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{(home / 'jupyter.log').read_text()}")
            try:
                running.api("GET", "status")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in {SERVER_START} s:\n{(home / 'jupyter.log').read_text()}")
                time.sleep(0.25)
        yield running
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's chromium, headless, with a fresh profile."""
    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, jupyter: JupyterServer) -> Iterator[Page]:
    """A new tab; afterwards it is closed and the notebook's kernel shut down, so each notebook starts fresh."""
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()
        jupyter.shut_down_kernels()


# --- driving JupyterLab ---------------------------------------------------------------------------------------

CELL_STATE = """(upto) => {
  const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')];
  const code = cells.slice(0, upto === null ? cells.length : upto).filter(c => c.classList.contains('jp-CodeCell'));
  const indicator = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  return {
    kernel: indicator ? indicator.dataset.status : null,
    pending: code.filter(c => !/^\\[\\d+\\]:$/.test(c.querySelector('.jp-InputPrompt').textContent.trim())).length,
    stderr: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length,
  };
}"""


def open_notebook(page: Page, jupyter: JupyterServer, name: str) -> None:
    """Open `name` in a fresh workspace, wait for its kernel to be idle, and fold the file browser away."""
    page.goto(jupyter.url(f"lab/tree/{name}.ipynb?reset"))
    expect(page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first).to_be_visible(timeout=60_000)
    expect(page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName")).to_have_text(re.compile("Python 3"),
                                                                                   timeout=60_000)
    expect(page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=60_000)
    sidebar = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if sidebar.count():
        sidebar.click()


def run_menu(page: Page, command: str, label: str = "Run") -> None:
    """Choose an item of JupyterLab's Run menu (`label`: its name in the interface's language), as a learner would."""
    page.locator(".lm-MenuBar-content").get_by_role("menuitem", name=label, exact=True).click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


def wait_until_run(page: Page, upto: int | None = None) -> None:
    """Wait until every code cell (of the first `upto` cells) has an execution count and the kernel is idle.

    Run All stops at a cell that raises: then the error output is there and the wait ends too.
    """
    deadline = time.monotonic() + RUN_ALL
    while True:
        state = page.evaluate(CELL_STATE, upto)
        if state["kernel"] == "idle" and (state["pending"] == 0 or state["stderr"]):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"cells still not run after {RUN_ALL} s: {state}")
        time.sleep(0.2)


WIDGET_STATE = """() => {
  const notebook = document.querySelector('.jp-NotebookPanel .jp-Notebook');
  return {
    widgets: notebook.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length,
    loading: notebook.innerText.includes('Loading widget'),
    broken: notebook.innerText.includes('Error displaying widget'),
  };
}"""


def wait_for_widgets(page: Page, count: int) -> None:
    """Wait (bounded) until `count` widget views replaced their "Loading widget..."; the assertions say what is not."""
    deadline = time.monotonic() + WIDGETS_RENDER
    while time.monotonic() < deadline:
        state = page.evaluate(WIDGET_STATE)
        if state["broken"] or (state["widgets"] >= count and not state["loading"]):
            return
        time.sleep(0.2)


def select_cell(page: Page, index: int) -> None:
    cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputPrompt").click()
    expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))


def widget_output(page: Page, cell: int) -> Locator:
    """The rendered widget view in the output of cell number `cell`."""
    view = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(cell).locator(
        ".jp-OutputArea-output > .jupyter-widgets")
    expect(view).to_have_count(1, timeout=WIDGETS_RENDER * 1000)
    return view


def screenshot(page: Page, name: str) -> Path:
    """Save the whole notebook, top to bottom: the window is made as tall as the notebook."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    hidden = page.evaluate("""() => {
      const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
      return outer ? outer.scrollHeight - outer.clientHeight : 0;
    }""")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": VIEWPORT["height"] + max(0, hidden)})
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)
    return path


# --- what a learner does with the widgets ---------------------------------------------------------------------

def talk_to_the_console(console: Locator) -> None:
    """HandshakeConsole: a command button puts EHLO on the line, Send sends it, the 250 reply is shown."""
    console.get_by_role("button", name="EHLO", exact=True).click()
    line = console.get_by_placeholder("type any line")
    expect(line).to_have_value("EHLO client.local", timeout=CLICK_REPLY)
    console.get_by_role("button", name="Send").click()
    expect(console.locator(".smtplab-reply .smtplab-code")).to_have_text("250", timeout=CLICK_REPLY)
    expect(console.locator(".smtplab-transcript")).to_contain_text("C: EHLO client.local")
    expect(line).to_have_value("")
    console.get_by_role("tab", name="ladder diagram").click()
    expect(console.locator(".smtplab-diagram svg")).to_be_visible(timeout=CLICK_REPLY)


def open_a_message(viewer: Locator) -> None:
    """MailboxViewer: log in over IMAP, pick the first message, see its route, headers and body."""
    viewer.get_by_role("button", name="Log in (IMAP)").click()
    messages = viewer.locator(".widget-select select")
    expect(messages.locator("option")).to_have_count(4, timeout=CLICK_REPLY)  # the four Alice sent
    first = messages.locator("option").first.get_attribute("value") or ""
    subjects = [s for s in ("Weekly newsletter", "Lunch on Friday?", "Project report", "Photos from the trip")
                if s in first]
    assert subjects, f"the first message in the list is not one Alice sent: {first!r}"
    subject = subjects[0]
    messages.select_option(index=0)
    view = viewer.locator(".smtplab-table")
    expect(view).to_have_count(2, timeout=CLICK_REPLY)  # the route (Received hops) and the headers
    expect(view.first).to_contain_text("mx1.example.net")
    expect(view.nth(1)).to_contain_text(subject)
    expect(viewer.locator("pre.smtplab-body")).to_contain_text("Hi Bob,")


# notebook -> (the Python name of the widget it shows, what to do with it)
INTERACTIONS: dict[str, tuple[str, Callable[[Locator], None]]] = {
    "01-smtp-handshake": ("HandshakeConsole", talk_to_the_console),
    "04-imap": ("MailboxViewer", open_a_message),
}


def widget_cell(name: str, widget: str) -> int:
    """Index of the cell that creates and shows `widget` (e.g. `viewer = MailboxViewer(lab, ...)`)."""
    cells = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
    pattern = re.compile(rf"\b{widget}\(lab\b")
    return next(i for i, cell in enumerate(cells) if cell.cell_type == "code" and pattern.search(cell.source))


# --- what must be true of every notebook ----------------------------------------------------------------------

PAGE_FACTS = """() => {
  const notebook = document.querySelector('.jp-NotebookPanel .jp-Notebook');
  const text = notebook.innerText;
  const outputs = [...notebook.querySelectorAll('.jp-OutputArea-output')];
  return {
    stderr: outputs.filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr').map(o => o.innerText),
    tracebacks: outputs.filter(o => /Traceback \\(most recent call last\\)|^\\w*Error: /m.test(o.innerText))
                       .map(o => o.innerText),
    brokenWidgets: text.includes('Error displaying widget'),
    loadingWidgets: text.includes('Loading widget'),
    widgets: notebook.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length,
    diagrams: [...notebook.querySelectorAll('.jp-OutputArea-output figure svg')].map(svg => {
      const box = svg.getBoundingClientRect();
      return {width: box.width, height: box.height, labels: svg.querySelectorAll('text').length,
              scale: box.width / svg.width.baseVal.value};  // < 1: JupyterLab shrank it to the output width
    }),
    dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText),
  };
}"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_jupyterlab(path: Path, page: Page, jupyter: JupyterServer) -> None:
    name = path.stem
    assert name in EXPECTED, f"{name}: add what it shows (widgets, diagrams) to EXPECTED in {__file__}"
    expected = EXPECTED[name]
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page_errors.append(message.text))
    try:
        open_notebook(page, jupyter, name)
        if name in INTERACTIONS:
            # As a learner: run down to the widget, play with it, then run the rest (the last cell stops the lab).
            widget, interact = INTERACTIONS[name]
            index = widget_cell(name, widget)
            select_cell(page, index + 1)
            run_menu(page, "notebook:run-all-above")
            wait_until_run(page, upto=index + 1)
            interact(widget_output(page, index))
            select_cell(page, index + 1)
            run_menu(page, "notebook:run-all-below")
        else:
            run_menu(page, "runmenu:run-all")
        wait_until_run(page)
        wait_for_widgets(page, expected["widgets"])
    finally:
        with contextlib.suppress(PlaywrightError):  # a failure above is the one to report
            screenshot(page, name)
    facts = page.evaluate(PAGE_FACTS)
    assert not facts["stderr"], f"{name}: a cell wrote to stderr (a learner sees a red box):\n" + "\n".join(
        facts["stderr"])
    assert not facts["tracebacks"], f"{name}: a cell failed:\n" + "\n".join(facts["tracebacks"])
    assert not facts["dialogs"], f"{name}: JupyterLab shows a dialog: {facts['dialogs']}"
    assert not facts["brokenWidgets"], f"{name}: 'Error displaying widget' in the page"
    assert not facts["loadingWidgets"], f"{name}: a widget is still 'Loading widget...'"
    assert facts["widgets"] == expected["widgets"], f"{name}: {facts['widgets']} widget views rendered"
    assert len(facts["diagrams"]) == expected["diagrams"], f"{name}: diagrams shown as SVG: {facts['diagrams']}"
    for diagram in facts["diagrams"]:
        assert diagram["width"] >= 200 and diagram["height"] >= 100 and diagram["labels"], (
            f"{name}: a diagram is not visible: {diagram}")
    assert not page_errors, f"{name}: JavaScript errors in the page (console): {page_errors}"
    assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


# --- the Spanish classroom (issue #19) ---------------------------------------------------------------------------

SPANISH_WELCOME = ROOT / "notebooks" / "es" / "00-bienvenida.ipynb"
LANGUAGE_SETTING = "@jupyterlab/translation-extension:plugin"  # Settings > Language in JupyterLab's menu


def catalog_fragments() -> tuple[set[str], set[str]]:
    """Pieces of text (between placeholders and tags, 16 characters or more) that only the package's Spanish
    catalog has, and those that only its English msgids have."""
    from smtplab.i18n import merged_catalog

    catalog = merged_catalog("es")
    assert catalog is not None
    spanish: set[str] = set()
    english: set[str] = set()
    for message in catalog:
        if not message.id:
            continue
        for texts, into in ((message.string, spanish), (message.id, english)):
            for text in texts if isinstance(texts, tuple) else (texts,):
                into.update(piece.strip() for piece in re.split(r"\{[^{}]*\}|<[^>]*>", text) if len(piece.strip()) >= 16)
    return spanish - english, english - spanish


def test_spanish_welcome_in_a_spanish_jupyterlab(page: Page, jupyter: JupyterServer) -> None:
    """The first Spanish notebook, as a Spanish class sees it: JupyterLab's menus in Spanish (the language pack
    that binder/ installs, chosen in Settings > Language), and the package's feedback and widgets in Spanish."""
    if not SPANISH_WELCOME.exists():
        pytest.skip(f"{SPANISH_WELCOME.relative_to(ROOT)} is not written yet")
    if importlib.util.find_spec("jupyterlab_language_pack_es_ES") is None:
        if IN_CI:
            pytest.fail("jupyterlab-language-pack-es-ES is not installed, but CI must install it (as binder/ does)")
        pytest.skip("jupyterlab-language-pack-es-ES is not installed")
    name = "es/00-bienvenida"
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page_errors.append(message.text))
    jupyter.api("PUT", f"settings/{LANGUAGE_SETTING}", {"raw": json.dumps({"locale": "es_ES"})}, prefix="lab/api")
    try:
        open_notebook(page, jupyter, name)
        menu = page.locator(".lm-MenuBar-content")
        for spanish in ("Archivo", "Editar", "Ver"):  # File, Edit, View
            expect(menu.get_by_role("menuitem", name=spanish, exact=True)).to_be_visible()
        # The pack (4.5.post3, the newest) predates JupyterLab 4.6, whose Run menu it leaves in English.
        run = "Ejecutar" if menu.get_by_role("menuitem", name="Ejecutar", exact=True).count() else "Run"
        run_menu(page, "runmenu:run-all", label=run)
        wait_until_run(page)
        wait_for_widgets(page, 0)
    finally:
        with contextlib.suppress(PlaywrightError):
            screenshot(page, "es-00-bienvenida")
        jupyter.api("PUT", f"settings/{LANGUAGE_SETTING}", {"raw": "{}"}, prefix="lab/api")  # the other tests see English menus
    facts = page.evaluate(PAGE_FACTS)
    assert not facts["stderr"], f"{name}: a cell wrote to stderr:\n" + "\n".join(facts["stderr"])
    assert not facts["tracebacks"], f"{name}: a cell failed:\n" + "\n".join(facts["tracebacks"])
    assert not facts["dialogs"], f"{name}: JupyterLab shows a dialog: {facts['dialogs']}"
    assert not facts["brokenWidgets"] and not facts["loadingWidgets"], f"{name}: a widget did not render"
    shown = "\n".join(page.locator(".jp-NotebookPanel .smtplab-feedback, .jp-NotebookPanel .jupyter-widgets")
                      .all_inner_texts())
    spanish, english = catalog_fragments()
    assert [piece for piece in spanish if piece in shown], f"{name}: no feedback or widget in Spanish:\n{shown}"
    assert not [piece for piece in english if piece in shown], f"{name}: English package text shown:\n{shown}"
    assert not page_errors, f"{name}: JavaScript errors in the page (console): {page_errors}"
