"""The package's shape holds: state is reached only through Store, the serving package does
not import its tooling, modules stay small."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRODUCT = ROOT / "xferd"
REDIS_CLIENTS = {"Redis", "StrictRedis", "from_url", "ConnectionPool", "RedisCluster", "Sentinel", "Pipeline"}


def _modules(under: pathlib.Path):
    for path in sorted(under.rglob("*.py")):
        if "boot" not in path.parts:
            yield path, ast.parse(path.read_text(), str(path))


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def test_no_module_outside_state_reaches_redis_for_state():
    """Only xferd/state talks to Redis: elsewhere a Store's client, primary or keys for a
    command is never touched, nor a Redis client made (redis is imported for its errors)."""
    found = []
    for path, tree in _modules(PRODUCT):
        if (PRODUCT / "state") in path.parents:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("client", "primary", "pipeline") \
                    and "store" in _text(node.value).lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {_text(node)}")
            if isinstance(node, ast.Attribute) and _text(node.value) == "redis" and node.attr in REDIS_CLIENTS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {_text(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("redis") \
                    and any(a.name in REDIS_CLIENTS for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import ...")
    assert found == []


def test_the_serving_package_never_imports_its_tooling_at_import_time():
    """xferd_lab (demo, bench, chaos) is imported on demand by `xferd demo` and `xferd bench` only."""
    found = []
    for path, tree in _modules(PRODUCT):
        for node in tree.body:  # module level: what importing the module pulls in
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("xferd_lab")]
    assert found == []


def test_product_modules_stay_small():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path, _ in _modules(PRODUCT)}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
