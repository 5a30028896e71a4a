cdef extern from "thread_registry.h":
    int sp_registry_ready_types() except -1
