"""SAE math and the public weight formats: build, load and save sparse autoencoders."""

from saeembed.sae.formats import detect_format, load_sae, save_sae
from saeembed.sae.model import SAE, SAEConfig

__all__ = ["SAE", "SAEConfig", "load_sae", "save_sae", "detect_format"]
