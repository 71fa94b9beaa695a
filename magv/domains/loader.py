"""Finding a domain from a spec: a built-in name, a folder path, or an importable module."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from magv.domains.base import Domain
from magv.errors import BadInput

BUILTINS = ("retail", "logs")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# What a module must define when it exposes neither DOMAIN nor get_domain().
_PARTS = ("NAME", "SYSTEM_PROMPT", "TOOLS", "generate")


def list_domains() -> list[str]:
    return list(BUILTINS)


def load_domain(spec: str) -> Domain:
    """`retail` / `logs`, a folder (with domain.toml or domain.py), or a module "pkg.mod"."""
    if not isinstance(spec, str) or not spec.strip():
        raise BadInput(f"domain: expected a built-in name ({', '.join(BUILTINS)}), a folder or a module")
    spec = spec.strip()
    if spec in BUILTINS:
        return _from_module(importlib.import_module(f"magv.domains.{spec}"), spec, None)
    path = Path(spec).expanduser()
    if path.is_file() and path.name in ("domain.toml", "domain.py"):
        path = path.parent
    if path.is_dir():
        return load_folder(path)
    if ("/" in spec or "\\" in spec) or not _MODULE.match(spec):
        raise BadInput(
            f"domain {spec!r}: no such folder, and not a built-in ({', '.join(BUILTINS)}) or module name"
        )
    return _from_module(_import(spec), spec, None)


def load_folder(folder: Path) -> Domain:
    if (folder / "domain.toml").is_file():
        from magv.domains.folder import load_toml_domain

        return load_toml_domain(folder)
    source = folder / "domain.py"
    if not source.is_file():
        missing = ["domain.toml or domain.py"]
        if not (folder / "seeds.jsonl").is_file():
            missing.append("seeds.jsonl")
        raise BadInput(f"domain folder {folder}: not a domain; missing: {', '.join(missing)}")
    name = "magv_user_domain_" + hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, source)
    if module_spec is None or module_spec.loader is None:
        raise BadInput(f"{source}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        module_spec.loader.exec_module(module)
    except BadInput:
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise BadInput(f"{source}: failed to import: {type(exc).__name__}: {exc}") from None
    return _from_module(module, str(source), folder)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise BadInput(
                f"domain {name!r}: not a built-in ({', '.join(BUILTINS)}), not a folder, and no module of that name"
            ) from None
        raise BadInput(f"domain module {name}: failed to import: {exc}") from None
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(f"domain module {name}: failed to import: {type(exc).__name__}: {exc}") from None


def _from_module(module: ModuleType, where: str, folder: Path | None) -> Domain:
    here = folder or _module_dir(module)
    if hasattr(module, "DOMAIN"):
        domain = module.DOMAIN
    elif callable(getattr(module, "get_domain", None)):
        try:
            domain = module.get_domain()
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"{where}: get_domain() failed: {type(exc).__name__}: {exc}") from None
    else:
        domain = _from_parts(module, where, here)
    if not isinstance(domain, Domain):
        raise BadInput(
            f"{where}: DOMAIN / get_domain() must give a magv.domains.Domain, got {type(domain).__name__}"
        )
    if not domain.seeds_path.is_file():
        raise BadInput(f"{where}: domain {domain.name}: missing: seed file {domain.seeds_path}")
    return domain


def _from_parts(module: ModuleType, where: str, here: Path | None) -> Domain:
    missing = [p for p in _PARTS if not hasattr(module, p)]
    seeds = getattr(module, "SEEDS", None)
    seeds_path = Path(seeds) if seeds else (here / "seeds.jsonl" if here else None)
    if seeds_path is None or not seeds_path.is_file():
        missing.append("SEEDS (or a seeds.jsonl next to the module)")
    if missing:
        raise BadInput(
            f"{where}: not a magv domain; define DOMAIN = Domain(...) or get_domain(), or these "
            f"names; missing: {', '.join(missing)}"
        )
    return Domain(
        module.NAME,
        description=getattr(module, "DESCRIPTION", ""),
        system_prompt=module.SYSTEM_PROMPT,
        tools=list(module.TOOLS),
        generate=module.generate,
        seeds_path=seeds_path,
        data_version=str(getattr(module, "DATA_VERSION", "1")),
    )


def _module_dir(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).parent if file else None
