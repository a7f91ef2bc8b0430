"""Log audit (issue 9, hole 4): no log line a suite run writes holds a citizen's number, address or PIN,
a deep-link code, a key, a token or a password.

Every test process sends each log record (DEBUG and up, from loggers at the levels the hub holds them) and
each structlog line to a file in the run's audit folder; fixtures that start ``hub`` processes hand their
output files to ``watch`` (or take one from ``output_file``), and fixtures that make secrets name them with
``forbid``. When the run ends, the process that ran it (the xdist controller, after its workers) reads every
file: a finding fails the run, naming the file, the line and the kind of value, never the value.

Besides the named values, patterns catch full Indonesian numbers in any form (a mask such as
``+62*******678`` is fine), email addresses, API keys, bot tokens and deep-link codes.

(PYTEST_DONT_REWRITE: tests/conftest.py imports this plugin before pytest registers it.)
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from hub.logs import OWN, redact

if TYPE_CHECKING:
    from hub.settings import Settings

#: Values shorter than this are not looked for: too likely to be ordinary words (as in hub/logs.py).
MIN_VALUE = 6
#: Each test process writes a line starting with this before each test, so a finding names its test.
MARKER = "\x1elog-audit test: "
_WORKER_KEY = "hub_log_audit_dir"
_SECRET_KEYS = re.compile(r"pass|secret|token|key|auth", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: A log line (structlog's console or JSON form) among a command's stdout, which also carries its output.
_LOG_LINE = re.compile(r'^(?:\d{4}-\d\d-\d\dT\d\d:\d\d|\{.*"(?:event|timestamp)")')

#: Kinds of value found by their shape, whoever made them.
PATTERNS: dict[str, re.Pattern[str]] = {
    # A mask keeps the country code and the last three digits: any digit right after +62 is too many.
    "phone number (+62...)": re.compile(r"(?:\+|%2[Bb])62[ .-]?\d(?:[ .-]?\d)*"),
    "phone number (62...)": re.compile(r"(?<![\w+*./:%-])62[ -]?8(?:[ -]?\d){7,11}(?![\w])"),
    "phone number (08...)": re.compile(r"(?<![\w+*./:%-])08(?:[ -]?\d){8,11}(?![\w])"),
    "email address": re.compile(
        r"(?<![\w.+%-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    ),
    "API key": re.compile(r"hub_[0-9a-f]{8}_[\w-]{20,}"),
    "bot token": re.compile(r"\d{6,12}:[\w-]{30,}"),
    # ``c`` and 16 letters or digits (hub/applicants.py); with a digit and a capital, unlike a word.
    "deep-link code": re.compile(r"(?<![\w-])c(?=[a-z0-9]*[A-Z])(?=[A-Za-z]*\d)[A-Za-z0-9]{16}(?![\w-])"),
}
#: Addresses the hub may name: its own senders, never a citizen's.
_ALLOWED_EMAIL = re.compile(r"^(?:no-?reply|postmaster|mailer-daemon)@", re.IGNORECASE)

_dir: Path | None = None
_lock = threading.Lock()
_forbidden: set[str] = set()
_files = itertools.count()


# -- what fixtures call ----------------------------------------------------------------------------------


def forbid(value: str | None, kind: str) -> None:
    """No log line may hold ``value`` (a PIN, code, key, token, password...); ``kind`` names it in reports."""
    if _dir is None or not value or len(value) < MIN_VALUE or value in _forbidden:
        return
    with _lock:
        _forbidden.add(value)
        with (_dir / "forbidden" / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"kind": kind, "value": value}) + "\n")


def forbid_settings(settings: Settings) -> None:
    """Forbid every secret the settings hold: the deployment key and channels' passwords, tokens, keys."""
    forbid(settings.hub.secret_key, "deployment secret (hub.secret_key)")

    def walk(node: Any, path: str, secret: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}", secret or bool(_SECRET_KEYS.search(str(key))))
        elif isinstance(node, list):
            for value in node:
                walk(value, path, secret)
        elif secret and isinstance(node, str) and node.strip():
            for value in {node, node.split()[-1]}:  # "Bearer abc..." and "abc..."
                forbid(value, f"settings {path}")

    walk(settings.channels, "channels", False)


def watch(path: Path) -> None:
    """Audit this file too (a process's output written where a fixture keeps it)."""
    if _dir is None:
        return
    with _lock, (_dir / "watched" / f"{os.getpid()}.txt").open("a", encoding="utf-8") as out:
        out.write(f"{Path(path).resolve()}\n")


