/* Per-image checksums of many images in one call, without the GIL: spans(), the byte ranges
 * of a buffer (rows of an array too, as ranges of one size).
 *
 * Hashing 100,000 CIFAR rows one Python call each costs about half again the hash itself, and
 * holds the GIL, so it cannot run in a thread beside a writer that holds it too (h5py does).
 * The loop calls an XXH3-64 function that integrity.py finds at run time (python-xxhash's
 * own, or the system's libxxhash) and checks against python-xxhash before using it: no
 * hash code here, no headers or libraries needed to build. Building is optional; without it
 * integrity.py hashes in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef uint64_t (*xxh3_seeded)(const void *data, size_t len, uint64_t seed);

static int u64_buffer(Py_buffer *b, Py_ssize_t n, const char *what)
{
    if (b->len != n * 8 || ((uintptr_t)b->buf & 7u) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be %zd aligned 8-byte values", what, n);
        return -1;
    }
    return 0;
}

/* spans(fn, data, offsets, sizes, seeds, out): out[i] = fn(data + offsets[i], sizes[i], seeds[i]) */
static PyObject *spans(PyObject *self, PyObject *args)
{
    unsigned long long fn_addr;
    Py_buffer data, offsets, sizes, seeds, out;
    if (!PyArg_ParseTuple(args, "Ky*y*y*y*w*", &fn_addr, &data, &offsets, &sizes, &seeds, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = out.len / 8;
    if (u64_buffer(&offsets, n, "offsets") || u64_buffer(&sizes, n, "sizes") || u64_buffer(&seeds, n, "seeds")
        || u64_buffer(&out, n, "out"))
        goto done;
    const int64_t *off = offsets.buf, *len = sizes.buf;
    for (Py_ssize_t i = 0; i < n; i++) { /* checked before any byte is read */
        if (off[i] < 0 || len[i] < 0 || off[i] > data.len || len[i] > data.len - off[i]) {
            PyErr_Format(PyExc_ValueError, "span %zd (offset %lld, size %lld) is outside the %zd bytes", i,
                         (long long)off[i], (long long)len[i], data.len);
            goto done;
        }
    }
    {
        xxh3_seeded fn = (xxh3_seeded)(uintptr_t)fn_addr;
        const unsigned char *p = data.buf;
        const uint64_t *s = seeds.buf;
        uint64_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++)
            o[i] = fn(p + off[i], (size_t)len[i], s[i]);
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&seeds);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"spans", spans, METH_VARARGS, "spans(fn, data, offsets, sizes, seeds, out): hash n = len(out) byte ranges"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_xxh3", "Many XXH3 checksums in one call, GIL released.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__xxh3(void)
{
    return PyModule_Create(&module);
}
