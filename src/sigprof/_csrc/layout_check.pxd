from libc.stdint cimport uint32_t


cdef extern from "layout_check.h":
    int sp_layout_check_table(const unsigned char *table, char *why, size_t why_len)
    const unsigned char *sp_layout_runtime_table()
    size_t sp_layout_table_size()
    uint32_t sp_layout_field_count()
    const char *sp_layout_field_name(uint32_t index)
    size_t sp_layout_field_position(uint32_t index)
