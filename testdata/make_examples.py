"""A small unlearning request on the mlp fixture for the tests and samples/InMemoryUnlearn: relabel 6 samples (numpy only).

Z  = 6 training samples as the model was trained on them (true labels);
Z~ = the same samples with a different label ((y + 1) mod 10), i.e. a label correction request.
Run: /usr/bin/python3 testdata/make_examples.py
"""
import numpy as np, os
here = os.path.dirname(os.path.abspath(__file__))
d = np.load(os.path.join(here, "mlp", "data.npz"))
x, y = d["x"], d["label"]
rows = np.arange(6)
np.savez(os.path.join(here, "mlp", "forget.npz"), x=x[rows], label=y[rows])
np.savez(os.path.join(here, "mlp", "corrected.npz"), x=x[rows], label=(y[rows] + 1) % 10)
