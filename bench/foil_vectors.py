"""Writes foil's embeddings folder ($FOIL_OUT: header.json + vectors.f32, little-endian float32
rows) as the .npy file $VECTORS, for bench/encode.sh's cosine check."""
import json
import os

import numpy as np

out = os.environ["FOIL_OUT"]
dim = json.load(open(os.path.join(out, "header.json")))["dim"]
np.save(os.environ["VECTORS"], np.fromfile(os.path.join(out, "vectors.f32"), "<f4").reshape(-1, dim))
