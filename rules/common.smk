# Recipes, paths and helpers shared by the step rules. What each step is given, and the code it runs, comes from
# the recipe (nitro/build/recipe.py); the files a built model holds are named by nitro/artifacts.py.
import json
import os
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)
from nitro.artifacts import (CALIBRATION, COMPILED, COMPRESSED, EXPORT, MANIFEST, REFERENCE, REPORT,  # noqa: E402
                             SOURCE, TOKENIZER, TOKENS, log_file)
from nitro.build.recipe import Recipe, RecipeError, step_code  # noqa: E402
from nitro.models import UnsupportedModel  # noqa: E402
from nitro.sources import SourceError  # noqa: E402

# Jobs run the nitro package of this checkout, whatever else is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
NITRO = f"{sys.executable} -m nitro.build"


def _recipes():
    recipes = {}
    for name, settings in config["models"].items():
        try:
            recipes[name] = Recipe(name, settings)
        except (RecipeError, SourceError, UnsupportedModel) as exc:
            raise WorkflowError(f"bad recipe for model {name!r}: {exc}") from None
    return recipes


RECIPES = _recipes()


wildcard_constraints:
    model="|".join(RECIPES),
    chunk=r"embed|head|decoder_\d+",


def model_path(*parts):
    """A path in a built model's folder, as a pattern over the model (and chunk) wildcards."""
    return "/".join(["results", "{model}", *parts])


def chunk_log(step):
    return model_path(log_file(step, "{chunk}"))


def previous_output(token_set):
    """An input function: what the chunk before this one gave on the token set (REFERENCE: held-out,
    CALIBRATION), or the token ids themselves for the embedding."""

    def previous(w):
        names = RECIPES[w.model].chunk_names
        before = names.index(w.chunk) - 1
        return model_path(token_set, f"{names[before]}.npy" if before >= 0 else TOKENS)

    return previous


def code(step):
    """The package files the step runs: editing any of them makes its outputs stale."""
    return [os.path.join(workflow.basedir, f) for f in step_code(step)]


def as_json(params_of):
    """A params function: the JSON text of `params_of(recipe, wildcards)`."""
    return lambda w: json.dumps(params_of(RECIPES[w.model], w), sort_keys=True)


def mem_mb(step):
    return lambda w: RECIPES[w.model].mem_mb(step, getattr(w, "chunk", None))


def disk_mb(step):
    return lambda w: RECIPES[w.model].disk_mb(step, getattr(w, "chunk", None))


def runtime_min(step):
    """Cluster runtime limit in minutes: generous, scaled with the declared memory."""
    return lambda w: 30 + RECIPES[w.model].mem_mb(step, getattr(w, "chunk", None)) // 256


onstart:
    from nitro.build.compile import DeviceUnavailable, check_device

    for name, recipe in RECIPES.items():
        device = recipe.device_params()
        try:
            check_device(device["device"], device["properties"])
        except DeviceUnavailable as exc:
            raise WorkflowError(f"bad recipe for model {name!r}: {exc}") from None
