#pragma once
#include <stdint.h>

/// Heap allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) made
/// by this process since it started. Only meaningful in an executable that links this
/// target: it counts by defining those functions in front of glibc's.
uint64_t jank_alloc_count(void);
