"""The names the model registries and options accept, free of torch so that maetok/config.py checks
params.yaml against them without importing a model. The models take their choices from here, and
tests/test_config.py checks that the registries `MAETok_models` (maetok/models/tokenizer.py) and
`SiT_models` (maetok/models/sit.py) hold exactly these sizes."""

# The sizes of `MAETok_models` with their patch sizes, so that image sizes can be checked against the
# patch grid before a job builds the model.
TOKENIZER_PATCH_SIZES = {"MAETok-XS": 8, "MAETok-T": 4, "MAETok-S": 4, "MAETok-B/16": 16, "MAETok-Fixture": 16}
TOKENIZER_SIZES = tuple(TOKENIZER_PATCH_SIZES)
GENERATOR_SIZES = ("SiT-T/1", "SiT-S/1", "SiT-B/1", "SiT-L/1", "SiT-XL/1", "SiT-Fixture/1",
                   "LightningDiT-T/1", "LightningDiT-B/1", "LightningDiT-L/1", "LightningDiT-XL/1")

# Options of `MAETok` (paper §3; Tables 1, 6, 13).
POS_EMBEDS = ("rope_mixed", "rope_axial", "ape")
DECODER_BLOCKS = ("modulated", "plain")
BOTTLENECKS = ("ae", "vae")
MASK_RATIO_DISTS = ("truncnorm", "uniform")
AUX_TARGETS = ("pixel", "hog", "dino", "clip")
AUX_DEPTHS = ("linear", 1, 3, 6, 12)
AUX_LOSSES = ("mse", "cosine")
