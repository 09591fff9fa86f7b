"""Load what the build produced and run it. Reads only the manifest and the artifacts it names (nitro.artifacts)."""
from ..artifacts import ArtifactError, read_manifest
from .model import ContextOverflow, Model

__all__ = ["ArtifactError", "ContextOverflow", "Model", "read_manifest"]
