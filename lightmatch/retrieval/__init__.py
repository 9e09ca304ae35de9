"""Image retrieval for pairing: global descriptors aggregated from local features (:mod:`.vlad`), hloc's
``global-feats.h5`` (:mod:`.store`), exact top-K search (:mod:`.topk`) and retrieval pairs (:mod:`.pairs`)."""
