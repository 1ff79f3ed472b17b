"""The networks. The MAETok tokenizer: tokenizer.py (the model and its size registry), built from
blocks.py (RoPE, attention, encoder, decoder), aux_decoders.py (auxiliary decoders, targets, losses),
masking.py and hog.py (HOG targets). The latent diffusion transformers: sit.py. choices.py lists the
names both registries accept, free of torch, for checking params.yaml. Also: teachers.py (the aux
targets' pretrained teachers), standins.py (the tiny-scale stand-ins), io.py (weight files),
official.py (the official code's weights) and info.py (parameter counts)."""
