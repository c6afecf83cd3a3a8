"""gmmseg's napari plugin (install with ``pip install 'gmmseg[napari]'``).

napari finds it through the ``napari.manifest`` entry point and its
manifest ``napari.yaml``: the dock widget *GMM segmentation*
(:class:`gmmseg.napari._widget.SegmentationWidget`), a reader of gmmseg
model files and the sample images. Nothing is imported here: napari imports
each contribution when it is first used, and ``import gmmseg`` never
imports this package.
"""
