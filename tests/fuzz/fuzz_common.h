/* Shared by the libFuzzer harnesses: reading the fuzzer's bytes. Built by
 * run.py against each interpreter's headers and libpython, never shipped. */
#ifndef SIGPROF_FUZZ_COMMON_H
#define SIGPROF_FUZZ_COMMON_H

#include "python_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The input as a stream; reads past its end give zeros, so every input is a
 * valid program for the harness. */
typedef struct {
    const uint8_t *data;
    size_t size;
    size_t at;
} fz_reader;

static inline uint64_t fz_bytes(fz_reader *r, unsigned count)
{
    uint64_t value = 0;
    for (unsigned i = 0; i < count; i++) {
        uint8_t byte = r->at < r->size ? r->data[r->at] : 0;
        r->at++;
        value |= (uint64_t)byte << (8 * i);
    }
    return value;
}

static inline int fz_more(const fz_reader *r) { return r->at < r->size; }
static inline uint8_t fz_u8(fz_reader *r) { return (uint8_t)fz_bytes(r, 1); }
static inline uint16_t fz_u16(fz_reader *r) { return (uint16_t)fz_bytes(r, 2); }
static inline uint32_t fz_u32(fz_reader *r) { return (uint32_t)fz_bytes(r, 4); }
static inline uint64_t fz_u64(fz_reader *r) { return fz_bytes(r, 8); }

#define FZ_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "fuzz invariant broken at %s:%d: ", __FILE__, __LINE__);                  \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

/* The byte count of the code's instructions: PyCode_Addr2Line's domain. */
static inline Py_ssize_t fz_code_nbytes(PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030B0000
    return _PyCode_NBYTES(code);
#else
    return PyBytes_GET_SIZE(code->co_code);
#endif
}

#endif
