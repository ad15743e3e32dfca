"""Build context of the pipeline's default job image (see ``Dockerfile``).

Shipped inside the wheel so an installed copy of the library can synthesize the image asset.
"""
