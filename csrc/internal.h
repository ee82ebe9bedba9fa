/* internal.h — helpers shared by the library's C files (not exported). */
#ifndef ODIN_INTERNAL_H
#define ODIN_INTERNAL_H
#include "odin.h"
#include "kernels/kernels.h"

#define ODIN_VERSION "0.1.0"

/* Record a message for odin_last_error() (thread-local) and return code. */
odin_status odin_fail(odin_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define ODIN_REQUIRE_PTR(p, name)                                                  \
    do { if (!(p)) return odin_fail(ODIN_BAD_ARG, "%s must not be NULL", name); } while (0)
#define ODIN_REQUIRE_POS(v, name)                                                  \
    do { if ((v) <= 0) return odin_fail(ODIN_BAD_SHAPE, "%s must be > 0 (got %lld)", name, (long long)(v)); } while (0)

#endif
