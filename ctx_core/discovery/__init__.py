"""Unsupervised object discovery (Doersch et al. 2015, sec. 4.2): constellations
of patches matched across images, geometric verification, clusters ranked by
their verified matches, and purity-coverage evaluation."""
