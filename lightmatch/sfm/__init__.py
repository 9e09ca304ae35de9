"""From matches to a 3D model: pycolmap's mappers (:mod:`.mapper`), the model's summary and a top view
(:mod:`.picture`), and ``reconstruct``'s whole run from an image folder (:mod:`.reconstruct`)."""
