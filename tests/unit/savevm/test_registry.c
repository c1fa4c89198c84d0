/* The savevm registry: order, lookup, and what it refuses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "savevm/savevm.h"

static const struct savevm_ops ops;

static void test_order_and_find(void **state)
{
	struct savevm_registry *r = savevm_registry_new();

	(void)state;
	assert_int_equal(savevm_register(r, "ram", 0, 1, true, &ops, NULL), 0);
	assert_int_equal(savevm_register(r, "apic", 0, 1, false, &ops, NULL), 0);
	assert_int_equal(savevm_register(r, "cpu", 0, 1, false, &ops, NULL), 0);
	assert_int_equal(savevm_register(r, "apic", 1, 1, false, &ops, NULL), 0);
	assert_int_equal(savevm_registry_count(r), 4);
	assert_string_equal(savevm_registry_at(r, 1)->name, "apic");
	assert_int_equal(savevm_registry_at(r, 3)->instance_id, 1);
	assert_true(savevm_registry_find(r, "cpu", 0) == savevm_registry_at(r, 2));
	assert_null(savevm_registry_find(r, "cpu", 1));
	assert_null(savevm_registry_find(r, "cp", 0));
	assert_null(savevm_registry_at(r, 4));
	assert_true(savevm_registry_at(r, 0)->iterable);
	assert_false(savevm_registry_at(r, 1)->iterable);
	savevm_registry_free(r);
}

static void test_refusals(void **state)
{
	struct savevm_registry *r = savevm_registry_new();
	char longname[80];

	(void)state;
	assert_int_equal(savevm_register(r, "pit", 0, 1, false, &ops, NULL), 0);
	assert_int_equal(savevm_register(r, "pit", 0, 1, false, &ops, NULL), -EEXIST);
	assert_int_equal(savevm_register(r, "", 0, 1, false, &ops, NULL), -EINVAL);
	assert_int_equal(savevm_register(r, "Pit", 0, 1, false, &ops, NULL), -EINVAL);
	assert_int_equal(savevm_register(r, "p it", 0, 1, false, &ops, NULL), -EINVAL);
	assert_int_equal(savevm_register(r, "pit", 1, 1, false, NULL, NULL), -EINVAL);
	memset(longname, 'a', sizeof(longname));
	longname[STREAM_MAX_NAME + 1] = 0;
	assert_int_equal(savevm_register(r, longname, 0, 1, false, &ops, NULL), -EINVAL);
	longname[STREAM_MAX_NAME] = 0;
	assert_int_equal(savevm_register(r, longname, 0, 1, false, &ops, NULL), 0);
	assert_int_equal(savevm_register(r, "0000:00:01.0-virtio_net", 0, 1, false, &ops, NULL), -EINVAL);
	assert_int_equal(savevm_register(r, "virtio-net.0_x", 0, 1, false, &ops, NULL), 0);
	savevm_registry_free(r);
}

/* section ids are index + 1 and must stay below STREAM_MAX_SECTIONS */
static void test_capacity(void **state)
{
	struct savevm_registry *r = savevm_registry_new();
	char name[16];
	uint32_t i;

	(void)state;
	for (i = 0; i < STREAM_MAX_SECTIONS; i++) {
		snprintf(name, sizeof(name), "dev%u", i);
		if (savevm_register(r, name, 0, 1, false, &ops, NULL))
			break;
	}
	assert_int_equal(i, STREAM_MAX_SECTIONS - 1);
	assert_int_equal(savevm_registry_count(r), STREAM_MAX_SECTIONS - 1);
	savevm_registry_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_find),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
