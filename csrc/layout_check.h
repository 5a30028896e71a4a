/* The layout self-check (CPython 3.13+). The walkers, the registry and the
 * resolver read interpreter fields at offsets fixed when sigprof was
 * compiled; an interpreter built with another layout (a patch release that
 * moved a field, a distribution's or a debug build) would have them read the
 * wrong memory. CPython publishes, for debuggers, the offsets of those fields
 * in _PyRuntime.debug_offsets: each one sigprof reads is compared with the
 * compiled one before sampling starts. */
#ifndef SIGPROF_LAYOUT_CHECK_H
#define SIGPROF_LAYOUT_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* 0 when the running interpreter's published layout matches the compiled one
 * (or it publishes none: before 3.13); else -1, naming in why the first field
 * that differs. */
int sp_layout_check(char *why, size_t why_len);

/* The same check over a table given as bytes (sp_layout_table_size() of
 * them, laid out as the runtime's): tests alter a copy of the runtime's. */
int sp_layout_check_table(const unsigned char *table, char *why, size_t why_len);

/* The runtime's published table (NULL before 3.13) and its size. */
const unsigned char *sp_layout_runtime_table(void);
size_t sp_layout_table_size(void);

/* The fields compared: name and byte position in the table, by index
 * (0 <= index < sp_layout_field_count()). */
uint32_t sp_layout_field_count(void);
const char *sp_layout_field_name(uint32_t index);
size_t sp_layout_field_position(uint32_t index);

#endif
