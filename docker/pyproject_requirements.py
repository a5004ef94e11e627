"""Print the requirements of pyproject.toml dependency groups, one per line, for `pip install -r`.

The images install exactly the groups of ``[project.optional-dependencies]`` (the single source of truth),
but a GPU image must not install the ``service`` group verbatim: it names ``onnxruntime`` and ``faiss-cpu``,
which ship the same import packages as ``onnxruntime-gpu`` and ``faiss-gpu`` and would overwrite them.
``--drop`` removes those, ``--extras`` adds pip extras to a requirement (``onnxruntime-gpu[cuda,cudnn]``).

    python docker/pyproject_requirements.py pyproject.toml service gpu \\
        --drop onnxruntime faiss-cpu --extras onnxruntime-gpu=cuda,cudnn

Standard library only: it runs in a bare ``python:3.11-slim`` image before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, pyproject's floor: the same parser, published as tomli
    import tomli as tomllib

# PEP 508: the distribution name, then optional extras in brackets, then the rest (versions, markers).
REQUIREMENT_PATTERN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name: ``Faiss_CPU`` and ``faiss-cpu`` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The canonical distribution name of a PEP 508 requirement string."""
    match = REQUIREMENT_PATTERN.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical_name(match.group(1))


def with_extras(requirement: str, extras: list[str]) -> str:
    """``requirement`` with ``extras`` added to whatever extras it already names."""
    match = REQUIREMENT_PATTERN.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    name, existing, rest = match.groups()
    names = [e.strip() for e in (existing or "[]")[1:-1].split(",") if e.strip()]
    names += [e for e in extras if e not in names]
    return f"{name}[{','.join(names)}]{rest}"


def dependency_groups(pyproject: Path) -> dict[str, list[str]]:
    """``[project.optional-dependencies]`` of a pyproject.toml file."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    return data.get("project", {}).get("optional-dependencies", {})


def group_requirements(
    pyproject: Path,
    groups: list[str],
    drop: list[str] | None = None,
    extras: dict[str, list[str]] | None = None,
) -> list[str]:
    """The requirements of ``groups`` in order, de-duplicated, without ``drop``, with ``extras`` added.

    Raises KeyError for a group the pyproject does not define and ValueError for a ``drop`` or
    ``extras`` name that none of the groups requires (a typo would otherwise silently keep a clash).
    """
    available = dependency_groups(pyproject)
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise KeyError(f"no such dependency group(s) in {pyproject}: {', '.join(unknown)}; "
                       f"defined: {', '.join(sorted(available))}")
    dropped = {canonical_name(n) for n in drop or []}
    extras = {canonical_name(n): e for n, e in (extras or {}).items()}
    requested = [r for g in groups for r in available[g]]
    present = {requirement_name(r) for r in requested}
    for label, names in (("--drop", dropped), ("--extras", set(extras))):
        missing = sorted(names - present)
        if missing:
            raise ValueError(f"{label} names {', '.join(missing)}, which groups {', '.join(groups)} do not require")
    lines: list[str] = []
    for requirement in requested:
        name = requirement_name(requirement)
        if name in dropped:
            continue
        if name in extras:
            requirement = with_extras(requirement, extras[name])
        if requirement not in lines:
            lines.append(requirement)
    return lines


def parse_extras(values: list[str]) -> dict[str, list[str]]:
    """``["onnxruntime-gpu=cuda,cudnn"]`` -> ``{"onnxruntime-gpu": ["cuda", "cudnn"]}``."""
    parsed: dict[str, list[str]] = {}
    for value in values:
        name, _, names = value.partition("=")
        if not name or not names:
            raise ValueError(f"--extras takes NAME=EXTRA[,EXTRA...], got {value!r}")
        parsed[name] = [e.strip() for e in names.split(",") if e.strip()]
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("groups", nargs="+", help="dependency groups, e.g. service gpu")
    parser.add_argument("--drop", nargs="*", default=[], help="distributions to leave out")
    parser.add_argument("--extras", nargs="*", default=[], help="NAME=EXTRA[,EXTRA...] to add pip extras")
    args = parser.parse_args(argv)
    try:
        lines = group_requirements(args.pyproject, args.groups, args.drop, parse_extras(args.extras))
    except (KeyError, ValueError) as error:
        print(f"pyproject_requirements: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
