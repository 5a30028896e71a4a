#include "python_internal.h"

#include "code_lifetime.h"

static sp_code_destroyed_callback destroyed_callback;

#if PY_VERSION_HEX >= 0x030C0000

static int code_watcher_id = -1;

static int on_code_event(PyCodeEvent event, PyCodeObject *code)
{
    if (event == PY_CODE_EVENT_DESTROY && destroyed_callback != NULL) {
        destroyed_callback(code);
    }
    return 0;
}

int sp_code_lifetime_install(sp_code_destroyed_callback callback)
{
    destroyed_callback = callback;
    if (code_watcher_id >= 0) {
        return 0;
    }
    code_watcher_id = PyCode_AddWatcher(on_code_event);
    return code_watcher_id < 0 ? -1 : 0;
}

#else

/* 3.9 to 3.11 have no code watchers: wrap the type's deallocator, as vmprof
 * does. The wrapper stays for the life of the process (another tool may have
 * wrapped ours in turn), and costs one branch when sampling is off. */
static destructor original_code_dealloc;

static void code_dealloc_hook(PyObject *code)
{
    if (destroyed_callback != NULL) {
        destroyed_callback(code);
    }
    original_code_dealloc(code);
}

int sp_code_lifetime_install(sp_code_destroyed_callback callback)
{
    destroyed_callback = callback;
    if (original_code_dealloc == NULL) {
        original_code_dealloc = PyCode_Type.tp_dealloc;
        PyCode_Type.tp_dealloc = code_dealloc_hook;
    }
    return 0;
}

#endif
