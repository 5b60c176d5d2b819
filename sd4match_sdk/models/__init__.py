"""Model pieces: loading, the truncated UNet, feature extraction, text encoding, CPM, DINOv2."""
