"""The import graph stays what docs/architecture.md says: layered, and without cycles.

The package rules themselves (what each package must never import) are contracts in
pyproject.toml, checked by ``lint-imports`` in the test command; this test adds what a
contract cannot say: no two modules import each other, directly or through others.
"""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_through_others() -> None:
    """Pins an acyclic module graph: for every import A -> B, no chain leads back from B to A."""
    graph = grimp.build_graph("monitor")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []


def test_every_package_module_is_covered_by_a_rule() -> None:
    """Pins that each subpackage of monitor appears in the import contracts of pyproject.toml."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    named = {
        module
        for contract in contracts
        for key in ("source_modules", "modules")
        for module in contract.get(key, [])
    }
    graph = grimp.build_graph("monitor")
    packages = {m for m in graph.modules if m.count(".") == 1 and graph.find_children(m)}
    uncovered = {p for p in packages if not any(n == p or n.startswith(p + ".") for n in named)}
    assert uncovered == set()
