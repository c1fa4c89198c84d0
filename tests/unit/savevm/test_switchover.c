/* The switchover decision: QEMU's fit rule, and one more pass while the
 * passes still shrink the rest by more than half. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "savevm/switchover.h"

#define MB 1000000ull
#define BW (1000 * MB)	/* 1 GB/s: 1 MB a millisecond */

static void test_does_not_fit(void **state)
{
	(void)state;
	/* 301 MB at 1 GB/s is 301 ms > 300 ms, however fast it shrinks */
	assert_int_equal(switchover_decide(301 * MB, 10000 * MB, BW, 300, 0), SWITCHOVER_NOT_YET);
	/* no bandwidth measured yet: nothing but an empty rest fits */
	assert_int_equal(switchover_decide(1, 2, 0, 300, 0), SWITCHOVER_NOT_YET);
	assert_int_equal(switchover_decide(0, 2, 0, 300, 0), SWITCHOVER_NOW);
}

static void test_shrinking_fast_goes_on(void **state)
{
	(void)state;
	/* fits (100 ms) and the pass left a tenth of the one before */
	assert_int_equal(switchover_decide(100 * MB, 1000 * MB, BW, 300, 0), SWITCHOVER_ONE_MORE);
	/* exactly at the limit still fits */
	assert_int_equal(switchover_decide(300 * MB, 601 * MB, BW, 300, 3), SWITCHOVER_ONE_MORE);
}

static void test_switches_when_shrinking_stops(void **state)
{
	(void)state;
	/* half or more of what was left before: the guest keeps up */
	assert_int_equal(switchover_decide(100 * MB, 200 * MB, BW, 300, 0), SWITCHOVER_NOW);
	assert_int_equal(switchover_decide(100 * MB, 150 * MB, BW, 300, 2), SWITCHOVER_NOW);
	/* grew */
	assert_int_equal(switchover_decide(100 * MB, 50 * MB, BW, 300, 0), SWITCHOVER_NOW);
}

static void test_small_rest_and_cap(void **state)
{
	(void)state;
	/* 1 ms of the link or less: not worth a pass */
	assert_int_equal(switchover_decide(1 * MB, 1000 * MB, BW, 300, 0), SWITCHOVER_NOW);
	assert_int_equal(switchover_decide(1 * MB + 1, 1000 * MB, BW, 300, 0), SWITCHOVER_ONE_MORE);
	assert_int_equal(switchover_decide(0, 1000 * MB, BW, 300, 0), SWITCHOVER_NOW);
	/* the cap */
	assert_int_equal(switchover_decide(100 * MB, 1000 * MB, BW, 300, SWITCHOVER_SHRINK_PASSES_MAX - 1),
			 SWITCHOVER_ONE_MORE);
	assert_int_equal(switchover_decide(100 * MB, 1000 * MB, BW, 300, SWITCHOVER_SHRINK_PASSES_MAX),
			 SWITCHOVER_NOW);
}

static void test_no_overflow(void **state)
{
	(void)state;
	/* bandwidth × limit beyond 64 bits, pending × 1000 too */
	assert_int_equal(switchover_decide(UINT64_MAX / 2, UINT64_MAX, UINT64_MAX, 1000000, 0),
			 SWITCHOVER_ONE_MORE);
	assert_int_equal(switchover_decide(UINT64_MAX / 4, UINT64_MAX / 2, UINT64_MAX / 1000, 0, 0),
			 SWITCHOVER_NOT_YET);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_does_not_fit),
		cmocka_unit_test(test_shrinking_fast_goes_on),
		cmocka_unit_test(test_switches_when_shrinking_stops),
		cmocka_unit_test(test_small_rest_and_cap),
		cmocka_unit_test(test_no_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
