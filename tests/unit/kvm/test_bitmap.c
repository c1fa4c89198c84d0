/* The dirty bitmap: ranges across word boundaries, find_next, the exact
 * count, and concurrent setters/clearers (harvester vs sender). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kvm/bitmap.h"

static void test_set_clear_count(void **state)
{
	struct dirty_bitmap b;

	(void)state;
	assert_int_equal(dirty_bitmap_init(&b, 1000), 0);
	assert_true(dirty_bitmap_set(&b, 0));
	assert_false(dirty_bitmap_set(&b, 0));
	assert_true(dirty_bitmap_set(&b, 63));
	assert_true(dirty_bitmap_set(&b, 64));
	assert_true(dirty_bitmap_set(&b, 999));
	assert_int_equal(dirty_bitmap_count(&b), 4);
	assert_true(dirty_bitmap_test_and_clear(&b, 63));
	assert_false(dirty_bitmap_test_and_clear(&b, 63));
	assert_false(dirty_bitmap_test_and_clear(&b, 500));
	assert_int_equal(dirty_bitmap_count(&b), 3);
	dirty_bitmap_clear_all(&b);
	assert_int_equal(dirty_bitmap_count(&b), 0);
	assert_int_equal(dirty_bitmap_find_next(&b, 0), 1000);
	dirty_bitmap_fini(&b);
}

static void test_ranges(void **state)
{
	struct dirty_bitmap b;

	(void)state;
	assert_int_equal(dirty_bitmap_init(&b, 300), 0);
	/* every [first, end) against a reference */
	for (uint64_t first = 0; first < 300; first += 7) {
		for (uint64_t end = first; end <= 310; end += 13) {
			dirty_bitmap_clear_all(&b);
			dirty_bitmap_set(&b, 5);	/* overlap must not double count */
			dirty_bitmap_set_range(&b, first, end);
			uint64_t e = end > 300 ? 300 : end;
			uint64_t want = e - first + (5 < first || 5 >= e ? 1 : 0);

			assert_int_equal(dirty_bitmap_count(&b), want);
			uint64_t n = 0;
			for (uint64_t i = dirty_bitmap_find_next(&b, 0); i < 300; i = dirty_bitmap_find_next(&b, i + 1)) {
				assert_true(i == 5 || (i >= first && i < e));
				n++;
			}
			assert_int_equal(n, want);
		}
	}
	dirty_bitmap_fini(&b);
}

static void test_find_next_edges(void **state)
{
	struct dirty_bitmap b;

	(void)state;
	assert_int_equal(dirty_bitmap_init(&b, 130), 0);
	dirty_bitmap_set(&b, 129);
	assert_int_equal(dirty_bitmap_find_next(&b, 0), 129);
	assert_int_equal(dirty_bitmap_find_next(&b, 129), 129);
	assert_int_equal(dirty_bitmap_find_next(&b, 130), 130);
	assert_int_equal(dirty_bitmap_find_next(&b, 1000), 130);
	dirty_bitmap_fini(&b);
}

#define NB (1u << 16)
static struct dirty_bitmap shared;

static void *setter(void *arg)
{
	(void)arg;
	for (int round = 0; round < 20; round++)
		for (uint64_t i = 0; i < NB; i++)
			dirty_bitmap_set(&shared, (i * 7919) % NB);
	return NULL;
}

static void *clearer(void *arg)
{
	uint64_t *cleared = arg;

	for (int round = 0; round < 20; round++)
		for (uint64_t i = dirty_bitmap_find_next(&shared, 0); i < NB; i = dirty_bitmap_find_next(&shared, i + 1))
			*cleared += dirty_bitmap_test_and_clear(&shared, i);
	return NULL;
}

static void test_concurrent_count_exact(void **state)
{
	pthread_t a, b;
	uint64_t cleared = 0;

	(void)state;
	assert_int_equal(dirty_bitmap_init(&shared, NB), 0);
	pthread_create(&a, NULL, setter, NULL);
	pthread_create(&b, NULL, clearer, &cleared);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	uint64_t left = 0;
	for (uint64_t i = 0; i < NB; i++)
		left += dirty_bitmap_test_and_clear(&shared, i);
	assert_int_equal(dirty_bitmap_count(&shared), 0);
	assert_true(left + cleared >= NB);	/* every bit was set at least once */
	dirty_bitmap_fini(&shared);
}

/* A page rewritten many times counts once, for the vCPU that brought it
 * first; pages no ring brought count in the total only. */
static void test_observer_distinct(void **state)
{
	struct dirty_observer o;

	(void)state;
	assert_int_equal(dirty_observer_init(&o, 1000, 2), 0);
	for (int round = 0; round < 1000; round++)	/* one hot page */
		dirty_observer_note(&o, 7, 0);
	for (uint64_t pg = 100; pg < 164; pg++) {	/* 64 pages, both vCPUs */
		dirty_observer_note(&o, pg, 1);
		dirty_observer_note(&o, pg, 0);
	}
	dirty_observer_note(&o, 7, 1);			/* vCPU 0 had it first */
	dirty_observer_note(&o, 500, UINT32_MAX);	/* the bitmap backend */
	dirty_observer_note(&o, 500, 0);
	dirty_observer_note(&o, 1000, 0);		/* past the end: ignored */
	assert_int_equal(o.per_vcpu[0], 1);
	assert_int_equal(o.per_vcpu[1], 64);
	assert_int_equal(o.other, 1);
	assert_int_equal(dirty_observer_total(&o), 66);
	dirty_observer_fini(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_clear_count),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_find_next_edges),
		cmocka_unit_test(test_concurrent_count_exact),
		cmocka_unit_test(test_observer_distinct),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
