# Regenerates the .npy/.npz fixtures used by tests/Data. Run from this folder with
# Debian's numpy: /usr/bin/python3 make_npy_fixtures.py
import numpy as np

arrays = {
    "f32": np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -7.5]], dtype="<f4"),
    "f64": np.array([0.1, -2.5, 1e300], dtype="<f8"),
    "i64": np.array([[-(2**40), 0], [7, 2**62]], dtype="<i8"),
    "i32": np.array([-5, 0, 2147483647], dtype="<i4"),
    "u8": np.array([[0, 128, 255]], dtype="u1"),
    "b": np.array([True, False, True, True], dtype="?"),
    "scalar": np.array(42.5, dtype="<f8"),
}
np.savez("stored.npz", **arrays)
np.savez_compressed("compressed.npz", **arrays)

np.save("fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
np.save("bigendian.npy", np.array([1.0, 2.0], dtype=">f4"))
np.save("object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)

# numpy only picks version 2.0 when the header exceeds 65535 bytes, so write it explicitly.
with open("v2.npy", "wb") as f:
    arr = np.array([[1, 2], [3, 4]], dtype="<i4")
    np.lib.format.write_array_header_2_0(f, np.lib.format.header_data_from_array_1_0(arr))
    f.write(arr.tobytes())
