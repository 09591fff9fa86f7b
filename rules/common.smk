# Recipes, paths and helpers shared by the stage rules.
import json
import os
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)
from nitro.build.recipe import Recipe, RecipeError  # noqa: E402
from nitro.models import UnsupportedModel  # noqa: E402

# Jobs run the nitro package of this checkout, whatever else is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
NITRO = f"{sys.executable} -m nitro.build"


def _recipes():
    recipes = {}
    for name, settings in config["models"].items():
        try:
            recipes[name] = Recipe(name, settings)
        except (RecipeError, UnsupportedModel) as exc:
            raise WorkflowError(f"bad recipe for model {name!r}: {exc}") from None
    return recipes


RECIPES = _recipes()


wildcard_constraints:
    model="|".join(RECIPES),
    chunk=r"embed|head|decoder_\d+",


def code(*relative):
    """Package files a stage's output depends on: editing them makes that stage stale."""
    return [os.path.join(workflow.basedir, "nitro", r) for r in relative]


def as_json(make):
    """A params function returning the JSON text of `make(recipe, wildcards)`."""
    return lambda w: json.dumps(make(RECIPES[w.model], w), sort_keys=True)


def mem_mb(step):
    return lambda w: RECIPES[w.model].mem_mb(step, getattr(w, "chunk", None))


def runtime_min(step):
    """Cluster runtime limit in minutes: generous, scaled with the declared memory."""
    return lambda w: 30 + RECIPES[w.model].mem_mb(step, getattr(w, "chunk", None)) // 256


onstart:
    from nitro.build.warmup import DeviceUnavailable, check_device

    for name, recipe in RECIPES.items():
        device = recipe.device_params()
        try:
            check_device(device["device"], device["properties"])
        except DeviceUnavailable as exc:
            raise WorkflowError(f"bad recipe for model {name!r}: {exc}") from None