def output_file(name: str) -> Path:
    """A new file for a subprocess's stdout and stderr, audited at the end of the run."""
    if _dir is None:
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
        os.close(fd)
        return Path(path)
    return _dir / "processes" / f"{name}-{os.getpid()}-{next(_files)}.log"


def record_command(name: str, stdout: str, stderr: str) -> None:
    """Audit what a finished command wrote: all of stderr, and the log lines among its stdout (the rest
    of stdout is the command's answer, e.g. the key `hub keys create` shows once)."""
    if _dir is None:
        return
    logged = [line for line in stdout.splitlines() if _LOG_LINE.match(line)]
    output_file(name).write_text("\n".join([*logged, stderr]), encoding="utf-8")


# -- the scan --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    kind: str
    test: str
    excerpt: str  # the line with each finding replaced by its kind

    def __str__(self) -> str:
        where = f" (during {self.test})" if self.test else ""
        return f"{self.file}:{self.line}: {self.kind}{where}\n    {self.excerpt[:240]}"


def _alternation(values: Iterable[str]) -> str:
    """One regular expression for many literal values, as a trie: fast over long logs."""
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


def _matchers(forbidden: dict[str, str]) -> list[tuple[re.Pattern[str], Any]]:
    """(pattern, kind or a function of the match giving the kind) for every value and shape."""
    numbers = [v for v in forbidden if v.isdigit()]
    words = [v for v in forbidden if not v.isdigit()]
    found: list[tuple[re.Pattern[str], Any]] = []
    if numbers:  # PINs: a number on its own, not part of a word, a time, an address, a pid or an id
        alone = rf"(?<![\w.:\[#/-])(?<!id=)(?<!pid )(?<!process ){_alternation(numbers)}(?![\w\]])"
        found.append((re.compile(alone), forbidden.get))
    if words:
        found.append((re.compile(_alternation(words)), forbidden.get))
    return found + list((rx, kind) for kind, rx in PATTERNS.items())


def _read_forbidden(directory: Path) -> dict[str, str]:
    forbidden: dict[str, str] = {}
    for path in sorted((directory / "forbidden").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            forbidden.setdefault(entry["value"], entry["kind"])
    return forbidden


def audited_files(directory: Path) -> Iterator[Path]:
    """The test processes' logs, the processes' output files, and every watched file still there."""
    yield from sorted((directory / "tests").glob("*.log"))
    yield from sorted((directory / "processes").glob("*.log"))
    watched = {
        line
        for path in sorted((directory / "watched").glob("*.txt"))
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    yield from (Path(line) for line in sorted(watched) if Path(line).is_file())


def scan(directory: Path, counts: dict[str, int] | None = None) -> list[Finding]:
    """Every finding in every audited file of ``directory`` (an audit folder as this plugin makes it);
    ``counts`` gets how many files, lines and named values were looked at."""
    forbidden = _read_forbidden(directory)
    matchers = _matchers(forbidden)
    findings: list[Finding] = []
    counts = {} if counts is None else counts
    counts.update(files=0, lines=0, values=len(forbidden))
    for path in audited_files(directory):
        counts["files"] += 1
        name = str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)
        text = _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
        lines = text.split("\n")
        counts["lines"] += len(lines) - (not lines[-1])
        spans = _spans(text, matchers)  # each pattern over the whole file at once: fast
        if not spans:
            continue
        starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=0))
        by_line: dict[int, list[tuple[int, int, str]]] = {}
        for start, end, kind in spans:
            index = bisect.bisect_right(starts, start) - 1
            if not lines[index].startswith(MARKER):
                by_line.setdefault(index, []).append((start - starts[index], end - starts[index], kind))
        tests = _tests_by_line(lines)
        for index, kinds in sorted(by_line.items()):
            excerpt = lines[index]
            for start, end, kind in sorted(kinds, reverse=True):
                excerpt = f"{excerpt[:start]}«{kind}»{excerpt[end:]}"
            for kind in dict.fromkeys(k for _, _, k in sorted(kinds)):
                findings.append(Finding(name, index + 1, kind, tests(index), excerpt))
    return findings


