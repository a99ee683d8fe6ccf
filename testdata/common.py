"""Helpers shared by the testdata generators, without side effects at import (no torch settings)."""
import io
import zipfile

import numpy as np


def save_npz(path, arrays):
    """np.savez_compressed equivalent with fixed timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            v = np.asarray(v)  # (np.ascontiguousarray would turn the scalar loss into shape (1,))
            np.lib.format.write_array(buf, v if v.flags.c_contiguous else v.copy(order="C"), allow_pickle=False)
            zf.writestr(info, buf.getvalue())
