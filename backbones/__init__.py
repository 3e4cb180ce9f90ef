"""CLIP-like backbones."""
