/* Copying a thread's Python stack, per CPython version. Reads memory only:
 * safe in a signal handler on the thread itself, or from another thread for
 * a thread that does not run meanwhile (the caller checks its CPU time). */
#ifndef SIGPROF_FRAME_WALK_H
#define SIGPROF_FRAME_WALK_H

#include "ring_buffer.h"

struct _ts;

/* Fills record->frames (leaf first, at most max_depth) and record->depth;
 * sets SP_RECORD_TRUNCATED when frames beyond max_depth exist: the leaf side
 * is what is kept. */
void sp_walk_stack(struct _ts *tstate, sp_record *record, uint32_t max_depth);

/* Where the thread's leaf frame is and which instruction it is at: a few
 * words read from another thread's state, no signal. A blocked thread keeps
 * its fingerprint; a thread that ran Python code almost always changes it.
 * Reads memory that may be freed under it: call under the fault guard. */
uint64_t sp_stack_fingerprint(struct _ts *tstate);

#endif
