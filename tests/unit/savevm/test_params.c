/* The migration parameter table (savevm/params.h): its rows are sane, the
 * one check names the first wrong member in QEMU's order, defaults and
 * copies go by the table, and docs/qmp.md's parameter table is the one this
 * table prints (run with --markdown to print it). */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "savevm/params.h"

static const char *docs_path;

static void print_value(FILE *f, const struct migration_param *d, uint64_t v)
{
	if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM)
		fprintf(f, "`%s`", migration_param_enum_name(d, v));
	else if (d->type == MIGRATION_PARAM_BOOL)
		fprintf(f, "%s", v ? "on" : "off");
	else
		fprintf(f, "%" PRIu64, v);
}

/* docs/qmp.md's table, from the rows */
static void markdown(FILE *f)
{
	fprintf(f, "| name | kind | unit | range | default | what it does |\n|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];

		fprintf(f, "| `%s` | %s | %s | ", d->name, d->capability ? "capability" : "parameter",
			d->unit[0] ? d->unit : "-");
		if (d->type == MIGRATION_PARAM_STRING) {
			fprintf(f, "a string of at most %" PRIu64 " bytes | `\"\"` | %s |\n", d->max, d->doc);
			continue;
		} else if (d->type == MIGRATION_PARAM_BOOL) {
			fprintf(f, "on, off");
		} else if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM) {
			for (uint64_t v = d->min; v <= d->max; v++)
				fprintf(f, "%s`%s`", v > d->min ? ", " : "", migration_param_enum_name(d, v));
		} else if (d->max == UINT64_MAX) {
			fprintf(f, "at least ");
			print_value(f, d, d->min);
		} else {
			print_value(f, d, d->min);
			fprintf(f, "..");
			print_value(f, d, d->max);
		}
		fprintf(f, " | ");
		print_value(f, d, d->dflt);
		fprintf(f, " | %s |\n", d->doc);
	}
}

static void test_rows(void **state)
{
	unsigned int seen = 0;

	(void)state;
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];

		assert_true(d->mask && !(d->mask & (d->mask - 1)));	/* one bit */
		assert_false(seen & d->mask);				/* its own */
		seen |= d->mask;
		assert_true(d->min <= d->dflt && d->dflt <= d->max);
		assert_ptr_equal(migration_param_find(d->name, d->capability), d);
		assert_null(migration_param_find(d->name, !d->capability));
		assert_true(d->doc[0] && d->error_name[0]);
	}
	assert_null(migration_param_find("xbzrle-cache-size", false));
	assert_null(migration_param_find(NULL, false));
}

