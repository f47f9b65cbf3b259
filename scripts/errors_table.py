"""Regenerate the error tables in docs/errors.md from the code that raises the errors.

Every `ValueError(...)`, `FileNotFoundError(...)` and `FileExistsError(...)` built in git_scratch/
is a user-facing error (docs/errors.md, STYLE.md). This script finds each one with `ast`, renders
its message as a template (`{...}` is filled in at run time), and writes one table per topic:
the message, what to do, and where it is raised. What to do is the message's own text after its
first "; " (the house style puts the fix there); the few messages without one get theirs from
FIXES below, and --check fails when a message has neither, or when a FIXES entry matches no
message any more.

    python scripts/errors_table.py          # rewrite the tables between the markers
    python scripts/errors_table.py --check  # exit 1 if the doc has drifted (tests/hardening runs this)
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "git_scratch"
DOC = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- errors-table:begin -->", "<!-- errors-table:end -->"
ERROR_TYPES = ("ValueError", "FileNotFoundError", "FileExistsError", "ApiError")  # ApiError: explore's, with an HTTP status

# Topic -> modules, in the order the doc lists them; a module not named here goes under "Other".
TOPICS: dict[str, tuple[str, ...]] = {
    "Checkpoints and config.json": ("checkpoints.hub", "checkpoints.files", "checkpoints.variant",
                                    "checkpoints.original", "config", "model.git", "model.vision", "model.outputs"),
    "Images and videos": ("data.processor", "data.processor_config", "data.backends", "data.inputs",
                          "data.git_processor", "data.video"),
    "Text and the tokenizer": ("data.tokenizer", "data.tokenizer_files"),
    "Generation": ("generation.search", "generation.processors", "generation.constrain"),
    "Training, manifests and evaluation": ("training.loop", "training.resume", "training.monitor", "training.loss",
                                           "data.manifest", "training.evaluate"),
    "Evaluation on the datasets' files": ("evaluation.datasets", "evaluation.metrics", "evaluation.results",
                                          "evaluation.run"),
    "Command line": ("cli.__main__", "cli.common", "cli.caption", "cli.vqa", "cli.convert", "cli.info", "cli.demo",
                     "cli.train", "cli.eval", "cli.mask", "cli.parity", "cli.attention", "cli.init", "cli.manifest"),
    "Parity with transformers": ("tools.parity",),
    "ONNX export and runtime": ("export.graphs", "export.onnx", "export.runtime", "export.decode", "cli.export"),
    "Demo and pictures": ("demo.recipe", "demo.shapes", "tools.pictures", "tools.attention"),
    "The explorer (git-scratch explore)": ("explore.session", "explore.server", "cli.explore"),
    "Kernels and precision": ("accel", "accel.onednn", "accel.precision", "accel.compiled", "training.precision"),
}

# What to do, for messages whose text has no "; fix" part. Keyed by the rendered template; a key
# that matches no message fails --check, so this cannot go stale either.
FIXES: dict[str, str] = {
    "--device {name}: there are only {torch.cuda.device_count()} CUDA devices":
        "use an index below that count, or --device cpu",
    "no training data: pass --train-manifest FILE.jsonl (or set it in --config)": "as it says",
    "{JAVA_MISSING}": "the message (evaluation.metrics.JAVA_MISSING) says it: install Java 8+ "
                      "(apt-get install default-jre-headless), or pass --tokenizer python, not comparable with "
                      "published numbers",
    "config field d_model = {cfg.d_model} is not divisible by n_head = {cfg.n_head}":
        "heads must split the width evenly; the config is damaged or not a GIT config",
    "config field vision.d_model = {v.d_model} is not divisible by vision.n_head = {v.n_head}":
        "heads must split the width evenly; the config is damaged or not a GIT config",
    "config field vision.patch_size = {v.patch_size} is larger than vision.image_size = {v.image_size}":
        "the image would hold no patch; correct either value",
    "config field n_frames = {cfg.n_frames} must be a positive integer or null":
        "null for an image model, the number of frames (6 in the released ones) for a video model",
    "config field tie_embeddings = {cfg.tie_embeddings} must be true or false": "write true or false",
    "config field {name} = {value} must be a positive integer":
        "correct the value (git-base's are in configs/git-base.json)",
    "config field {name} = {value} must be a finite positive number":
        "correct the value (git-base's are in configs/git-base.json)",
    "config field init_std = {cfg.init_std} must be a finite number >= 0":
        "GIT uses 0.02; it only matters for training",
    "config field {name} = {p} must be a number in [0, 1)": "correct the value; GIT uses 0.1",
    "config field {name} = {tok} must be a token id in [0, vocab_size={cfg.vocab_size})":
        "GIT uses pad 0, bos 101, eos 102 with its 30522-token vocabulary",
    "{path}: cannot read a git_scratch config ({e})":
        "pass a config written by GitConfig.save, e.g. configs/git-base.json",
    "{source}: unknown field(s) {', '.join(sorted(unknown))}":
        "remove or rename them; the known fields are GitConfig's",
    "{source}: vision_config must be a JSON object, got {vision}": "restore config.json from the original checkpoint",
    "{source}: {where} = {block[name]} is not supported (only {accepted[0]})":
        "git_scratch implements GIT as released; such a checkpoint is not one",
    "manifest {path} not found": "check the path",
    "not a JSON object": "the line is skipped; write one JSON object per line",
    'needs exactly one of "image" or "video" holding a path': "the line is skipped; fix the line",
    "{media_keys[0]} {media} not found": "the line is skipped; paths are relative to the manifest's directory",
    "caption, question and answer must be non-empty strings": "the line is skipped; fix the line",
    "not JSON ({e.msg})": "the line is skipped; fix the line",
    "not JSON (nested too deeply)": "the line is skipped; fix the line",
    'needs "caption", or "question" and "answer"': "the line is skipped; fix the line",
    "a video example needs a model with temporal embeddings (n_frames)":
        "the example is skipped; train a video model (n_frames) or drop the video lines",
    "max_new_tokens = {max_new_tokens} must be at least 1": "pass a positive count",
    "min_new_tokens = {min_new_tokens} must be between 0 and max_new_tokens = {max_new_tokens}": "lower min_new_tokens",
    "num_beams = {num_beams} and num_return_sequences = {num_return_sequences} must be >= 1": "pass positive counts",
    "num_return_sequences = {num_return_sequences} cannot exceed num_beams = {num_beams}":
        "raise num_beams or lower num_return_sequences",
    "num_return_sequences > 1 needs num_beams >= num_return_sequences or do_sample=True": "as it says",
    "temperature = {temperature} must be > 0 when sampling": "use a positive temperature, or do_sample=False",
    "top_p = {top_p} must be in (0, 1]": "use a value in (0, 1]; 1 disables it",
    "prompts must be left-padded: every row's last attention_mask entry must be 1":
        "pad prompts on the left (tokenizer.batch_prompts does)",
    "{name} = {value} must be an integer": "pass an int",
    "answer() needs at least one question, each at least [bos]": "build questions with tokenizer.prompt_ids",
    "need at least one image token, text token and frame, and fewer pads than text tokens": "adjust the flags",
    "image file {path} not found": "check the path",
    "{path} is not an image Pillow can read ({reason})":
        "the file is damaged or not an image; re-export it as PNG or JPEG",
    "{path} is neither an image Pillow can open nor a video with a video stream":
        "pass an image or a video; the extension is never consulted, the content is",
    "media file {path} not found": "check the path",
    "size = {self.size} and crop_size = {self.crop_size} must be integers in [1, {MAX_SIDE}]":
        "correct preprocessor_config.json (GIT uses 224)",
    "mean = {self.mean} and std = {self.std} need three numbers each, std non-zero, and rescale_factor = "
    "{self.rescale_factor} a positive number": "correct preprocessor_config.json (CLIP's values are the defaults)",
    "{name} = {getattr(self, name)} must be true or false": "write true or false in preprocessor_config.json",
    "checkpoint directory {path} not found": "check the path",
    "ShapesConfig.{name}={values}: use distinct values from {tuple(allowed)}": "as it says",
    "ShapesConfig.n_compositional > 0 needs at least one held_out_pairs entry": "add a held-out pair or set it to 0",
    "ShapesConfig.held_out_pairs has ({colour}, {shape}), which is not a pair of the configured colours "
    "{self.colours} and shapes {self.shapes}": "hold out a pair of configured values",
    "batch_prompts needs a non-empty list with one prompt (or None) per image, got {texts}": "as it says",
    "training from scratch needs --tokenizer DIR (a directory with tokenizer.json)": "as it says, or pass --init",
    "{path}: unknown field(s) {', '.join(sorted(unknown))}": "remove them; every TrainConfig field is a flag too",
    "{path}: cannot read a training config ({e})": "fix the JSON, e.g. from configs/train/shapes-demo.json",
    "num_frames = {num_frames} must be at least 1": "pass a positive count",
    "video file {path} not found": "check the path",
    "{path} is corrupt: decoding frame {n} failed ({_reason(e)})": "re-encode or re-download the video",
    "{path} is not a video PyAV can open ({_reason(e)})": "the file is empty, damaged or not a video",
}


@dataclass(frozen=True)
class Site:
    module: str
    function: str
    kind: str  # ValueError, FileNotFoundError, FileExistsError
    parts: tuple[tuple[bool, str], ...]  # (is_placeholder, text)

    @property
    def template(self) -> str:
        return "".join("{" + text + "}" if hole else text for hole, text in self.parts)

    @property
    def is_wrapper(self) -> bool:
        """A prefix around another error's text ({e}), such as "{source}: {e}", with few words of its own."""
        wraps = any(hole and text in ("e", "what") for hole, text in self.parts)
        return wraps and sum(ch.isalpha() for hole, text in self.parts if not hole for ch in text) < 10

    def split(self) -> tuple[str, str | None]:
        """(what happened, what to do): the text before and after the first "; " outside a placeholder."""
        before: list[str] = []
        for i, (hole, text) in enumerate(self.parts):
            if not hole and "; " in text:
                head, tail = text.split("; ", 1)
                after = tail + "".join("{" + t + "}" if h else t for h, t in self.parts[i + 1:])
                return "".join(before) + head, after
            before.append("{" + text + "}" if hole else text)
        return self.template, None


