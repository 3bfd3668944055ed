"""Checks that keep README.md and docs/*.md true, without running anything.

Commands are taken from fenced code blocks (``bash``, ``sh``, ``shell``, ``console`` or no
language; ``$ `` prompts stripped, ``\\`` continuations joined, ``#`` comments dropped) and
from inline code spans in the prose. A command is checked when it calls something of this
repository (after ``VAR=value``, ``nice``, ``time`` and ``.venv/bin/`` prefixes):

- a console script of ``pyproject.toml``, ``python -m MODULE`` or ``torchrun ... -m MODULE``:
  the module must exist. Hydra entry points (a ``@hydra.main(config_name=...)`` in the
  module's source): the overrides must compose against ``retina/configs`` (``hydra.*``
  dropped, the first value of a sweep, placeholders such as ``PATH`` or ``<run>`` kept as
  strings); a console example followed by an ``error:`` line must fail with that message.
  argparse entry points: every ``--flag`` must exist in the parser ``main`` builds (captured
  when ``parse_args`` is called, so nothing runs). ``retina-plot``: a known figure and its
  keys; ``retina-report``: its argparse flags;
- ``python scripts/X.py``: the script exists and its flags too (argparse, as above);
- ``make TARGET``: a target of the Makefile;
- any word naming a repository file (``configs/``, ``docs/``, ``retina/``, ``scripts/``,
  ``tests/``) must exist.

Also: every relative link and image resolves (``#anchors`` against the target's headings),
every code span that is a repository path exists, every ``retina.x.y`` name in a code span
resolves, and every ``from retina... import`` in a ``python`` block imports.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from unittest import mock

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: read [project.scripts] line by line instead
    tomllib = None

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
REPO_PREFIXES = ("configs/", "docs/", "retina/", "scripts/", "tests/")
# Launchers that come from the optional `cluster` extra (Hydra plugins), not from configs/.
PLUGIN_LAUNCHERS = {"basic", "joblib", "submitit_local", "submitit_slurm"}
_PLACEHOLDER = re.compile(r"^(\.\.\.|…|[A-Z][A-Z0-9_]*)$")
_WRAPPERS = {"nice", "time", "timeout", "env", "exec"}


@dataclass
class Command:
    """One command line of a page: where it is, its words, and the error it documents."""

    where: str
    words: list[str]
    expect_error: str | None = None


# ---------------------------------------------------------------------------- extraction


def _fences(lines: list[str]) -> Iterator[tuple[str, int, list[str]]]:
    """``(language, first line number, lines)`` of each fenced block."""
    i = 0
    while i < len(lines):
        match = re.match(r"^\s*```\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        yield match.group(1).lower(), start + 1, body
        i += 1


def _prose(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Numbered lines outside fenced blocks."""
    inside = False
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            yield number, line


def _split_words(text: str) -> list[list[str]] | None:
    """Shell words of ``text`` (comments dropped), split at ``&&``, ``||``, ``;`` and ``|``."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return None
    commands, current = [], []
    for token in tokens:
        if token and set(token) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def extract_commands(text: str, name: str) -> list[Command]:
    """Every command line of a markdown page (fenced shell blocks and inline code spans)."""
    lines = text.splitlines()
    found: list[Command] = []
    for lang, start, body in _fences(lines):
        if lang not in SHELL_LANGS:
            continue
        logical: list[tuple[int, str]] = []
        pending, pending_line = "", 0
        for offset, line in enumerate(body):
            if not pending:
                pending_line = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical.append((pending_line, pending + line))
            pending = ""
        if pending:
            logical.append((pending_line, pending))
        for k, (number, line) in enumerate(logical):
            stripped = line.strip()
            prompt = stripped.startswith("$ ")
            if lang == "console" and not prompt:
                continue  # output
            command = stripped[2:] if prompt else stripped
            expect = None
            if prompt and k + 1 < len(logical):
                nxt = logical[k + 1][1].strip()
                if not nxt.startswith("$ ") and ": error: " in nxt:
                    expect = nxt.split(": error: ", 1)[1]
            for words in _split_words(command) or []:
                found.append(Command(f"{name}:{number}", words, expect))
    for number, line in _prose(lines):
        for span in re.findall(r"`([^`]+)`", line):
            for words in _split_words(span) or []:
                found.append(Command(f"{name}:{number}", words))
    return found


# ------------------------------------------------------------------------------ entry points


@cache
def console_scripts() -> dict[str, str]:
    """``{script name: module}`` from pyproject.toml's ``[project.scripts]``."""
    text = (REPO / "pyproject.toml").read_text()
    if tomllib is not None:
        scripts = tomllib.loads(text)["project"]["scripts"]
    else:
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        scripts = dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, flags=re.M))
    return {k: v.split(":")[0] for k, v in scripts.items()}


@cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))


def _module_source(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).read_text()


@cache
def hydra_config_name(module: str) -> str | None:
    """The ``config_name`` of the module's ``@hydra.main``, or None when it has none."""
    source = _module_source(module) or ""
    match = re.search(r"@hydra\.main\((?:[^()]|\([^()]*\))*config_name=\"(\w+)\"", source)
    return match.group(1) if match else None


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def _capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
    raise _Captured(self)


@cache
def argparse_flags(target: str) -> frozenset[str] | None:
    """The option strings of the parser that ``main`` of ``target`` (a module name, or a
    ``scripts/X.py`` path) builds; None when it builds none. Nothing runs: the parser is
    captured at its ``parse_args`` call."""
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_docs_{Path(target).stem}", REPO / target)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    main: Callable | None = getattr(module, "main", None)
    if main is None or "argparse" not in _source(module):
        return None
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", _capture),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", _capture),
        mock.patch.object(sys, "argv", [target]),
    ):
        try:
            try:
                main([])
            except TypeError:
                main()
        except _Captured as captured:
            return _parser_flags(captured.parser)
    return None


def _parser_flags(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Every option string of ``parser`` and of its subcommands' parsers."""
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _parser_flags(sub)
    return frozenset(flags)


def _source(module: object) -> str:
    path = getattr(module, "__file__", None)
    return Path(path).read_text() if path else ""


# ---------------------------------------------------------------------------- command checks


def _unbracket(word: str) -> str:
    """``[key=value]`` (usage notation for optional words) without its brackets; a value that
    is a list, ``key=[1.0]``, keeps its own."""
    word = word.removeprefix("[")
    return word[:-1] if word.endswith("]") and "[" not in word else word


def _strip_prefixes(words: list[str]) -> list[str]:
    words = [_unbracket(w) for w in words]
    words = [w for w in words if w and not _PLACEHOLDER.match(w)]
    i = 0
    while i < len(words):
        word = words[i]
        if re.match(r"^[A-Za-z_]\w*=", word):
            i += 1
        elif word in _WRAPPERS:
            i += 1
            while i < len(words) and (words[i].startswith("-") or words[i].isdigit()):
                i += 1
        else:
            break
    words = words[i:]
    if words and words[0].startswith(".venv/bin/"):
        words[0] = words[0][len(".venv/bin/") :]
    return words


def _repo_path_exists(path: str) -> bool:
    """Whether a repository-relative path (a glob allowed) names something that exists."""
    if "<" in path:
        return True  # a placeholder inside a path: outputs/<run>/...
    path = path.rstrip("/")
    return any(REPO.glob(path)) if "*" in path else (REPO / path).exists()


def _entry(words: list[str]) -> tuple[str | None, str | None, list[str]]:
    """``(kind, target, arguments)``: kind is script/module/file/make, or None."""
    head, rest = words[0], words[1:]
    if head in console_scripts():
        return "module", console_scripts()[head], rest
    if head in ("python", "python3", "torchrun") or re.match(r"^python3\.\d+$", head):
        if "-m" in rest:
            i = rest.index("-m")
            module = rest[i + 1] if i + 1 < len(rest) else ""
            if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", module):
                return None, None, []  # a placeholder: retina.cli.NAME, retina…
            return "module", module, rest[i + 2 :]
        if head != "torchrun" and rest and rest[0].endswith(".py"):
            return "file", rest[0], rest[1:]
        return None, None, []
    if head == "make":
        return "make", None, rest
    return None, None, []


def _hydra_overrides(args: list[str], where: str, problems: list[str]) -> list[str] | None:
    """The overrides to compose: ``-m`` and ``hydra.*`` dropped, sweeps narrowed to their first
    value, placeholder group choices skipped. None when an argument is not an override."""
    overrides = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        if arg.startswith("-"):
            problems.append(f"{where}: {arg}: Hydra entry points take no such flag")
            return None
        match = re.match(r"^([+~]{0,2}[\w./@-]+)(?:=(.*))?$", arg)
        if not match:
            problems.append(f"{where}: {arg!r} is not a Hydra override (key=value)")
            return None
        key, value = match.group(1), match.group(2)
        bare = key.lstrip("+~")
        if bare.startswith("hydra/"):
            group = bare.split("/", 1)[1]
            if value not in PLUGIN_LAUNCHERS and not (
                REPO / "configs" / "hydra" / group / f"{value}.yaml"
            ).is_file():
                problems.append(f"{where}: {arg}: no configs/hydra/{group}/{value}.yaml")
            continue
        if bare.startswith("hydra."):
            continue
        if value is None and not key.startswith("~"):
            problems.append(f"{where}: {arg!r} is not a Hydra override (key=value)")
            return None
        if value is not None:
            if not value.startswith("[") and "," in value:
                value = value.split(",", 1)[0]
            value = re.sub(r"<[^>]*>", "x", value)
            if _PLACEHOLDER.match(value) and (REPO / "configs" / bare).is_dir():
                continue  # data=GROUP: a placeholder for a group option
            arg = f"{key}={value}"
        overrides.append(arg)
    return overrides


@cache
def _compose(config_name: str, overrides: tuple[str, ...], validate: bool) -> Exception | None:
    """The exception composing (and, with ``validate``, validating) raises; None if none.
    Cached: the same command often appears on several pages."""
    from hydra import compose, initialize_config_dir

    from retina.config import CONFIG_DIR, validate_config

    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
        if validate:
            validate_config(cfg)
    except Exception as err:  # noqa: BLE001 - any failure to compose is the finding
        return err
    return None


def _check_hydra(cmd: Command, config_name: str, args: list[str], problems: list[str]) -> None:
    from retina.errors import one_line

    overrides = _hydra_overrides(args, cmd.where, problems)
    if overrides is None:
        return
    err = _compose(config_name, tuple(overrides), cmd.expect_error is not None)
    if err is not None:
        message = one_line(err)
        if cmd.expect_error is None:
            problems.append(f"{cmd.where}: {' '.join(cmd.words)}: {message}")
        elif cmd.expect_error.strip() != message:
            problems.append(
                f"{cmd.where}: {' '.join(cmd.words)}: documented error "
                f"{cmd.expect_error.strip()!r}, actual {message!r}"
            )
        return
    if cmd.expect_error is not None:
        problems.append(
            f"{cmd.where}: {' '.join(cmd.words)}: documented to fail "
            f"({cmd.expect_error.strip()!r}) but composes and validates"
        )


def _check_flags(cmd: Command, target: str, args: list[str], problems: list[str]) -> None:
    flags = argparse_flags(target)
    if flags is None:
        return
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and flag not in flags:
            problems.append(f"{cmd.where}: {target}: no option {flag}")


def _check_plot(cmd: Command, args: list[str], problems: list[str]) -> None:
    from retina.cli.plot import ARGUMENTS

    if not args:
        return
    if args[0] not in ARGUMENTS:
        problems.append(f"{cmd.where}: retina-plot: unknown figure {args[0]!r}")
        return
    for arg in args[1:]:
        key = arg.split("=", 1)[0]
        if "=" not in arg or key not in ARGUMENTS[args[0]] and not key.startswith("data."):
            problems.append(f"{cmd.where}: retina-plot {args[0]}: unknown argument {arg!r}")


def check_command(cmd: Command) -> list[str]:
    """Problems of one command; [] when it is fine or not ours."""
    problems: list[str] = []
    words = _strip_prefixes(cmd.words)
    if not words:
        return problems
    kind, target, args = _entry(words)
    if kind is None and words[0] != "pytest":
        return problems
    for word in words[1:]:
        for part in (word, word.split("=", 1)[-1]):
            if part.startswith(REPO_PREFIXES) and not _repo_path_exists(part):
                problems.append(f"{cmd.where}: {part}: no such file in the repository")
    if kind == "make":
        for target_name in (a for a in args if not a.startswith("-") and "=" not in a):
            if target_name not in make_targets():
                problems.append(f"{cmd.where}: make {target_name}: no such Makefile target")
    elif kind == "file":
        if not (REPO / target).is_file():
            problems.append(f"{cmd.where}: {target}: no such script")
        elif target.startswith("scripts/"):
            _check_flags(cmd, target, args, problems)
    elif kind == "module":
        if not target.startswith("retina"):
            return problems
        if importlib.util.find_spec(target) is None:
            problems.append(f"{cmd.where}: {target}: no such module")
        elif (config_name := hydra_config_name(target)) is not None:
            _check_hydra(cmd, config_name, args, problems)
        elif target == "retina.cli.plot":
            _check_plot(cmd, args, problems)
        else:
            _check_flags(cmd, target, args, problems)
    return problems


# ------------------------------------------------------------------------------ other checks


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors: set[str] = set()
    for _, line in _prose(text.splitlines()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def check_links(text: str, path: Path) -> list[str]:
    """Relative links and images that do not resolve, and anchors that name no heading."""
    problems = []
    for number, line in _prose(text.splitlines()):
        line = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.name}:{number}"
            if not dest.exists():
                problems.append(f"{where}: link {target!r}: {file_part} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(
                dest.read_text()
            ):
                problems.append(f"{where}: link {target!r}: no heading #{anchor} in {dest.name}")
    return problems


def check_repo_paths(text: str, name: str) -> list[str]:
    """Code spans in the prose that are repository paths (``retina/ops/focal.py``) exist."""
    problems = []
    for number, line in _prose(text.splitlines()):
        for span in re.findall(r"`([^`\s]+)`", line):
            if span.startswith(REPO_PREFIXES) and not _repo_path_exists(span):
                problems.append(f"{name}:{number}: {span}: no such file in the repository")
    return problems


def _resolves(dotted: str) -> bool:
    """Whether ``retina.a.b`` names a module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def check_dotted_names(text: str, name: str) -> list[str]:
    """``retina.x.y`` names in code spans of the prose resolve (``retina.cli.NAME`` is a
    placeholder)."""
    problems = []
    for number, line in _prose(text.splitlines()):
        for span in re.findall(r"`([^`]+)`", line):
            for dotted in re.findall(r"(?<![\w./-])retina(?:\.[A-Za-z_]\w*)+", span):
                if not re.search(r"\.[A-Z][A-Z_]*$", dotted) and not _resolves(dotted):
                    problems.append(f"{name}:{number}: {dotted}: no such module or attribute")
    return problems


def check_python_imports(text: str, name: str) -> list[str]:
    """``from retina... import x`` lines of ``python`` blocks import."""
    problems = []
    for lang, start, body in _fences(text.splitlines()):
        if lang not in ("python", "py"):
            continue
        imports = [ln for ln in body if ln.startswith(("from retina", "import retina"))]
        source = "\n".join(body)
        try:
            nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
        except SyntaxError:
            nodes = [n for ln in imports for n in ast.parse(ln).body]
        for node in nodes:
            if not (node.module or "").startswith("retina"):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as err:
                problems.append(f"{name}:{start}: {node.module}: {err}")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):
                    problems.append(f"{name}:{start}: {node.module} has no {alias.name}")
    return problems


def check_markdown(text: str, path: Path) -> list[str]:
    """Every problem of one page."""
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    problems: list[str] = []
    for cmd in extract_commands(text, name):
        problems += check_command(cmd)
    problems += check_links(text, path)
    problems += check_repo_paths(text, name)
    problems += check_python_imports(text, name)
    problems += check_dotted_names(text, name)
    return problems


def doc_pages() -> list[Path]:
    """README.md and docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
