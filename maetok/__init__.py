"""MAETok reproduction: tokenizers, diffusion generators, analyses and the pipeline glue."""

__version__ = "0.1.0"
