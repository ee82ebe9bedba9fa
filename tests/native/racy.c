/* racy.c — deliberately broken on purpose, to prove that tools/sanitize.py really fails
 * when a sanitizer reports something (tests/test_sanitizers.py).
 *
 *   racy race      two threads increment a plain int with no lock  (ThreadSanitizer)
 *   racy leak      a heap block whose last pointer is dropped       (LeakSanitizer)
 *   racy overflow  a read one past the end of a heap block          (AddressSanitizer)
 *   racy ub        signed integer overflow                          (UBSan)
 *   racy clean     none of the above: must pass under every sanitizer
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int counter; /* shared, unprotected */

static void *bump(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) counter++;
    return NULL;
}

static int race(void) {
    pthread_t a, b;
    if (pthread_create(&a, NULL, bump, NULL) || pthread_create(&b, NULL, bump, NULL)) return 1;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}

static void *volatile g_sink;

__attribute__((noinline)) static void lose_block(void) {
    g_sink = malloc(4242);
    memset(g_sink, 1, 4242);
    g_sink = NULL; /* the only pointer is gone */
}

__attribute__((noinline)) static int read_past_end(int n) {
    int *p = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) p[i] = i;
    volatile int v = p[n]; /* one past the end */
    free(p);
    return v;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "race";
    int rc = 0;
    if (strcmp(mode, "race") == 0) {
        rc = race();
    } else if (strcmp(mode, "leak") == 0) {
        lose_block();
    } else if (strcmp(mode, "overflow") == 0) {
        rc = read_past_end(10) == 12345;
    } else if (strcmp(mode, "ub") == 0) {
        volatile int big = INT_MAX, one = 1;
        int sum = big + one;
        rc = sum == 0;
    } else if (strcmp(mode, "clean") == 0) {
        /* the threads are joined one at a time: no two bump the counter concurrently */
        pthread_t a;
        for (int i = 0; i < 2; i++) {
            if (pthread_create(&a, NULL, bump, NULL)) return 1;
            pthread_join(a, NULL);
        }
        free(malloc(16));
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("racy %s done (counter %d)\n", mode, counter);
    return rc;
}
