"""Transformers-native caption families (BLIP, Florence-2) behind the captioner interface: `transformers`
classes only (no remote code), loaded from a local Hugging Face model directory."""