static void test_defaults_and_copy(void **state)
{
	struct migration_params p, q;

	(void)state;
	migration_params_default(&p);
	assert_int_equal(p.downtime_limit_ms, 300);	/* QEMU's */
	assert_int_equal(p.multifd_channels, 2);	/* QEMU's */
	assert_int_equal(p.io_timeout_ms, 30000);
	assert_int_equal(p.send_mode, SAVEVM_SEND_AUTO);
	assert_false(p.multifd);
	memset(&q, 0xff, sizeof(q));
	q.send_mode = SAVEVM_SEND_ZC;
	q.multifd = true;
	migration_params_copy(&p, &q, MIGRATION_PARAM_SEND_MODE | MIGRATION_PARAM_MULTIFD);
	assert_int_equal(p.send_mode, SAVEVM_SEND_ZC);
	assert_true(p.multifd);
	assert_int_equal(p.downtime_limit_ms, 300);	/* not in the mask */
	/* strings: default "", copied by the mask, bounded */
	const struct migration_param *creds = migration_param_find("tls-creds", false);
	char err[256];

	assert_string_equal(p.tls_creds, "");
	assert_string_equal(migration_param_get_str(&p, creds), "");
	memset(&q, 0, sizeof(q));
	assert_int_equal(migration_param_put_str(&q, creds, "tls0", err, sizeof(err)), 0);
	migration_params_copy(&p, &q, MIGRATION_PARAM_TLS_HOSTNAME);
	assert_string_equal(p.tls_creds, "");
	migration_params_copy(&p, &q, MIGRATION_PARAM_TLS_CREDS);
	assert_string_equal(p.tls_creds, "tls0");
	char longid[MIGRATION_OBJECT_ID_MAX + 2];

	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = 0;
	assert_int_equal(migration_param_put_str(&q, creds, longid, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Parameter 'tls-creds' expects a string of at most 63 bytes");
	assert_string_equal(q.tls_creds, "tls0");	/* unchanged */
	longid[MIGRATION_OBJECT_ID_MAX] = 0;
	assert_int_equal(migration_param_put_str(&q, creds, longid, err, sizeof(err)), 0);
	assert_int_equal(migration_param_put_str(&q, migration_param_find("downtime-limit", false), "1", err,
						 sizeof(err)), -EINVAL);
}

/* one check, one text, the first wrong member in QEMU's order */
static void test_check(void **state)
{
	struct migration_params p;
	char err[256];

	(void)state;
	migration_params_default(&p);
	assert_int_equal(migration_params_check(&p, ~0u, err, sizeof(err)), 0);
	p.vcpu_dirty_limit = 0;
	p.vcpu_dirty_limit_period_ms = 0;
	p.downtime_limit_ms = 2000001;
	assert_int_equal(migration_params_check(&p, MIGRATION_PARAM_VCPU_DIRTY_LIMIT |
						       MIGRATION_PARAM_VCPU_DIRTY_LIMIT_PERIOD,
						err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000");
	assert_int_equal(migration_params_check(&p, ~0u, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms");
	/* a wrong member outside the mask is not looked at */
	assert_int_equal(migration_params_check(&p, MIGRATION_PARAM_MAX_BANDWIDTH, err, sizeof(err)), 0);
	p.send_mode = (enum savevm_send_mode)7;
	assert_int_equal(migration_params_check(&p, MIGRATION_PARAM_SEND_MODE, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Parameter 'x-kmig-send-mode' expects auto, copy or zero-copy");
	uint64_t v;

	assert_true(migration_param_parse_enum(migration_param_find("x-kmig-send-mode", false), "zero-copy", &v));
	assert_int_equal(v, SAVEVM_SEND_ZC);
	assert_false(migration_param_parse_enum(migration_param_find("x-kmig-send-mode", false), "fast", &v));
}

/* docs/qmp.md holds the table between its markers, exactly */
static void test_docs_table(void **state)
{
	static const char begin[] = "<!-- migration parameters: begin (tests/unit/savevm/test_params.c) -->\n";
	static const char end[] = "<!-- migration parameters: end -->\n";
	char *want = NULL, *doc = NULL;
	size_t want_len = 0, doc_len = 0;
	FILE *f = open_memstream(&want, &want_len);

	(void)state;
	markdown(f);
	fclose(f);
	f = fopen(docs_path, "r");
	if (!f)
		fail_msg("cannot read %s", docs_path);
	FILE *m = open_memstream(&doc, &doc_len);
	char buf[4096];
	size_t n;

	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, m);
	fclose(f);
	fclose(m);
	const char *a = strstr(doc, begin), *b = a ? strstr(a, end) : NULL;

	if (!a || !b)
		fail_msg("%s has no parameter table between its markers", docs_path);
	a += strlen(begin);
	if ((size_t)(b - a) != want_len || memcmp(a, want, want_len))
		fail_msg("%s's parameter table is not the table's; put this between the markers "
			 "(test-params --markdown prints it):\n%s", docs_path, want);
	free(want);
	free(doc);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows),
		cmocka_unit_test(test_defaults_and_copy),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_docs_table),
	};

	if (argc > 1 && !strcmp(argv[1], "--markdown")) {
		markdown(stdout);
		return 0;
	}
	docs_path = argc > 1 ? argv[1] : "docs/qmp.md";
	return cmocka_run_group_tests(tests, NULL, NULL);
}
