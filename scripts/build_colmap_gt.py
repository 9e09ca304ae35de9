"""Build a COLMAP reconstruction to use as pose ground truth (`lightmatch eval pose --colmap-model`).

The model is made by COLMAP's own pipeline through pycolmap, independent of lightmatch's models: SIFT at the
images' full resolution (up to --max-image-size), one camera per image, exhaustive matching with geometric
verification, incremental mapping with bundle adjustment. The images are then undistorted by COLMAP
(``undistorted/images`` with the pinhole model ``undistorted/sparse``), since the evaluation uses pinhole
intrinsics, as MegaDepth's undistorted images do. Such a model favours whatever built it (here SIFT): its poses are
SIFT's best estimate, so methods that agree with SIFT score higher. Use it to rank other methods against each
other, not against SIFT.

    python scripts/build_colmap_gt.py ../shared/data/sacre_coeur gt/sacre_coeur
    lightmatch eval pose --colmap-model gt/sacre_coeur/undistorted/sparse gt/sacre_coeur/undistorted/images
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("output", type=Path, help="folder for database.db and sparse/ (the largest model)")
    parser.add_argument("--max-image-size", type=int, default=4096, help="SIFT's image size limit (long side)")
    parser.add_argument("--max-features", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import pycolmap

    args.output.mkdir(parents=True, exist_ok=True)
    database = args.output / "database.db"
    database.unlink(missing_ok=True)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = args.threads
    extraction.max_image_size = args.max_image_size
    extraction.sift.max_num_features = args.max_features
    pycolmap.extract_features(database, args.images, camera_mode=pycolmap.CameraMode.PER_IMAGE,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = args.threads
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    models = pycolmap.incremental_mapping(database, args.images, args.output / "models")
    if not models:
        sys.exit(f"{args.images}: COLMAP registered no model")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    sparse = args.output / "sparse"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir()
    best.write(sparse)
    undistorted = args.output / "undistorted"
    shutil.rmtree(undistorted, ignore_errors=True)
    pycolmap.undistort_images(undistorted, sparse, args.images)
    num_images = pycolmap.Database.open(database).num_images()
    print(f"{best.num_reg_images()} of {num_images} images registered, "
          f"{best.num_points3D()} points, mean reprojection error {best.compute_mean_reprojection_error():.3f} px "
          f"-> {sparse}; undistorted: {undistorted}/sparse and {undistorted}/images")


if __name__ == "__main__":
    main()
