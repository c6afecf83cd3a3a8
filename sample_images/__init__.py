"""Sample images bundled with gmmseg (installed as gmmseg.sample_images; see README.md)."""
