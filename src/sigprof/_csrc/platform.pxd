cdef extern from "platform.h" nogil:
    void sp_signal_ignore_for_exec()
    void sp_signal_restore_after_exec_failure()
    int sp_signal_handler_ours()
    int sp_interrupt_thread_after(int tid, long long delay_ns)
