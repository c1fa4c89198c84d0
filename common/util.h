/* common/util.h — the few helpers every module needs, written once: an
 * error message into a caller's buffer, and the clocks.  Header-only, so
 * that each module's library stays self-contained. */
#ifndef KMIG_COMMON_UTIL_H
#define KMIG_COMMON_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Write a message into err; nothing when err is NULL or errlen 0 (a caller
 * that does not want the text). */
static inline void kmig_vset_err(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
}

static inline void __attribute__((format(printf, 3, 4)))
kmig_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kmig_vset_err(err, errlen, fmt, ap);
	va_end(ap);
}

static inline uint64_t kmig_clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC: for durations and deadlines, never the wall clock. */
static inline uint64_t kmig_now_ns(void)
{
	return kmig_clock_ns(CLOCK_MONOTONIC);
}

static inline int64_t kmig_now_ms(void)
{
	return (int64_t)(kmig_now_ns() / 1000000u);
}

#endif
