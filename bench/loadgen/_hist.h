/*
 * A log-linear latency histogram in microseconds, HDR style.
 *
 * Values below 256 us have a bucket each (exact). Above, every power of two is split
 * into 128 equal buckets, so a bucket is at most 1/128 of its lower bound wide; reporting
 * its midpoint is within 0.4% of any value in it. Values are clamped to 1 us .. 60 s
 * (2^26 us > 60 s, so 18 octaves of 128 buckets above 256): 2,560 counters.
 */
#ifndef SOCKBENCH_HIST_H
#define SOCKBENCH_HIST_H

#include <stdint.h>

#define HIST_LINEAR 256
#define HIST_SUB 128
#define HIST_SUB_BITS 7
#define HIST_OCTAVES 18
#define HIST_BUCKETS (HIST_LINEAR + HIST_OCTAVES * HIST_SUB)
#define HIST_MIN_US 1ULL
#define HIST_MAX_US 60000000ULL

static inline uint64_t hist_clamp(uint64_t us) {
    return us < HIST_MIN_US ? HIST_MIN_US : (us > HIST_MAX_US ? HIST_MAX_US : us);
}

/* The bucket of a (clamped) value. */
static inline int hist_index(uint64_t us) {
    if (us < HIST_LINEAR) return (int)us;
    int top = 63 - __builtin_clzll(us); /* >= 8 */
    int shift = top - HIST_SUB_BITS;
    return HIST_LINEAR + (top - 8) * HIST_SUB + (int)((us >> shift) - HIST_SUB);
}

/* The value a bucket stands for: its midpoint (exact below 256 us). */
static inline uint64_t hist_value(int index) {
    if (index < HIST_LINEAR) return (uint64_t)index;
    int octave = (index - HIST_LINEAR) / HIST_SUB, sub = (index - HIST_LINEAR) % HIST_SUB + HIST_SUB;
    int shift = octave + 8 - HIST_SUB_BITS;
    uint64_t low = (uint64_t)sub << shift, width = 1ULL << shift;
    return low + (width - 1) / 2;
}

#endif
