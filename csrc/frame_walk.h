/* Copying a thread's Python stack, per CPython version. Reads memory only:
 * safe in a signal handler on the thread itself, or from another thread for
 * a thread that does not run meanwhile (the caller checks its CPU time). */
#ifndef SIGPROF_FRAME_WALK_H
#define SIGPROF_FRAME_WALK_H

#include "ring_buffer.h"

struct _ts;

/* The walkers read memory the program changes without telling them: a link
 * still stale in the middle of a frame push (in the signal handler), or a
 * frame its thread freed after it woke up (the ticker reading a thread it
 * believed blocked). Such reads are expected: every value read is checked
 * before it is kept (types, alignment, offsets, the thread's CPU time or
 * fingerprint), and the fault guard catches unmapped pages. AddressSanitizer
 * cannot tell them from bugs, so it does not instrument the walkers
 * (UndefinedBehaviorSanitizer still does); tests/valgrind suppresses the
 * same reads by function name. */
#define SP_READS_CHANGING_MEMORY __attribute__((no_sanitize_address))

/* Fills record->frames (leaf first, at most max_depth) and record->depth;
 * sets SP_RECORD_TRUNCATED when frames beyond max_depth exist: the leaf side
 * is what is kept. */
SP_READS_CHANGING_MEMORY
void sp_walk_stack(struct _ts *tstate, sp_record *record, uint32_t max_depth);

/* Where the thread's leaf frame is and which instruction it is at: a few
 * words read from another thread's state, no signal. A blocked thread keeps
 * its fingerprint; a thread that ran Python code almost always changes it.
 * Reads memory that may be freed under it: call under the fault guard. */
SP_READS_CHANGING_MEMORY
uint64_t sp_stack_fingerprint(struct _ts *tstate);

#endif
