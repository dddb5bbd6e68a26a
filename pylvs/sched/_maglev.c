/* The Maglev table fill of ip_vs_mh.c (ip_vs_mh_populate) and its hash, for pylvs.sched.mh.
 *
 * The fill is a sequential greedy walk: in rounds, each dest in list order claims `turns` slots,
 * each the next free slot on its own permutation (start offset, stride skip). About 35,000 probes
 * for a 4093-slot table; in Python that is 2-4 ms per rebuild, here some tens of microseconds.
 * The result is checked against the kernel's loop written in Python (tests/unit/sched_reference.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The table as a list of `size` items: owners[i] for the slots dest i claimed, None where nobody did. */
static PyObject *table_of(const int32_t *table, Py_ssize_t size, PyObject *owners)
{
    PyObject *list = PyList_New(size);
    if (!list)
        return NULL;
    for (Py_ssize_t c = 0; c < size; c++) {
        PyObject *item = table[c] < 0 ? Py_None : PyTuple_GET_ITEM(owners, table[c]);
        Py_INCREF(item);
        PyList_SET_ITEM(list, c, item);
    }
    return list;
}

/* fill(size, offsets, skips, turns, owners) -> list: offsets, skips, turns are buffers of uint32, one
 * per dest in list order; owners is the tuple of the dests themselves. */
static PyObject *fill(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_ssize_t size;
    Py_buffer off, skip, turns;
    PyObject *owners, *result = NULL;
    int32_t *table = NULL;
    uint32_t *ptr = NULL;

    if (!PyArg_ParseTuple(args, "ny*y*y*O!", &size, &off, &skip, &turns, &PyTuple_Type, &owners))
        return NULL;
    Py_ssize_t n = off.len / (Py_ssize_t)sizeof(uint32_t);
    if (size <= 0 || off.len % sizeof(uint32_t) || skip.len != off.len || turns.len != off.len
        || PyTuple_GET_SIZE(owners) != n) {
        PyErr_SetString(PyExc_ValueError, "fill: offsets, skips, turns and owners must have one length");
        goto out;
    }
    const uint32_t *o = off.buf, *s = skip.buf, *t = turns.buf;
    Py_ssize_t claims_per_round = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i] >= (uint32_t)size || s[i] == 0 || s[i] >= (uint32_t)size) {
            PyErr_SetString(PyExc_ValueError, "fill: offset or skip out of range");
            goto out;
        }
        claims_per_round += t[i];
    }
    table = PyMem_Malloc(size * sizeof(int32_t));
    ptr = PyMem_Malloc((n ? n : 1) * sizeof(uint32_t));
    if (!table || !ptr) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t c = 0; c < size; c++)
        table[c] = -1;
    memcpy(ptr, o, n * sizeof(uint32_t));
    const uint32_t m = (uint32_t)size;
    Py_ssize_t claimed = claims_per_round ? 0 : size;
    while (claimed < size) {
        for (Py_ssize_t i = 0; i < n && claimed < size; i++) {
            for (uint32_t k = 0; k < t[i] && claimed < size; k++) {
                uint32_t c = ptr[i];
                while (table[c] != -1) {  /* also steps off the slot this dest claimed last */
                    c += s[i];
                    if (c >= m)
                        c -= m;
                }
                table[c] = (int32_t)i;
                ptr[i] = c;
                claimed++;
            }
        }
    }
    result = table_of(table, size, owners);
out:
    PyMem_Free(table);
    PyMem_Free(ptr);
    PyBuffer_Release(&off);
    PyBuffer_Release(&skip);
    PyBuffer_Release(&turns);
    return result;
}

/* The kernel's hsiphash_1u32 on a 64-bit machine: SipHash-1-3 of the u32's 4 little-endian bytes,
 * truncated to 32 bits. In C because mh hashes every new client: a library call costs a microsecond. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                         \
    do {                                                                                                 \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                        \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                           \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                           \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                        \
    } while (0)

static PyObject *hsiphash_u32(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hsiphash_u32(k0, k1, value)");
        return NULL;
    }
    /* FASTCALL, no format string: this is the per-new-client cost */
    uint64_t k0 = PyLong_AsUnsignedLongLong(args[0]), k1 = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long value = PyLong_AsUnsignedLongMask(args[2]);
    if (PyErr_Occurred())
        return NULL;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = ((uint64_t)4 << 56) | (uint32_t)value;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return PyLong_FromUnsignedLong((uint32_t)(v0 ^ v1 ^ v2 ^ v3));
}

static PyMethodDef methods[] = {
    {"hsiphash_u32", (PyCFunction)(void (*)(void))hsiphash_u32, METH_FASTCALL, "hsiphash_u32(k0, k1, value) -> the kernel's hsiphash_1u32"},
    {"fill", fill, METH_VARARGS, "fill(size, offsets, skips, turns, owners) -> list of owners (None: free)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_maglev",
    .m_doc = "The Maglev table fill of ip_vs_mh.c.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__maglev(void)
{
    return PyModule_Create(&module);
}
