"""The reference's severity tables (make_cifar_c.py / make_imagenet_c.py).

`PARAMS[table][name]` holds corruption `name`'s parameters for severities
1..5 in the table 'cifar' (CIFAR-10-C, reference size 32 px) or 'imagenet'
(ImageNet-C, 224 px). Each corruption's two rows stand together below, CIFAR
first, under one comment naming their columns.
"""

TABLES = ('cifar', 'imagenet')
REFERENCE_SIZE = {'cifar': 32, 'imagenet': 224}
# CIFAR resizes the frost photographs by 0.2 before cropping 32 px.
FROST_PHOTO_SCALE = {'cifar': 0.2, 'imagenet': 1.0}
# elastic_transform constants are fractions of IMSIZE=32 (CIFAR) and of 244
# (ImageNet; "244 should have been 224" in the reference).
ELASTIC_UNIT = {'cifar': 32.0, 'imagenet': 244.0}

# name -> {table: one entry per severity 1..5}.
_ROWS = {
    'gaussian_noise': dict(cifar=(0.04, 0.06, 0.08, 0.09, 0.10),
                           imagenet=(0.08, 0.12, 0.18, 0.26, 0.38)),
    'shot_noise': dict(cifar=(500, 250, 100, 75, 50),
                       imagenet=(60, 25, 12, 5, 3)),
    'impulse_noise': dict(cifar=(0.01, 0.02, 0.03, 0.05, 0.07),
                          imagenet=(0.03, 0.06, 0.09, 0.17, 0.27)),
    # (sigma, alias_blur)
    'defocus_blur': dict(
        cifar=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        imagenet=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))),
    # (sigma, max_delta, iterations)
    'glass_blur': dict(
        cifar=((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2),
               (0.4, 1, 2)),
        imagenet=((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
                  (1.5, 4, 2))),
    # (radius, sigma)
    'motion_blur': dict(
        cifar=((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        imagenet=((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))),
    # np.arange(start, stop, step) of zoom factors
    'zoom_blur': dict(
        cifar=((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01),
               (1, 1.21, 0.01), (1, 1.26, 0.01)),
        imagenet=((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02),
                  (1, 1.26, 0.02), (1, 1.31, 0.03))),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    'snow': dict(
        cifar=((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
               (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
               (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
               (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        imagenet=((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                  (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                  (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                  (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                  (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))),
    # (image weight, frost weight)
    'frost': dict(
        cifar=((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        imagenet=((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))),
    # (strength, wibble decay)
    'fog': dict(
        cifar=((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        imagenet=((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))),
    'brightness': dict(cifar=(0.05, 0.1, 0.15, 0.2, 0.3),
                       imagenet=(0.1, 0.2, 0.3, 0.4, 0.5)),
    'contrast': dict(cifar=(0.75, 0.5, 0.4, 0.3, 0.15),
                     imagenet=(0.4, 0.3, 0.2, 0.1, 0.05)),
    # (alpha, sigma, affine) in units of ELASTIC_UNIT
    'elastic_transform': dict(
        cifar=((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
               (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
        imagenet=((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02),
                  (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))),
    'pixelate': dict(cifar=(0.95, 0.9, 0.85, 0.75, 0.65),
                     imagenet=(0.6, 0.5, 0.4, 0.3, 0.25)),
    'jpeg_compression': dict(cifar=(80, 65, 58, 50, 40),
                             imagenet=(25, 18, 15, 10, 7)),
    'speckle_noise': dict(cifar=(0.06, 0.1, 0.12, 0.16, 0.2),
                          imagenet=(0.15, 0.2, 0.35, 0.45, 0.6)),
    'gaussian_blur': dict(cifar=(0.4, 0.6, 0.7, 0.8, 1),
                          imagenet=(1, 2, 3, 4, 6)),
    # (loc, scale, sigma, threshold, intensity or mud sigma, mud?)
    'spatter': dict(
        cifar=((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
               (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
               (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
        imagenet=((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                  (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                  (0.67, 0.4, 1, 0.65, 1.5, 1))),
    # (saturation factor, offset)
    'saturate': dict(
        cifar=((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        imagenet=((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))),
}

PARAMS = {table: {name: rows[table] for name, rows in _ROWS.items()}
          for table in TABLES}
