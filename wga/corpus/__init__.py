"""A model over a corpus of artworks: the probe (top artworks per unit) and the atlas."""
