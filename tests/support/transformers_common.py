"""transformers' own common test mixins (`ModelTesterMixin`, `ConfigTester`, `ProcessorTesterMixin`), taken from the
source distribution of the transformers release that is installed, so Crab is held to the conventions of the
transformers its user runs.

The sdist ships the top-level `tests/*.py` files but not the helper packages they import (`tests/utils`,
`tests/generation`, `tests/exporters`, the repository's `utils/`). Those imports are answered here by small modules
of our own, each saying what it stands for:
- `GenerationTesterMixin`: an empty class. Crab generates nothing; the mixin checks only that a model that cannot
  `generate` does not inherit it.
- `ExportTesterMixin`: an empty class. Its tests are not in the sdist; `torch.export` of Crab is tested by
  tests/test_onnx_export.py.
- `config_common_kwargs`: a value other than the default for every common `PreTrainedConfig` attribute, for
  `ConfigTester.check_config_arguments_init`.
- `url_to_local_path`: the identity (the processor mixin's image and video URLs are never read for an audio + text
  processor).

The package is unpacked once per transformers version into `$CRAB_TRANSFORMERS_TESTS` (default
`~/.cache/crab/transformers-tests/<version>`), downloaded with `pip download` from the package index.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"

_SHIMS = {
    "__init__.py": "",
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Crab\'s stand-in: Crab generates nothing."""\n\n\nclass GenerationTesterMixin:\n    pass\n'
    ),
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Crab\'s stand-in: the export mixin is not in the sdist; tests/test_onnx_export.py exports Crab."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": '''"""Crab's stand-in: a non-default value for each common config attribute."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["CrabTestArchitecture"],
    "finetuning_task": "emotion",
    "id2label": {0: "calm", 1: "excited"},
    "label2id": {"calm": 0, "excited": 1},
    "problem_type": "single_label_classification",
    "tokenizer_class": "RobertaTokenizerFast",
    "prefix": "emotion:",
    "bos_token_id": 7,
    "pad_token_id": 8,
    "eos_token_id": 9,
    "sep_token_id": 10,
    "decoder_start_token_id": 11,
    "task_specific_params": {"emotion": {"top_k": 2}},
    "tie_word_embeddings": False,
    "is_decoder": False,
    "cross_attention_hidden_size": 64,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
}
''',
}
_OUTSIDE_SHIMS = {
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Crab\'s stand-in: the identity; the media URLs are not read for an audio + text processor."""\n\n\n'
        "def url_to_local_path(url, return_url_if_not_found=True):\n    return url\n"
    ),
}


def _cache_root() -> Path:
    root = os.environ.get("CRAB_TRANSFORMERS_TESTS")
    return Path(root) if root else Path.home() / ".cache" / "crab" / "transformers-tests"


def _unpack(version: str, target: Path) -> None:
    """Download transformers' sdist of `version` and unpack its top-level tests into `target`/transformers_tests."""
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*command, f"transformers=={version}", "-d", download], check=True, capture_output=True)
        (sdist,) = Path(download).glob("transformers-*.tar.gz")
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        package = staging / PACKAGE
        package.mkdir()
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (package / "test_modeling_common.py").exists():
            raise RuntimeError(f"transformers {version}'s sdist has no tests/test_modeling_common.py")
        for name, text in _SHIMS.items():
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(text)
        for name, text in _OUTSIDE_SHIMS.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        staging.replace(target)  # atomic: a half-unpacked folder is never used


def transformers_tests_root(version: str | None = None) -> Path:
    """The folder holding `transformers_tests` for `version` (the installed transformers unless given), unpacked on
    first use; it is put on `sys.path`."""
    version = version or transformers.__version__
    target = _cache_root() / version
    if not (target / PACKAGE / "test_modeling_common.py").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _unpack(version, target)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return target


def common_module(name: str):
    """`transformers_tests.<name>` of the installed transformers (e.g. "test_modeling_common"), or a pytest module
    skip naming why it cannot be had (no package index reachable)."""
    import pytest

    try:
        transformers_tests_root()
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        pytest.skip(
            f"transformers {transformers.__version__}'s test mixins could not be had from its sdist ({error}; "
            f"{detail.decode(errors='replace').strip()[-300:]}); run with a package index reachable",
            allow_module_level=True,
        )
    return importlib.import_module(f"{PACKAGE}.{name}")
