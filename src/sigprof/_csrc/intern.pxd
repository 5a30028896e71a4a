from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef extern from "intern.h":
    ctypedef enum sp_frame_kind:
        SP_FRAME_CODE
        SP_FRAME_UNKNOWN
        SP_FRAME_TRUNCATED

    ctypedef struct sp_frame_entry:
        void *name
        void *filename
        int32_t lineno
        int32_t first_lineno
        uint32_t kind

    ctypedef struct sp_sample_entry:
        int64_t timestamp_ns
        uint64_t thread_ident
        int32_t stack_id

    ctypedef struct sp_resolver:
        uint64_t frame_count
        uint64_t stack_count
        uint64_t sample_count
        uint64_t emitted_samples
        uint64_t unresolved_frames
        uint64_t truncated_samples

    sp_sample_entry *sp_resolver_take_samples(sp_resolver *resolver, uint64_t *count)
    int sp_resolver_reset_interning(sp_resolver *resolver)
    const sp_frame_entry *sp_resolver_frame(const sp_resolver *resolver, uint64_t frame_id)
    uint32_t sp_resolver_stack_length(const sp_resolver *resolver, uint64_t stack_id)
    int32_t sp_resolver_stack_frame(const sp_resolver *resolver, uint64_t stack_id, uint32_t index)
    int sp_resolver_signal_bucket(const sp_resolver *resolver, uint64_t bucket, uint64_t *ident,
                                  uint64_t *count)
