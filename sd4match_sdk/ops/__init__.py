"""Pure tensor functions: coordinate maps, matching, (training) loss and PCK."""
