/* Code objects between capture and resolution. The signal handler records
 * code pointers; one may be freed (and its address reused) before the record
 * is resolved. sigprof is told of every code object's destruction (a code
 * watcher on 3.12+, a wrapped PyCode_Type.tp_dealloc before) and, before the
 * object goes, resolves every pending record while the object is still valid,
 * then forgets the address. */
#ifndef SIGPROF_CODE_LIFETIME_H
#define SIGPROF_CODE_LIFETIME_H

typedef void (*sp_code_destroyed_callback)(void *code);

/* Under the GIL; idempotent. Returns 0, or -1 with a Python exception. */
int sp_code_lifetime_install(sp_code_destroyed_callback callback);

#endif