def sites() -> list[Site]:
    """Every user error built in the package, in file order, with its innermost function."""
    found: list[Site] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        helpers = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}

        def visit(node: ast.AST, function: str) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = node.name
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ERROR_TYPES and node.args):
                found.append(Site(module, function, node.func.id, _parts(node.args[0], helpers)))
            for child in ast.iter_child_nodes(node):
                visit(child, function)

        visit(tree, "<module>")
    return sorted(set(found), key=found.index)


def _parts(node: ast.expr, helpers: dict[str, ast.FunctionDef]) -> tuple[tuple[bool, str], ...]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return ((False, node.value),)
    if isinstance(node, ast.JoinedStr):
        return tuple((False, v.value) if isinstance(v, ast.Constant) else (True, ast.unparse(v.value))
                     for v in node.values)
    # A message built by a small helper in the same module, e.g. processor._bomb_message(path).
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
        last = helpers[node.func.id].body[-1]
        if isinstance(last, ast.Return) and last.value is not None:
            return _parts(last.value, helpers)
    return ((True, ast.unparse(node)),)


def fix_for(site: Site) -> str | None:
    return site.split()[1] or FIXES.get(site.template)


def module_name(path: Path) -> str:
    """git_scratch/checkpoints/hub.py -> "checkpoints.hub": where a message is raised, in the doc."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def topic(module: str) -> str:
    return next((name for name, modules in TOPICS.items() if module in modules), "Other")


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def tables(found: list[Site]) -> str:
    out = []
    for name in [*TOPICS, "Other"]:
        rows = [s for s in found if topic(s.module) == name and not s.is_wrapper]
        if not rows:
            continue
        out += [f"### {name}", "", "| message | what to do | raised in |", "|---|---|---|"]
        for s in rows:
            what = s.split()[0]
            out.append(f"| `{cell(what)}` | {cell(fix_for(s) or '')} | `{s.module}.{s.function}` ({s.kind}) |")
        out.append("")
    wrappers = [s for s in found if s.is_wrapper]
    out += ["### Prefixes", "", "These add the file (or question) to another error's message above:", ""]
    out += [f"- `{cell(s.template)}` (`{s.module}.{s.function}`)" for s in wrappers]
    return "\n".join(out)


def render(text: str, found: list[Site]) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables(found)}\n{END}{tail}"


def problems(found: list[Site]) -> list[str]:
    templates = {s.template for s in found}
    out = [f"{s.module}.{s.function}: {s.template!r} says no fix; end it with '; <what to do>' or add it to FIXES"
           for s in found if not s.is_wrapper and fix_for(s) is None]
    out += [f"FIXES entry {key!r} matches no message any more; remove it" for key in FIXES if key not in templates]
    out += [f"{s.module}.{s.function}: {s.template!r} spans lines; errors are one line"
            for s in found if any("\n" in text for hole, text in s.parts if not hole)]
    return out


def pattern(site: Site) -> re.Pattern[str]:
    """A regex matching what a message made from the template says before its fix (the part the
    doc's message column shows; a caller may add to the fix). Placeholders match anything."""
    parts: list[str] = []
    for hole, text in site.parts:
        if not hole and "; " in text:
            parts.append(re.escape(text.split("; ", 1)[0]))
            break
        parts.append(".*?" if hole else re.escape(text))
    return re.compile("".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the doc is current")
    args = parser.parse_args()
    found = sites()
    text = DOC.read_text(encoding="utf-8")
    fresh = render(text, found)
    issues = problems(found)
    for issue in issues:
        print(issue, file=sys.stderr)
    if args.check:
        if fresh != text:
            print(f"{DOC} is out of date; run python scripts/errors_table.py", file=sys.stderr)
            return 1
        return 1 if issues else 0
    from git_scratch.atomic import atomic_write_text

    atomic_write_text(DOC, fresh)
    return 1 if issues else 0


if __name__ == "__main__":
    raise SystemExit(main())
