"""Preference data: every feedback format, its loaders and the sources it comes from.

    config        the data.* options (DataConfig)
    pairs         Pick-a-Pic v2 pair files; the in-memory PairData and ImageData
    world_pairs   pairs made in the shapes world from a pool of generators
    likes         per-image binary labels (Diffusion-KTO)
    votes         per-scorer votes on pairs (BalancedDPO)
    attributes    per-image attribute annotations (CPO)
    source        a loader's request (FeedbackSource) and the cache of derived files
    loaders       the registry: feedback kind -> loader; load_for_method
    real          real datasets (Pick-a-Pic v2, HPD v2) and prompt sets, in their published layouts
    stream        a dataset directory read as a stream, sharded across ranks, with a latent cache

Import the module you need (`from bench.data.pairs import load_pickapic`); this package imports
nothing, so that reading the config stays free of torch.
"""
