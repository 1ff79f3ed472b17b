"""Model families, one file each: the MAETok tokenizer (tokenizer.py, with its HOG targets in
hog.py) and the latent diffusion transformers (sit.py)."""
