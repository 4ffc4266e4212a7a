"""The layout of engine/ (issue 11): no import circle, no arrow running back up, no module too long to read, no
Blender import, and the README's imports kept for one release still work.

Imports are read with ``ast`` at every level (module, function, ``if TYPE_CHECKING``): a function-local import that
would close a circle counts as one, so none can hide a circle.
"""

import ast
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent.parent / "engine"
MAX_LINES = 450

LOW_LEVEL = {
    "engine.conventions", "engine.mesh_io", "engine.ply_io", "engine.networks", "engine.training", "engine.sampling",
    "engine.extraction", "engine.geometry", "engine.colormaps", "engine.metrics", "engine.model", "engine.protocol",
    "engine.preview", "engine.point_clouds", "engine.texture_bake", "engine.ridges", "engine.render",
    "engine.render_camera", "engine.render_levels", "engine.render_output", "engine.multires",
}
FRONT_ENDS = {
    "engine.cli", "engine.worker", "engine.__main__", "engine.jobs",
    "engine.remote", "engine.batch", "engine.images.cli", "engine.images.morph_cli",
}  # fmt: skip
"""What the user runs (and the job specs they share): they may import one another, nothing below imports them. The
server and batch programs sit on the CLI and the worker; the image commands on the CLI's staging."""
MORPH = "engine.morph"
ABOVE = {
    # module (or package) -> the modules (or packages) it must not import, directly or through a function
    **{name: {"engine.fit", "engine.evolution", "engine.surface_flows", "engine.fields", MORPH} for name in LOW_LEVEL},
    "engine.fields": {"engine.fit", "engine.evolution", "engine.surface_flows", MORPH},
    "engine.surface_flows": {"engine.fit", "engine.evolution", "engine.fields", MORPH},
    "engine.fit": {"engine.evolution", "engine.surface_flows", "engine.fields", MORPH},
    "engine.multires_fit": {"engine.evolution", "engine.surface_flows", "engine.fields", MORPH},
    "engine.evolution": {"engine.fit", MORPH},
    MORPH: {"engine.evolution", "engine.surface_flows"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ENGINE.rglob("*.py"))}


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """The engine modules ``name`` imports (a submodule counts for its package too, from outside the package) and
    the top-level names of everything else it imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    engine, other = set(), set()

    def add(target: str) -> None:
        if target.split(".")[0] != "engine":
            other.add(target.split(".")[0])
            return
        while target not in MODULES:
            target = target.rpartition(".")[0]
        engine.add(target)
        # Importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b (then a.b is under way).
        parent = target.rpartition(".")[0]
        while parent and not (name == parent or name.startswith(parent + ".")):
            engine.add(parent)
            parent = parent.rpartition(".")[0]

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            if source == "__future__":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in MODULES else source)
    engine.discard(name)
    return engine, other


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def within(module: str, unit: str) -> bool:
    return module == unit or module.startswith(unit + ".")


def test_the_graph_sees_every_kind_of_import():
    assert {"engine.morph", "engine.morph.flow"} <= GRAPH["engine.warp"]  # a submodule from outside its package
    assert "engine.morph.common" in GRAPH["engine.morph.levelset"]  # relative, within the package
    assert {"engine.fields", "engine.networks"} <= GRAPH["engine.morph.flow"]  # two levels up
    assert "engine" in GRAPH["engine.model"]  # from . import __version__


def test_engine_has_no_import_circle():
    state, path, cycles = {}, [], []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert cycles == []


def test_no_arrow_runs_back_up():
    wrong = []
    for name, targets in GRAPH.items():
        for unit, forbidden in ABOVE.items():
            if within(name, unit):
                wrong += [f"{name} -> {t}" for t in sorted(targets) if any(within(t, f) for f in forbidden)]
        if not any(within(name, front) for front in FRONT_ENDS):
            wrong += [f"{name} -> {t}" for t in sorted(targets) if any(within(t, f) for f in FRONT_ENDS)]
    assert wrong == []


def test_the_protocol_imports_only_the_standard_library():
    engine, other = imports_of("engine.protocol")
    assert engine == set() and other <= set(sys.stdlib_module_names)


def test_engine_never_imports_blender_or_the_addon():
    assert [name for name in MODULES if imports_of(name)[1] & {"bpy", "mathutils", "addon"}] == []


def test_no_module_is_too_long_to_read():
    lengths = {
        str(path.relative_to(ENGINE.parent)): len(path.read_text().splitlines()) for path in MODULES.values()
    }
    assert {path: count for path, count in lengths.items() if count > MAX_LINES} == {}


def test_the_readme_imports_kept_for_one_release_still_work():
    from engine import fields, morph, networks, surface_flows
    from engine.evolution import FieldTerm, Flow, at_time, extract_frames, frame_curvatures
    from engine.model import Siren, SirenConfig
    from engine.warp import FlowMorph, FlowMorphConfig, inverse_consistency_error, morph_flow, warp_points

    assert (Flow, FieldTerm) == (surface_flows.Flow, surface_flows.FieldTerm)
    assert (at_time, extract_frames, frame_curvatures) == (fields.at_time, fields.extract_frames, fields.frame_curvatures)
    assert (Siren, SirenConfig) == (networks.Siren, networks.SirenConfig)
    assert (FlowMorph, FlowMorphConfig, inverse_consistency_error, morph_flow, warp_points) == (
        morph.FlowMorph, morph.FlowMorphConfig, morph.inverse_consistency_error, morph.morph_flow, morph.warp_points
    )
