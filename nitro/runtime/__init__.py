"""Load what the build produced and run it. Reads only the manifest and the artifacts it names."""
from .model import ArtifactError, ContextOverflow, Model, read_manifest

__all__ = ["ArtifactError", "ContextOverflow", "Model", "read_manifest"]
