"""Imports run one way: data and encoders at the bottom, then heads, methods, training,
inference, interpret, the commands (a module never imports one from a layer above it,
not even inside a function)."""

import ast
from pathlib import Path

import jaxit

RANK = {  # top-level module or package of jaxit -> layer
    "batch": 0, "errors": 0, "resources": 0, "metrics": 0, "data": 0, "encoders": 0, "flops": 0,
    "heads": 1, "methods": 2, "train": 3, "configs": 3, "inference": 4, "sweep": 5, "depth_width_sweep": 5,
    "interpret": 6, "export": 7, "predict_cli": 7, "demo": 7, "cli": 8,
    "hf_modeling_jaxit": 8,
}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxit"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxit"):
                    yield a.name, node.lineno


def test_no_module_imports_a_layer_above_it():
    root = Path(jaxit.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # jaxit/__init__.py: lazy re-exports (load_predictor)
        own = RANK[rel.parts[0].removesuffix(".py")]
        for module, line in _imports(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue
            other = RANK[parts[1]]
            if other > own:
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "\n".join(bad)
