"""Run Python the way a Hub user would: a fresh interpreter, offline, where `import modeling_crab` fails, so a
checkpoint (or the Space app, or the Endpoints handler) must bring its own code."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

NO_CRAB_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoCrabPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_crab" or name.startswith("modeling_crab."):
                raise ImportError("the modeling_crab package is not installed here")
    sys.meta_path.insert(0, _NoCrabPackage())
    """
)


def hub_user_env(work_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work_dir / "modules_cache"), TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def run_as_hub_user(script: str, work_dir: Path, *args: str, timeout: int = 300, **env: str):
    """Run `script` (its body may read `sys.argv[1:]` = `args` and must `json.dump` its result to the path in
    `OUT`) and return that result."""
    path, out = work_dir / "hub_user.py", work_dir / "hub_user.json"
    path.write_text(NO_CRAB_PACKAGE + "OUT = " + repr(str(out)) + "\n" + textwrap.dedent(script))
    done = subprocess.run(
        [sys.executable, str(path), *map(str, args)],
        cwd=work_dir,
        env=hub_user_env(work_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


ROOT = Path(__file__).resolve().parents[2]


def push_to_hub_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("push_to_hub", ROOT / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)
