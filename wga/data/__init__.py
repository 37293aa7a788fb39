"""The Web Gallery of Art as data: catalog → download → dataset (and synthetic fixtures).

:mod:`wga.data.catalog` reads and filters the catalog, :mod:`wga.data.download` fetches the
images politely and resumably, :mod:`wga.data.dataset` turns a download into class folders with
leak-free splits, :mod:`wga.data.synthetic` makes catalogs and images for tests and offline demos.
"""