def _spans(text: str, matchers: list[tuple[re.Pattern[str], Any]]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every value and shape found, the first matcher winning where they overlap."""
    spans: list[tuple[int, int, str]] = []
    taken: set[int] = set()
    for rx, kind in matchers:
        for match in rx.finditer(text):
            found = match.group(0)
            if not found or (kind == "email address" and _ALLOWED_EMAIL.match(found)):
                continue
            named = kind(found) if callable(kind) else kind
            if named and not taken.intersection(range(match.start(), match.end())):
                spans.append((match.start(), match.end(), named))
                taken.update(range(match.start(), match.end()))
    return spans


def _tests_by_line(lines: list[str]) -> Any:
    """A function of a line's index giving the test that was running (the last marker above it)."""
    marks = [(i, line[len(MARKER) :].strip()) for i, line in enumerate(lines) if line.startswith(MARKER)]
    indexes = [i for i, _ in marks]

    def test(index: int) -> str:
        at = bisect.bisect_right(indexes, index) - 1
        return marks[at][1] if at >= 0 else ""

    return test


# -- what each test process writes -----------------------------------------------------------------------


class _AuditHandler(logging.Handler):
    """Every record that reaches the root logger, as the hub's own handler would write it (redacted)."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.out = path.open("a", encoding="utf-8", buffering=1)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = redact(self.format(record))
            with _lock:
                self.out.write(line + "\n")
        except Exception:
            self.handleError(record)


class _Tee:
    """structlog's logger (it prints), also writing each finished line to the audit file."""

    def __init__(self, printer: Any, out: Any) -> None:
        self._printer, self._out = printer, out

    def msg(self, message: Any) -> None:
        self._printer.msg(message)
        with _lock:
            self._out.write(f"{message}\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class _TeeFactory:
    def __init__(self, inner: Any, out: Any) -> None:
        self.inner, self.out = inner, out

    def __call__(self, *args: Any) -> _Tee:
        return _Tee(self.inner(*args), self.out)


def _capture(directory: Path) -> _AuditHandler:
    handler = _AuditHandler(directory / "tests" / f"{os.getpid()}.log")
    logging.getLogger().addHandler(handler)
    for name in OWN:  # the hub's own loggers at its most verbose; libraries stay where they are
        logging.getLogger(name).setLevel(logging.DEBUG)
    factory = structlog.get_config()["logger_factory"]
    if not isinstance(factory, _TeeFactory):  # hub/logs.py's configure() keeps the factory
        structlog.configure(logger_factory=_TeeFactory(factory, handler.out))
    return handler


def _spy_on_cases() -> None:
    """Every case a test process opens: its PIN and deep-link code are forbidden."""
    from hub import applicants

    original = applicants.open_case

    async def open_case(*args: Any, **kwargs: Any) -> applicants.OpenedCase:
        opened = await original(*args, **kwargs)
        forbid(opened.pin, "PIN")
        forbid(opened.link_code, "deep-link code")
        return opened

    applicants.open_case = open_case  # type: ignore[assignment]


# -- pytest hooks ----------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    global _dir
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        _dir = Path(workerinput[_WORKER_KEY])
    else:
        _dir = Path(tempfile.mkdtemp(prefix="hub-log-audit-"))
        for sub in ("tests", "processes", "forbidden", "watched"):
            (_dir / sub).mkdir()
    config.stash[_handler_key] = _capture(_dir)
    _spy_on_cases()


_handler_key = pytest.StashKey[_AuditHandler]()
_findings_key = pytest.StashKey[list[Finding]]()
_counts_key = pytest.StashKey[dict[str, int]]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: each worker writes into the controller's audit folder."""
    node.workerinput[_WORKER_KEY] = str(_dir)


def pytest_runtest_setup(item: pytest.Item) -> None:
    handler = item.config.stash.get(_handler_key, None)
    if handler is not None:
        with _lock:
            handler.out.write(f"{MARKER}{item.nodeid}\n")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every test and fixture (and every xdist worker) has finished: scan, and fail on a finding."""
    config = session.config
    handler = config.stash.get(_handler_key, None)
    if handler is not None:
        handler.out.flush()
    if hasattr(config, "workerinput") or _dir is None:
        return
    counts: dict[str, int] = {}
    findings = scan(_dir, counts)
    config.stash[_findings_key] = findings
    config.stash[_counts_key] = counts
    if findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif not os.environ.get("HUB_LOG_AUDIT_KEEP"):
        shutil.rmtree(_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    findings = config.stash.get(_findings_key, None)
    counts = config.stash.get(_counts_key, {})
    if counts and not findings:
        terminalreporter.write_line(
            "log audit: {files} files, {lines} lines, {values} named values and the patterns: clean".format(
                **counts
            )
        )
    if not findings:
        return
    terminalreporter.section("log audit", sep="=", red=True, bold=True)
    for finding in findings[:200]:
        terminalreporter.write_line(str(finding))
    more = " (first 200 shown)" if len(findings) > 200 else ""
    terminalreporter.write_line(
        f"log audit: {len(findings)} finding(s){more}; the logs are kept in {_dir}", red=True, bold=True
    )
